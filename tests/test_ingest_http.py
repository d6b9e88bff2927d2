"""The HTTP event API: the real Segment client against a local service, into real journeys."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment.analytics import Client as SegmentClient
from sqlmodel import col, select
from support import Stack, eventually, running_stack
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings import naming
from tidings.db import contacts
from tidings.db.engine import Database
from tidings.models.tables import EventRecord, IngestMessage
from tidings.settings import Settings
from tidings.starter.cli import app as cli_app
from tidings.starter.dev import DevPorts, dev_settings
from tidings.starter.ingest_http import IngestApi, install_ingest
from tidings.starter.ingest_router import IngestRouter, running_router
from tidings.starter.ports import free_port
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.starter.write_keys import RateLimits, WriteKey, WriteKeys, parse_write_keys

KEY = "test-write-key-0123456789"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


def queue(database: Database) -> list[IngestMessage]:
    with database.session() as session:
        return list(session.exec(select(IngestMessage).order_by(col(IngestMessage.id))).all())


def events(database: Database, event_id: str) -> list[EventRecord]:
    with database.session() as session:
        return list(session.exec(select(EventRecord).where(EventRecord.event_id == event_id)))


async def all_routed(database: Database) -> list[IngestMessage]:
    rows = queue(database)
    assert rows and all(row.state != "pending" for row in rows), [
        (r.id, r.state, r.last_error) for r in rows
    ]
    return rows


@asynccontextmanager
async def ingest_service(stack: Stack) -> AsyncIterator[str]:
    """The service with the event API and its router, over the stack's database."""
    router = IngestRouter(stack.database, stack.client, poll_seconds=0.2)
    api = IngestApi(
        database=stack.database,
        keys=WriteKeys([WriteKey("test", KEY, 0)]),
        on_accepted=router.wake,
    )
    app = create_app(
        database=stack.database,
        secret_key="test-secret",
        company="Acme",
        sms_help_text="",
        ingest=api,
    )
    async with (
        running_router(router),
        running_service(app, host="127.0.0.1", port=free_port()) as url,
    ):
        yield url


@contextmanager
def segment(url: str) -> Iterator[tuple[SegmentClient, list[Exception]]]:
    """Segment's own Python library, batching and gzipping, pointed at `url`."""
    errors: list[Exception] = []
    client = SegmentClient(
        KEY,
        host=url,
        gzip=True,
        max_retries=2,
        on_error=lambda error, _batch: errors.append(error),
    )
    try:
        yield client, errors
    finally:
        client.shutdown()


