"""SendGrid batch sends: many low-priority emails in one Mail Send request (personalizations).

The provider runs over real HTTP against the SendGrid stand-in
(starter/provider_sink.py), from real threads carrying their own hand-over
marks, as the send activity runs it; the end-to-end tests run the email
worker as worker.py builds it on the Temporal dev server, on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from support import EXAMPLE_TEMPLATES, Stack, copy_tree, points, running_stack
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from test_sendgrid_and_bounces import silent_url  # noqa: F401  (a fixture)

from tidings import naming
from tidings.activities import metrics
from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
    handover,
)
from tidings.activities.channels.registry import email_providers
from tidings.activities.channels.sendgrid import SendGridConfig, SendGridEmail
from tidings.activities.channels.sendgrid_batch import (
    HTML_TAG,
    TEXT_TAG,
    BatchingSendGridEmail,
    BatchSettings,
)
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.db.contacts import upsert_contact
from tidings.errors import TidingsError
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.workflow_io import SendInput, SendResult
from tidings.settings import Settings
from tidings.starter.outbox import read_provider_outbox
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import SinkState, create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.workflows.interpreter import SEND_DEADLINE, SEND_HEARTBEAT, SEND_RETRY, SEND_TIMEOUT

SENDER = "Acme Shop <hello@acme.example>"
FAN_OUT_QUEUE = "test-sendgrid-batch-fan-out"


@dataclass
class Sink:
    url: str
    record_path: Path
    state: SinkState

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.record_path, channel="email")

    def by_recipient(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for record in self.records():
            found.setdefault(record["to"], []).append(record)
        return found


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[Sink]:
    record_path = tmp_path / "sink.jsonl"
    app = create_sink_app(record_path)
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield Sink(url, record_path, app.state.sink)


def batching(
    url: str, *, size: int, linger: float = 10.0, api_key: str = "SG.test"
) -> BatchingSendGridEmail:
    """A batch closes when `size` have joined: the long linger is never waited out."""
    return BatchingSendGridEmail(
        SendGridConfig(api_key, url, timeout_seconds=2), BatchSettings(size, linger)
    )


def email(n: int, **changes: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "sender": SENDER,
        "to": f"reader{n}@example.com",
        "subject": f"Offer {n} for you",
        "text": f"Hello reader {n}: your code is CODE{n}.",
        "html": f"<p>Hello reader {n}: your code is <b>CODE{n}</b>.</p>",
        "message_id": f"<m{n}@acme.example>",
        "headers": {
            "List-Unsubscribe": f"<https://acme.example/u/{n}>",
            "X-Tidings-Delivery": f"d{n}",
        },
        "batchable": True,
    }
    return OutgoingEmail(**{**fields, **changes})


class Marks:
    """Hand-over marks as the send activity installs them: which ran, and when."""

    def __init__(self, superseded: Sequence[int] = ()) -> None:
        self.ran: list[int] = []
        self.superseded = set(superseded)
        self._lock = threading.Lock()

    def for_member(self, n: int) -> Callable[[], None]:
        def mark() -> None:
            with self._lock:
                self.ran.append(n)
            if n in self.superseded:
                raise handover.Superseded(f"d{n}")

        return mark


async def send_together(
    provider: SendGridEmail, emails: Sequence[OutgoingEmail], marks: Marks
) -> list[str | Exception]:
    """Each email from a thread of its own, inside its own mark, as send threads do."""

    def one(n: int, outgoing: OutgoingEmail) -> str | Exception:
        with handover.marking(marks.for_member(n)):
            try:
                return provider.send(outgoing)
            except Exception as err:
                return err

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(len(emails)) as pool:
        futures = [loop.run_in_executor(pool, one, n, e) for n, e in enumerate(emails)]
        return list(await asyncio.gather(*futures))


# --- The provider: one request for many -------------------------------------------


async def test_a_batch_is_one_request_and_each_recipient_gets_their_own_email(
    sink: Sink, reader: InMemoryMetricReader
) -> None:
    emails = [email(n) for n in range(5)]
    marks = Marks()

    ids = await send_together(batching(sink.url, size=5), emails, marks)

    assert sink.state.sendgrid_requests == 1
    assert sorted(marks.ran) == [0, 1, 2, 3, 4]
    [message_id] = set(ids)
    assert isinstance(message_id, str) and message_id
    records = sink.by_recipient()
    for n in range(5):
        [record] = records[f"reader{n}@example.com"]
        assert record["provider_id"] == message_id
        assert record["parts"] == {
            "subject": f"Offer {n} for you",
            "text": f"Hello reader {n}: your code is CODE{n}.",
            "html": f"<p>Hello reader {n}: your code is <b>CODE{n}</b>.</p>",
        }
        [personalization] = record["payload"]["personalizations"]
        assert personalization["headers"]["Message-ID"] == f"<m{n}@acme.example>"
        assert personalization["custom_args"] == {"delivery_id": f"d{n}"}
    body = records["reader0@example.com"][0]["payload"]
    assert body["from"] == {"email": "hello@acme.example", "name": "Acme Shop"}
    assert body["content"] == [
        {"type": "text/plain", "value": TEXT_TAG},
        {"type": "text/html", "value": HTML_TAG},
    ]
    [seen] = read_provider_outbox(sink.record_path, to="reader1@example.com")  # tidings outbox
    assert (seen.subject, seen.html) == ("Offer 1 for you", emails[1].html)
    # The saving, as an operator sees it: one request carried five messages.
    [point] = points(reader, metrics.PROVIDER_REQUESTS).values()
    assert isinstance(point, HistogramDataPoint)
    assert (point.count, point.sum) == (1, 5)


async def test_members_are_marked_only_when_their_batch_leaves(sink: Sink) -> None:
    """A worker that dies while members wait leaves them claimed (retried), not in doubt."""
    provider = batching(sink.url, size=10, linger=1.0)
    marks = Marks()

    sending = asyncio.create_task(send_together(provider, [email(0), email(1)], marks))
    await asyncio.sleep(0.5)
    assert marks.ran == [] and sink.state.sendgrid_requests == 0
    results = await sending

    assert sorted(marks.ran) == [0, 1] and sink.state.sendgrid_requests == 1
    assert len(set(results)) == 1


async def test_a_superseded_member_is_left_out_of_the_request(sink: Sink) -> None:
    marks = Marks(superseded=[2])

    results = await send_together(batching(sink.url, size=4), [email(n) for n in range(4)], marks)

    assert isinstance(results[2], handover.Superseded)
    assert sink.state.sendgrid_requests == 1
    assert sorted(sink.by_recipient()) == [f"reader{n}@example.com" for n in (0, 1, 3)]


async def test_what_does_not_fit_a_batch_goes_alone(sink: Sink) -> None:
    big = email(0, text="x" * 10_001)  # over SendGrid's 10,000 bytes of substitutions
    twice = email(3, to="reader1@example.com")  # an address once per request
    tagged = email(4, subject=f"About {TEXT_TAG}")  # would be substituted
    emails = [big, email(1), email(2), twice, tagged]

    results = await send_together(batching(sink.url, size=2, linger=1.0), emails, Marks())

    assert all(isinstance(result, str) for result in results)
    # One batch of two; the others alone.
    assert sink.state.sendgrid_requests == 4
    assert len(set(results)) == 4
    [alone] = sink.by_recipient()["reader0@example.com"]
    assert alone["parts"]["text"] == "x" * 10_001
    assert "substitutions" not in alone["payload"]["personalizations"][0]
    assert len(sink.by_recipient()["reader1@example.com"]) == 2


async def test_transactional_email_is_never_batched(sink: Sink) -> None:
    emails = [email(n, batchable=False) for n in range(4)]

    results = await send_together(batching(sink.url, size=4), emails, Marks())

    assert sink.state.sendgrid_requests == 4 and len(set(results)) == 4


async def test_a_refused_batch_is_sent_one_by_one(sink: Sink) -> None:
    emails = [email(0), email(1, to="fail-400@example.com"), email(2), email(3)]
    marks = Marks()

    results = await send_together(batching(sink.url, size=4), emails, marks)

    assert isinstance(results[1], PermanentSendError)
    assert "HTTP 400" in str(results[1])
    sent = [results[n] for n in (0, 2, 3)]
    assert all(isinstance(result, str) for result in sent) and len(set(sent)) == 3
    assert sink.state.sendgrid_requests == 1 + 4
    assert sorted(marks.ran) == [0, 1, 2, 3]  # each marked once, before the batch
    assert sorted(sink.by_recipient()) == [f"reader{n}@example.com" for n in (0, 2, 3)]


async def test_a_rate_limited_batch_is_retried_as_a_whole(sink: Sink) -> None:
    emails = [email(0), email(1, to="fail-429@example.com"), email(2)]

    results = await send_together(batching(sink.url, size=3), emails, Marks())

    for result in results:
        assert isinstance(result, TransientSendError)
        assert result.retry_after_seconds is not None and 0 < result.retry_after_seconds <= 2
    assert sink.state.sendgrid_requests == 1 and sink.records() == []


async def test_refused_credentials_fail_every_member_for_good(sink: Sink) -> None:
    provider = batching(sink.url, size=2, api_key="wrong")

    results = await send_together(provider, [email(0), email(1)], Marks())

    for result in results:
        assert isinstance(result, PermanentSendError)
        assert "TIDINGS_SENDGRID_API_KEY" in str(result)


async def test_a_batch_without_an_answer_is_in_doubt_for_every_member(
    silent_url: str,  # noqa: F811
) -> None:
    results = await send_together(
        batching(silent_url, size=3), [email(n) for n in range(3)], Marks()
    )

    assert all(isinstance(result, AmbiguousSendError) for result in results)


# --- The stand-in keeps SendGrid's limits -------------------------------------------


async def test_the_stand_in_refuses_what_sendgrid_refuses(sink: Sink) -> None:
    def body(personalizations: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "personalizations": personalizations,
            "from": {"email": "hello@acme.example"},
            "content": [{"type": "text/plain", "value": TEXT_TAG}],
        }

    def one(n: int, **extra: Any) -> dict[str, Any]:
        return {"to": [{"email": f"r{n}@example.com"}], "subject": "Hi", **extra}

    cases = {
        "limited to 1000 personalizations": body([one(n) for n in range(1001)]),
        "included r1@example.com more than once": body([one(1), one(1)]),
        "may not exceed 10000 bytes": body([one(1, substitutions={TEXT_TAG: "x" * 10_000})]),
        "to parameter is required": body([{"subject": "Hi"}]),
        "The subject is required": body([{"to": [{"email": "r1@example.com"}]}]),
        "header Reply-To is reserved": body([one(1, headers={"Reply-To": "x@example.com"})]),
    }
    async with httpx.AsyncClient(headers={"Authorization": "Bearer SG.test"}) as http:
        for words, payload in cases.items():
            answer = await http.post(f"{sink.url}/v3/mail/send", json=payload)
            assert answer.status_code == 400, words
            assert words in answer.json()["errors"][0]["message"], answer.json()
        answer = await http.post(
            f"{sink.url}/v3/mail/send",
            content=b" " * 30_000_000,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413
    assert sink.records() == []


# --- Settings: which providers, in which order ---------------------------------------


def smtp_stand_in() -> SmtpProvider:
    return SmtpProvider(SmtpConfig(host="127.0.0.1", port=9))


def test_email_providers_follow_the_setting() -> None:
    smtp = smtp_stand_in()
    keyed: dict[str, Any] = {"sendgrid_api_key": "SG.k", "sendgrid_base_url": "http://127.0.0.1:9"}

    assert email_providers(Settings(), smtp) == [smtp]  # the default, without a key
    default = email_providers(Settings(**keyed), smtp)
    assert default[0] is smtp and [p.name for p in default] == ["smtp", "sendgrid"]
    first = email_providers(Settings(email_providers=["sendgrid", "smtp"], **keyed), smtp)
    assert [p.name for p in first] == ["sendgrid", "smtp"]
    assert isinstance(first[0], BatchingSendGridEmail)
    assert first[0].batching == BatchSettings(500, 0.2)
    plain = email_providers(Settings(sendgrid_batch_purposes=[], **keyed), smtp)[1]
    assert type(plain) is SendGridEmail


def test_email_provider_mistakes_are_named() -> None:
    smtp = smtp_stand_in()
    with pytest.raises(TidingsError, match=re.escape("unknown email provider mailgun; "
                       "TIDINGS_EMAIL_PROVIDERS takes smtp, sendgrid")):  # fmt: skip
        email_providers(Settings(email_providers=["smtp", "mailgun"]), smtp)
    with pytest.raises(
        TidingsError, match=r"no email provider: .*only once TIDINGS_SENDGRID_API_KEY is set"
    ):
        email_providers(Settings(email_providers=["sendgrid"]), smtp)
    with pytest.raises(ValueError, match="sendgrid_batch_max"):
        Settings(sendgrid_batch_max=1001)
    with pytest.raises(ValueError, match="TIDINGS_SENDGRID_BATCH_MAX"):
        BatchSettings(max_messages=0)


# --- End to end: the email worker on Temporal ------------------------------------------

PROMO = """\
description: A personal offer (the batching tests).
purpose: marketing
fields:
  contact.traits.first_name: required
  contact.traits.code: required
