"""Exactly once under injected faults: a vendor that fails 30% of requests, some of
them after it took the message, over 500 sends retried as Temporal retries them."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from support import AUDIT_KEY, EXAMPLE_TEMPLATES, activity_env, copy_tree, make_sender
from temporalio.exceptions import ApplicationError

from tidings.activities.channels import ChannelProvider
from tidings.activities.channels.slack import SlackConfig, SlackWebhook
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.models.contact import IdentifyContact
from tidings.models.workflow_io import SendInput, SendResult
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.workflows.interpreter import SEND_RETRY

SENDS = 500
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
PING = """\
purpose: service
fields: {event.properties.n: required}
chat: {text: "ping {{ event.properties.n }}"}
"""


class Faults:
    """In front of the vendor: 20% of requests get a 503 before it sees them (safe to
    retry); 10% reach it and then lose their answer (the sender cannot know)."""

    def __init__(self, app: ASGIApp, seed: int = 7) -> None:
        self.app = app
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        roll = self.random.random()
        if roll < 0.2:
            self.counts["refused"] += 1
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"try later"})
            return
        if roll < 0.3:
            self.counts["answer lost"] += 1

            async def cut_short(message: Message) -> None:
                # The status line goes out, the body never does: the connection drops
                # mid-answer, after the vendor took the message.
                if message["type"] == "http.response.start":
                    await send(message)

            await self.app(scope, receive, cut_short)
            raise ConnectionResetError("the answer was lost")
        await self.app(scope, receive, send)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    with db.session() as session:
        upsert_contact(session=session, data=IdentifyContact(key="c1", jurisdiction="US"), now=NOW)
    yield db
    db.dispose()


@pytest.fixture
async def vendor(tmp_path: Path) -> AsyncIterator[tuple[str, Faults, Path]]:
    records = tmp_path / "vendor.jsonl"
    faults = Faults(create_sink_app(records))
    async with running_service(faults, host="127.0.0.1", port=free_port()) as url:  # type: ignore[arg-type]
        yield url, faults, records


def send_input(n: int) -> SendInput:
    event = {"event_id": f"e{n}", "name": "ping", "properties": {"n": n}, "occurred_at": NOW}
    return SendInput.model_validate(
        {
            "idempotency_key": f"journey/pings/c1/1/ping/{n}",
            "journey": "pings",
            "version": 1,
            "step_id": "ping",
            "contact_key": "c1",
            "channel": "chat",
            "template": "ping",
            "purpose": "service",
            "topic": "pings",
            "trigger": event,
            "event": event,
            "scheduled_at": NOW,
        }
    )


async def test_every_message_is_delivered_at_most_once_and_every_refusal_is_retried(
    database: Database,
    smtp: SmtpSink,
    tmp_path: Path,
    vendor: tuple[str, Faults, Path],
) -> None:
    url, faults, records = vendor
    templates = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (templates / "ping.yaml").write_text(PING)
    slack = SlackWebhook(SlackConfig(webhook_url=f"{url}/slack/pings", timeout_seconds=5))
    sender = make_sender(
        database, smtp, tmp_path, templates_dir=templates, providers={"chat": [slack]}
    )

    results = [await _send_with_retries(sender.send_message, send_input(n)) for n in range(SENDS)]

    outcomes = Counter(r.status for r in results)
    delivered = Counter(r["parts"]["text"] for r in read_records(records, channel="chat"))
    assert faults.counts["refused"] > 50 and faults.counts["answer lost"] > 25
    assert max(delivered.values()) == 1  # nobody got a message twice
    # Every message whose fate is known was delivered; the ones whose answer was lost
    # are `uncertain` (they did arrive, but tidings cannot know) and were never resent.
    assert outcomes["sent"] + outcomes["uncertain"] == SENDS
    assert outcomes["uncertain"] == faults.counts["answer lost"]
    assert len(delivered) == SENDS


async def _send_with_retries(
    activity: Callable[[SendInput], SendResult], input: SendInput
) -> SendResult:
    """What Temporal does with a failed attempt: run it again, up to the retry policy."""
    for attempt in range(1, SEND_RETRY.maximum_attempts + 1):
        env = activity_env(attempt=attempt, retry_policy=SEND_RETRY)
        try:
            return await asyncio.to_thread(env.run, activity, input)
        except ApplicationError:
            continue
    raise AssertionError(f"{input.idempotency_key}: still failing after every attempt")


@pytest.fixture
async def plain_vendor(tmp_path: Path) -> AsyncIterator[str]:
    app = create_sink_app(tmp_path / "plain.jsonl")
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield url


@pytest.mark.parametrize(("fallbacks", "delay"), [(0, 2.0), (1, 1.0)])
async def test_a_rate_limited_attempt_waits_as_the_vendor_asks_unless_another_vendor_takes_over(
    database: Database,
    smtp: SmtpSink,
    tmp_path: Path,
    plain_vendor: str,
    fallbacks: int,
    delay: float,
) -> None:
    templates = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (templates / "ping.yaml").write_text(PING)
    limited = SlackWebhook(SlackConfig(webhook_url=f"{plain_vendor}/slack/fail-429"))
    spare = SlackWebhook(SlackConfig(webhook_url=f"{plain_vendor}/slack/spare"))
    chat: list[ChannelProvider] = [limited, spare]
    chat = chat[: 1 + fallbacks]
    sender = make_sender(
        database,
        smtp,
        tmp_path,
        templates_dir=templates,
        providers={"chat": chat},
        provider_attempts=1,
    )
    env = activity_env(attempt=1, retry_policy=SEND_RETRY)

    with pytest.raises(ApplicationError) as caught:
        await asyncio.to_thread(env.run, sender.send_message, send_input(1))

    # The vendor said Retry-After: 2; moving to the spare vendor need not wait for it.
    assert caught.value.next_retry_delay is not None
    assert caught.value.next_retry_delay.total_seconds() == delay