async def test_the_segment_client_starts_a_journey(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    visitor = f"anon-{uuid.uuid4().hex[:8]}"
    async with ingest_service(stack) as url:
        with segment(url) as (client, errors):
            # Browsing before signing up, then the sign-up with the visitor's id.
            client.page(anonymous_id=visitor, name="Pricing", properties={"path": "/pricing"})
            client.identify(
                user,
                {"email": "grace@example.com", "jurisdiction": "US", "plan": "pro"},
                anonymous_id=visitor,
                context={"timezone": "America/Chicago", "locale": "en-US"},
            )
            client.track(user, "signed_up", {"plan": "pro"}, message_id="signup-1")
            client.alias(visitor, user)
            await asyncio.to_thread(client.flush)
        assert errors == []
        rows = await eventually(lambda: all_routed(stack.database))

    assert [(r.kind, r.state) for r in rows] == [
        ("track", "routed"),  # the page view, recorded as an event
        ("identify", "routed"),
        ("track", "routed"),
        ("alias", "routed"),
    ]
    key = await stack.client.contact_for(user_id=user, anonymous_id=None)
    assert await stack.client.contact_for(user_id=None, anonymous_id=visitor) == key
    with stack.database.session() as session:
        contact = contacts.get_contact(session=session, key=key)
    assert (contact.emails, contact.timezone, contact.locale, contact.anonymous_ids) == (
        ["grace@example.com"],
        "America/Chicago",
        "en-US",
        [visitor],
    )
    assert contact.traits["plan"] == "pro"
    assert [e.name for e in events(stack.database, "test:signup-1")] == ["signed_up"]

    result = await stack.result("onboarding", key)
    assert (result.outcome, result.sends) == ("completed", 3)
    assert len(stack.outbox("grace@example.com")) == 3


async def test_a_retried_message_is_applied_once(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with ingest_service(stack) as url:
        for _ in range(2):  # Segment's client retrying a batch whose answer it lost
            with segment(url) as (client, errors):
                client.identify(user, {"email": "ida@example.com", "jurisdiction": "US"})
                client.track(user, "signed_up", message_id="once-1")
                await asyncio.to_thread(client.flush)
            assert errors == []
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
            again = await http.post(
                "/v1/track", json={"userId": user, "event": "signed_up", "messageId": "once-1"}
            )
        assert again.status_code == 200, again.text
        await eventually(lambda: all_routed(stack.database))

    tracked = [r for r in queue(stack.database) if r.message_id == "once-1"]
    assert len(tracked) == 1
    assert len(events(stack.database, "test:once-1")) == 1
    key = await stack.client.contact_for(user_id=user, anonymous_id=None)
    history = await stack.handle("onboarding", key).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == [naming.EVENT_SIGNAL]  # the start's own signal, and no second


async def test_an_event_a_journey_refuses_is_dead_and_listed(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with ingest_service(stack) as url, httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        answer = await http.post(
            "/v1/batch",
            json={
                "batch": [
                    # onboarding declares `plan: string?`: this can never route
                    {
                        "type": "track",
                        "userId": user,
                        "event": "signed_up",
                        "properties": {"plan": 3},
                    },
                    {"type": "track", "userId": user, "event": "cart_emptied"},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        rows = await eventually(lambda: all_routed(stack.database))

    assert [r.state for r in rows] == ["dead", "routed"]  # the dead one blocks nothing
    assert rows[0].last_error is not None and "'plan' must be a string" in rows[0].last_error
    listed = CliRunner().invoke(
        cli_app, ["ingest", "list", "--state", "dead", "--data-dir", str(stack.settings.data_dir)]
    )
    assert listed.exit_code == 0, listed.output
    assert "0 pending, 1 routed, 1 dead" in listed.output
    assert "signed_up" in listed.output and "'plan' must be a string" in listed.output
    retried = CliRunner().invoke(
        cli_app, ["ingest", "retry", str(rows[1].id), "--data-dir", str(stack.settings.data_dir)]
    )
    assert retried.exit_code == 1
    assert f"message {rows[1].id}: not dead" in retried.output


# The bad-request matrix: each refused whole, the message naming the field.

GOOD = {"type": "track", "userId": "u-1", "event": "signed_up"}
BIG = "x" * (33 * 1024)


def batch(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"batch": list(messages), **extra}


CASES: list[tuple[str, str, Any, int, str]] = [
    ("malformed JSON", "/v1/batch", b'{"batch": [', 400, "malformed JSON at line 1"),
    ("not an object", "/v1/batch", [GOOD], 400, "must be a JSON object"),
    (
        "NaN",
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"n": NaN}}]}',
        400,
        "NaN is not a JSON number",
    ),
    ("empty batch", "/v1/batch", batch(), 400, "batch: List should have at least 1 item"),
    ("unknown batch field", "/v1/batch", batch(GOOD, events=[]), 400, "events: unknown field"),
    (
        "unknown message field",
        "/v1/batch",
        batch(GOOD, {**GOOD, "userID": "u"}),
        400,
        "batch[1].userID: unknown field; a track takes",
    ),
    (
        "unknown type",
        "/v1/batch",
        batch(GOOD, {**GOOD, "type": "trak"}),
        400,
        "batch[1]: type 'trak' is not one of identify, track",
    ),
    (
        "missing type",
        "/v1/batch",
        batch({"userId": "u", "event": "e"}),
        400,
        "batch[0]: type is required",
    ),
    (
        "wrong type of properties",
        "/v1/batch",
        batch(GOOD, GOOD, {**GOOD, "properties": [1]}),
        400,
        "batch[2].properties: Input should be a valid dictionary",
    ),
    (
        "userId an email",
        "/v1/batch",
        batch(GOOD, {**GOOD, "userId": "ada@example.com"}),
        400,
        "batch[1].userId: 'ada@example.com' looks like an email",
    ),
    (
        "userId a number",
        "/v1/batch",
        batch({**GOOD, "userId": 42}),
        400,
        "batch[0].userId: Input should be a valid string",
    ),
    (
        "nobody",
        "/v1/batch",
        batch({"type": "track", "event": "e"}),
        400,
        "batch[0]: userId or anonymousId is required",
    ),
    (
        "missing event",
        "/v1/batch",
        batch({"type": "track", "userId": "u"}),
        400,
        "batch[0].event: required",
    ),
    (
        "event name",
        "/v1/batch",
        batch({**GOOD, "event": "Order Completed"}),
        400,
        "batch[0].event: 'Order Completed' is not a valid event name",
    ),
    (
        "timestamp without zone",
        "/v1/batch",
        batch({**GOOD, "timestamp": "2026-01-01T09:00:00"}),
        400,
        "batch[0].timestamp: needs a time zone",
    ),
    (
        "bad email",
        "/v1/batch",
        batch({"type": "identify", "userId": "u", "traits": {"email": "not-an-email"}}),
        400,
        "batch[0].traits.email:",
    ),
    (
        "bad time zone",
        "/v1/batch",
        batch({"type": "identify", "userId": "u", "context": {"timezone": "Mars/Olympus"}}),
        400,
        "batch[0].context.timezone: 'Mars/Olympus' is not an IANA time zone",
    ),
    ("alias without previousId", "/v1/alias", {"userId": "u"}, 400, "previousId: required"),
    (
        "type for another endpoint",
        "/v1/track",
        {**GOOD, "type": "identify"},
        400,
        "type: 'identify' sent to /v1/track",
    ),
    (
        "message over 32 KB",
        "/v1/batch",
        batch(GOOD, {**GOOD, "properties": {"blob": BIG}}),
        413,
        "batch[1] is",
    ),
    (
        "single call over 32 KB",
        "/v1/track",
        {**GOOD, "properties": {"blob": BIG}},
        413,
        "over 32 KB, the limit per message",
    ),
    (
        "batch over 500 KB",
        "/v1/batch",
        batch(*[{**GOOD, "properties": {"blob": "x" * 30_000}}] * 20),
        413,
        "over 500 KB, the limit per request",
    ),
]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Database, IngestApi]]:
    """The event API alone (no router): what it accepts stays in the queue to be seen."""
    database = Database(f"sqlite:///{tmp_path / 'app.db'}")
    ingest = IngestApi(database=database, keys=WriteKeys([WriteKey("test", KEY, 0)]))
    app = create_app(database=database, secret_key="s", company="Acme", sms_help_text="")
    install_ingest(app, ingest)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as http:
        yield http, database, ingest
    database.dispose()