email:
  subject: "{{ contact.traits.first_name }}, your offer is inside"
  text: |
    Hi {{ contact.traits.first_name }}, your code is {{ contact.traits.code }}.
    {% include "footer.txt" %}
  html: |
    {% extends "layout.html" %}
    {% block body %}<p>Hi {{ contact.traits.first_name }}, your code is
    <b>{{ contact.traits.code }}</b>.</p>{% endblock %}
    {% block footer %}{% include "footer.html" %}{% endblock %}
"""
RECEIPT = """\
description: A receipt (the batching tests).
purpose: transactional
fields:
  contact.traits.code: required
email:
  subject: "Receipt {{ contact.traits.code }}"
  text: |
    Thank you: order {{ contact.traits.code }} is paid.
    {% include "legal.txt" %}
"""


@workflow.defn(name="TestSendgridBatchFanOut", sandboxed=False)
class FanOut:
    """Schedules every send at once, as many journeys reaching a send step together do."""

    @workflow.run
    async def run(self, sends: list[SendInput]) -> list[SendResult]:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "send_email",
                    send,
                    task_queue=naming.EMAIL_TASK_QUEUE,
                    start_to_close_timeout=SEND_TIMEOUT,
                    heartbeat_timeout=SEND_HEARTBEAT,
                    schedule_to_close_timeout=SEND_DEADLINE,
                    retry_policy=SEND_RETRY,
                    result_type=SendResult,
                )
                for send in sends
            )
        )
        return list(results)


@pytest.fixture
async def sendgrid_stack(
    dev_server: WorkflowEnvironment,
    smtp: SmtpSink,
    sink: Sink,
    tmp_path: Path,
    database_url: str,
) -> AsyncIterator[Stack]:
    """The email worker as worker.py builds it, with SendGrid first."""
    templates = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (templates / "promo.yaml").write_text(PROMO)
    (templates / "receipt.yaml").write_text(RECEIPT)
    settings = {
        "email_providers": ["sendgrid", "smtp"],
        "sendgrid_api_key": "SG.test",
        "sendgrid_base_url": sink.url,
        "sendgrid_batch_linger_ms": 500,
    }
    async with running_stack(
        dev_server,
        data_dir=tmp_path / "data",
        smtp=smtp,
        templates_dir=templates,
        database_url=database_url,
        extra_settings=settings,
    ) as stack:
        yield stack


def send_inputs(stack: Stack, addresses: Sequence[str], template: str) -> list[SendInput]:
    """A contact per address, and one send of `template` to each."""
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    purpose = "transactional" if template == "receipt" else "marketing"
    event = JourneyEvent(event_id=run, name="promo", properties={}, occurred_at=now)
    sends = []
    with stack.database.session() as session:
        for n, address in enumerate(addresses):
            key = f"batch-{run}-{n}"
            traits = {"first_name": f"Reader{n}", "code": f"CODE-{run}-{n}"}
            contact = IdentifyContact(key=key, emails=[address], jurisdiction="US", traits=traits)
            upsert_contact(session=session, data=contact, now=now)
            sends.append(
                SendInput(
                    idempotency_key=f"{key}/send",
                    journey="batch-test",
                    version=1,
                    step_id="offer",
                    contact_key=key,
                    template=template,
                    purpose=purpose,
                    topic="offers",
                    trigger=event,
                    event=event,
                    scheduled_at=now,
                )
            )
    return sends


async def fan_out(client: Client, sends: list[SendInput]) -> list[SendResult]:
    async with Worker(client, task_queue=FAN_OUT_QUEUE, workflows=[FanOut]):
        return await asyncio.wait_for(
            client.execute_workflow(
                FanOut.run, sends, id=f"fan-out-{uuid.uuid4().hex[:8]}", task_queue=FAN_OUT_QUEUE
            ),
            120,
        )


async def test_marketing_email_goes_out_in_batches_each_recipient_their_own(
    sendgrid_stack: Stack, sink: Sink
) -> None:
    count = 60
    addresses = [f"reader{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(count)]
    sends = send_inputs(sendgrid_stack, addresses, "promo")

    began = time.monotonic()
    results = await fan_out(sendgrid_stack.temporal, sends)

    assert [r.status for r in results] == ["sent"] * count, [r.detail for r in results]
    # 32 send slots a worker: a batch holds at most that many, so at least two requests.
    assert sink.state.sendgrid_requests <= count // 5, sink.state.sendgrid_requests
    records = sink.by_recipient()
    rows = {row.to_address: row for row in sendgrid_stack.deliveries()}
    message_ids = set()
    for n, address in enumerate(addresses):
        [record] = records[address]
        code = "CODE-" + sends[n].contact_key.removeprefix("batch-")
        assert record["parts"]["subject"] == f"Reader{n}, your offer is inside"
        assert f"your code is {code}." in record["parts"]["text"]
        assert f"<b>{code}</b>" in record["parts"]["html"]
        [personalization] = record["payload"]["personalizations"]
        message_ids.add(personalization["headers"]["Message-ID"])
        row = rows[address]
        assert personalization["custom_args"] == {"delivery_id": row.id}
        assert (row.status, row.provider, row.provider_message_id) == (
            "sent",
            "sendgrid",
            record["provider_id"],
        )
    assert len(message_ids) == count
    assert time.monotonic() - began < 60


async def test_transactional_email_goes_one_request_each(sendgrid_stack: Stack, sink: Sink) -> None:
    addresses = [f"buyer{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(6)]

    results = await fan_out(
        sendgrid_stack.temporal, send_inputs(sendgrid_stack, addresses, "receipt")
    )

    assert [r.status for r in results] == ["sent"] * 6
    assert sink.state.sendgrid_requests == 6
    assert sorted(sink.by_recipient()) == sorted(addresses)


async def test_a_rate_limited_batch_is_delivered_once_each_on_retry(
    sendgrid_stack: Stack, sink: Sink
) -> None:
    tag = uuid.uuid4().hex[:6]
    # The stand-in refuses a request to once-429@ the first time only.
    addresses = [f"once-429@{tag}.example.com"] + [f"r{n}-{tag}@example.com" for n in range(9)]

    results = await fan_out(
        sendgrid_stack.temporal, send_inputs(sendgrid_stack, addresses, "promo")
    )

    assert [r.status for r in results] == ["sent"] * 10
    records = sink.by_recipient()
    assert all(len(records[address]) == 1 for address in addresses)
    rows = {row.to_address: row for row in sendgrid_stack.deliveries()}
    assert rows[addresses[0]].attempts == 2  # its batch was refused, then sent on the retry
    assert sum(row.attempts == 2 for row in rows.values()) >= 2  # its batch-mates too
