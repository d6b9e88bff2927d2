"""Email beyond SMTP: failover to SendGrid, its signed event webhook, bounce mail (DSNs)
turned into delivery history and suppressions."""

from __future__ import annotations

import asyncio
import json
import mailbox
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlmodel import select
from support import AUDIT_KEY, activity_env, make_sender
from temporalio.exceptions import ApplicationError
from test_sendgrid_and_bounces import p256_key, postfix_hard_bounce, sign_batch
from typer.testing import CliRunner

from tidings.activities.channels.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridConfig,
    SendGridEmail,
)
from tidings.activities.send import MessageSender
from tidings.db import delivery_events, delivery_reports
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.models.contact import IdentifyContact
from tidings.models.tables import Delivery, SuppressionRecord
from tidings.models.workflow_io import SendInput, SendResult
from tidings.starter.cli import app as cli
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.workflows.interpreter import SEND_RETRY

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    with db.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(key="c1", emails=["ann@example.com"], jurisdiction="US"),
            now=NOW,
        )
    yield db
    db.dispose()


@pytest.fixture
async def vendors(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    records = tmp_path / "vendors.jsonl"
    async with running_service(create_sink_app(records), host="127.0.0.1", port=free_port()) as url:
        yield url, records


def welcome(key: str = "k1") -> SendInput:
    event = {"event_id": "e1", "name": "signed_up", "properties": {}, "occurred_at": NOW}
    return SendInput.model_validate(
        {
            "idempotency_key": key,
            "journey": "onboarding",
            "version": 1,
            "step_id": "welcome",
            "contact_key": "c1",
            "template": "welcome",
            "purpose": "service",
            "topic": "onboarding",
            "trigger": event,
            "event": event,
            "scheduled_at": NOW,
        }
    )


async def attempt_send(sender: MessageSender, attempt: int) -> SendResult:
    """One attempt, off the event loop (the vendor stand-in is served on it)."""
    env = activity_env(attempt=attempt, retry_policy=SEND_RETRY)
    return await asyncio.to_thread(env.run, sender.send_email, welcome())


def sent_delivery(database: Database) -> Delivery:
    with database.session() as session:
        [row] = session.exec(select(Delivery)).all()
        return row


async def test_smtp_trouble_fails_over_to_sendgrid(
    database: Database, smtp: SmtpSink, tmp_path: Path, vendors: tuple[str, Path]
) -> None:
    url, records = vendors
    sendgrid = SendGridEmail(SendGridConfig("SG.test", base_url=url))
    sender = make_sender(database, smtp, tmp_path, email_fallbacks=[sendgrid], provider_attempts=2)
    smtp.reply_next("451 4.3.0 try later", "451 4.3.0 try later")

    for attempt in (1, 2):
        with pytest.raises(ApplicationError, match="smtp"):
            await attempt_send(sender, attempt)
    result = await attempt_send(sender, 3)

    assert result.status == "sent"
    [record] = read_records(records, channel="email")
    assert record["provider"] == "sendgrid" and record["to"] == "ann@example.com"
    row = sent_delivery(database)
    assert (row.provider, row.attempts, row.provider_message_id) == (
        "sendgrid",
        3,
        record["provider_id"],
    )


async def test_sendgrid_events_build_history_and_suppress_bounced_addresses(
    database: Database, smtp: SmtpSink, tmp_path: Path, vendors: tuple[str, Path]
) -> None:
    url, _ = vendors
    sendgrid = SendGridEmail(SendGridConfig("SG.test", base_url=url))
    sender = make_sender(database, smtp, tmp_path, email_fallbacks=[sendgrid], provider_attempts=1)
    smtp.reply_next("451 4.3.0 try later")
    with pytest.raises(ApplicationError):
        await attempt_send(sender, 1)
    assert (await attempt_send(sender, 2)).status == "sent"
    row = sent_delivery(database)
    key, public = p256_key()
    batch = json.dumps(
        [
            {
                "email": "ann@example.com",
                "timestamp": 1795000000,
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist",
                "sg_event_id": "bounce-1",
                "sg_message_id": f"{row.provider_message_id}.filter0001.1.2.0",
                "delivery_id": row.id,
            }
        ]
    ).encode()
    timestamp = "1795000001"
    app = create_app(
        database=database,
        secret_key="s",
        company="Acme",
        sms_help_text="",
        sendgrid_public_key=public,
    )
    async with (
        running_service(app, host="127.0.0.1", port=free_port()) as service,
        httpx.AsyncClient() as http,
    ):
        good = {
            SIGNATURE_HEADER: sign_batch(key, batch, timestamp),
            TIMESTAMP_HEADER: timestamp,
        }
        forged = await http.post(
            f"{service}/callbacks/sendgrid/events",
            content=batch.replace(b"5.1.1", b"4.2.2"),
            headers=good,
        )
        first = await http.post(f"{service}/callbacks/sendgrid/events", content=batch, headers=good)
        again = await http.post(f"{service}/callbacks/sendgrid/events", content=batch, headers=good)

    assert forged.status_code == 403
    assert (first.status_code, again.status_code) == (204, 204)
    with database.session() as session:
        history = delivery_events.history(session=session, delivery_id=row.id)
        [suppression] = session.exec(select(SuppressionRecord)).all()
    # The send's own answer, and the bounce SendGrid reported (once, though sent twice).
    assert sorted((e.status, e.provider_status, e.error_code or "") for e in history) == [
        ("bounced", "bounce:hard", "5.1.1"),
        ("sent", "accepted", ""),
    ]
    assert (suppression.reason, suppression.address) == ("hard_bounce", "ann@example.com")


def test_three_soft_bounces_in_a_month_suppress_the_address(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    sender = make_sender(database, smtp, tmp_path)
    for n in range(3):
        activity_env().run(sender.send_email, welcome(key=f"k{n}"))
    with database.session() as session:
        rows = list(session.exec(select(Delivery)).all())
    for n, row in enumerate(rows):
        with database.session() as session:
            suppressed_before = session.exec(select(SuppressionRecord)).all()
            assert suppressed_before == [], f"suppressed after {n} soft bounces"
            delivery_reports.record(
                session=session,
                provider="smtp",
                report=delivery_reports.DeliveryReport(
                    delivery_id=row.id,
                    provider_message_id=None,
                    status="bounced",
                    provider_status=delivery_reports.SOFT,
                    event_id=f"soft-{n}",
                    code="4.2.2",
                    suppress=None,
                    at=NOW,
                ),
            )
    with database.session() as session:
        [suppression] = session.exec(select(SuppressionRecord)).all()
    assert suppression.reason == "hard_bounce"


def test_bounces_scan_applies_dsns_from_a_maildir(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    sender = make_sender(database, smtp, tmp_path)
    activity_env().run(sender.send_email, welcome())
    row = sent_delivery(database)
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(postfix_hard_bounce().replace(b"d-ann", row.id.encode()))
    env = {"TIDINGS_DATA_DIR": str(tmp_path), "TIDINGS_DATABASE_URL": str(database.url)}

    first = CliRunner().invoke(cli, ["bounces", "scan", str(tmp_path / "bounces")], env=env)
    again = CliRunner().invoke(cli, ["bounces", "scan", str(tmp_path / "bounces")], env=env)

    assert first.exit_code == 0, first.output
    assert "1 reports: 1 applied, 0 for mail" in first.output
    assert "1 reports: 0 applied, 1 for mail" in again.output  # applied once
    with database.session() as session:
        [suppression] = session.exec(select(SuppressionRecord)).all()
        history = delivery_events.history(session=session, delivery_id=row.id)
    assert suppression.address == "ann@example.com"
    assert sorted(e.provider_status for e in history) == ["accepted", "bounce:hard"]