@pytest.mark.parametrize(
    ("path", "body", "status", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_a_bad_request_is_refused_whole_naming_the_field(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
    path: str,
    body: Any,
    status: int,
    names: str,
) -> None:
    http, database, _ = api
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = await http.post(path, content=content, headers=AUTH)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["success"] is False
    assert names in error["message"], error["message"]
    assert queue(database) == []


async def test_gzip_is_read_and_broken_gzip_refused(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
) -> None:
    http, database, _ = api
    headers = {**AUTH, "Content-Encoding": "gzip"}
    broken = await http.post("/v1/batch", content=b"not gzip at all", headers=headers)
    assert broken.status_code == 400
    assert "not valid gzip" in broken.json()["message"]
    bomb = gzip.compress(json.dumps(batch({**GOOD, "properties": {"z": "0" * 600_000}})).encode())
    assert len(bomb) < 10_000
    too_big = await http.post("/v1/batch", content=bomb, headers=headers)
    assert too_big.status_code == 413
    fine = await http.post(
        "/v1/batch", content=gzip.compress(json.dumps(batch(GOOD)).encode()), headers=headers
    )
    assert fine.status_code == 200, fine.text
    assert [r.kind for r in queue(database)] == ["track"]


@pytest.mark.parametrize(
    ("authorization", "names"),
    [
        (None, "no write key"),
        ("Bearer " + KEY, "no write key"),
        ("Basic " + base64.b64encode(b"wrong-key-0123456789:").decode(), "not valid"),
        ("Basic !!!", "no write key"),
    ],
)
async def test_a_missing_or_wrong_write_key_gets_401(
    api: tuple[httpx.AsyncClient, Database, IngestApi], authorization: str | None, names: str
) -> None:
    http, database, _ = api
    headers = {"Authorization": authorization} if authorization else {}
    answer = await http.post("/v1/batch", json=batch(GOOD), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert names in answer.json()["message"]
    assert KEY not in answer.text
    assert queue(database) == []


async def test_over_the_rate_gets_429_with_retry_after(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
) -> None:
    http, database, ingest = api
    now = [1000.0]
    ingest.keys = WriteKeys([WriteKey("test", KEY, 2)])  # two messages a second
    ingest.limits = RateLimits(clock=lambda: now[0])
    first = await http.post("/v1/batch", json=batch(GOOD, GOOD), headers=AUTH)
    assert first.status_code == 200, first.text
    refused = await http.post("/v1/track", json=GOOD, headers=AUTH)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "2 messages per second" in refused.json()["message"]
    assert len(queue(database)) == 2
    now[0] += 0.5  # half a second: one message's worth
    assert (await http.post("/v1/track", json=GOOD, headers=AUTH)).status_code == 200
    assert len(queue(database)) == 3


async def test_a_message_id_seen_before_is_not_queued_again(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
) -> None:
    http, database, _ = api
    message = {**GOOD, "messageId": "m-1"}
    for _ in range(2):
        answer = await http.post("/v1/batch", json=batch(message, message), headers=AUTH)
        assert answer.status_code == 200
        assert answer.json() == {"success": True}
    (row,) = queue(database)
    assert (row.message_id, row.payload["event_id"]) == ("m-1", "test:m-1")


async def test_page_screen_and_group_are_recorded_as_events(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
) -> None:
    http, database, _ = api
    calls = [
        ("page", {"anonymousId": "a-1", "name": "Pricing", "properties": {"path": "/p"}}),
        ("screen", {"userId": "u-1", "name": "Home"}),
        ("group", {"userId": "u-1", "groupId": "acme", "traits": {"plan": "enterprise"}}),
    ]
    for kind, body in calls:
        answer = await http.post(f"/v1/{kind}", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.text
    payloads = [(r.stream, r.payload["event"], r.payload["properties"]) for r in queue(database)]
    assert payloads == [
        ("anonymous:a-1", "page_viewed", {"path": "/p", "name": "Pricing"}),
        ("user:u-1", "screen_viewed", {"name": "Home"}),
        ("user:u-1", "group_joined", {"group_id": "acme", "traits": {"plan": "enterprise"}}),
    ]


async def test_the_api_is_in_the_openapi_document(
    api: tuple[httpx.AsyncClient, Database, IngestApi],
) -> None:
    http, _, _ = api
    document = (await http.get("/openapi.json")).json()
    assert {"/v1/batch", "/v1/identify", "/v1/track", "/v1/alias"} <= set(document["paths"])
    body = document["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Batch"}
    schemas = document["components"]["schemas"]
    assert {"batch", "sentAt"} <= set(schemas["Batch"]["properties"])
    assert "messageId" in schemas["Track"]["properties"]
    assert (await http.get("/docs")).status_code == 200


def test_tidings_dev_makes_its_write_key_once(tmp_path: Path) -> None:
    first = dev_settings(Settings(data_dir=tmp_path), DevPorts(http=free_port()))
    again = dev_settings(Settings(data_dir=tmp_path), DevPorts(http=free_port()))
    (key,) = parse_write_keys(first.write_keys, default_rate=1)
    assert key.name == "dev" and again.write_keys == first.write_keys
    assert (tmp_path / "dev-write-key").stat().st_mode & 0o077 == 0  # the owner's only
    configured = Settings(data_dir=tmp_path, write_keys="web:" + "k" * 20)
    assert dev_settings(configured, DevPorts()).write_keys == "web:" + "k" * 20


# Durability: accepted while Temporal is down, the service killed, routed after.


def serve(data_dir: Path, port: int, temporal: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TIDINGS_DATA_DIR": str(data_dir),
        "TIDINGS_WRITE_KEYS": f"test:{KEY}",
        "TEMPORAL_ADDRESS": temporal,
        "TEMPORAL_NAMESPACE": "default",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tidings.starter.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def healthy(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "tidings serve exited"
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{url}/health")).status_code == 200
    except httpx.TransportError:
        return False


async def test_an_event_accepted_before_a_crash_reaches_its_journey(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    user = f"u-{uuid.uuid4().hex[:8]}"
    nowhere = f"127.0.0.1:{free_port()}"  # no Temporal server listens there
    first = serve(data_dir, port, nowhere, log)
    try:
        await eventually(lambda: healthy(url, first), timeout=60)
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
            answer = await http.post(
                "/v1/batch",
                json=batch(
                    {
                        "type": "identify",
                        "userId": user,
                        "traits": {"email": "kay@example.com", "jurisdiction": "US"},
                    },
                    {"type": "track", "userId": user, "event": "signed_up", "messageId": "k-1"},
                ),
            )
        assert answer.status_code == 200, answer.text
        database = Database(f"sqlite:///{data_dir / 'tidings.db'}")

        async def tried_and_failed() -> bool:
            track = next(r for r in queue(database) if r.kind == "track")
            return track.state == "pending" and track.attempts >= 1 and bool(track.last_error)

        await eventually(tried_and_failed, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)  # no shutdown of any kind
        first.wait()

    async with running_stack(dev_server, data_dir=data_dir, smtp=smtp) as stack:
        second = serve(data_dir, port, dev_server.client.service_client.config.target_host, log)
        try:
            await eventually(lambda: all_routed(database), timeout=60)
            key = await stack.client.contact_for(user_id=user, anonymous_id=None)
            description = await stack.handle("onboarding", key).describe()
            assert description.status == WorkflowExecutionStatus.RUNNING
            assert description.id == naming.journey_workflow_id("onboarding", key)
            welcome = await eventually(lambda: _outbox(stack, "kay@example.com"), timeout=60)
            assert len(welcome) == 1
        finally:
            second.terminate()
            second.wait(30)
            database.dispose()


async def _outbox(stack: Stack, to: str) -> list[object]:
    return list(stack.outbox(to))
