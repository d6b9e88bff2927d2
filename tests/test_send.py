"""The send activity over real SMTP: exactly once, errors classified, nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select
from support import AUDIT_KEY, Stack, activity_env, cart_send_input, make_sender
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from tidings.activities.receipts import Receipt, Receipts
from tidings.activities.send import MessageSender
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.policy import Cap, PolicyConfig
from tidings.models.tables import Delivery
from tidings.starter.outbox import OutboxMessage, read_email_outbox
from tidings.starter.smtp_sink import DROP_AFTER_ACCEPT, SmtpSink
from tidings.workflows.interpreter import SEND_RETRY

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    with db.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(
                key="c1",
                emails=["ann@example.com"],
                jurisdiction="US",
                traits={"first_name": "Ann"},
            ),
            now=NOW,
        )
        upsert_contact(
            session=session, data=IdentifyContact(key="no-email", jurisdiction="US"), now=NOW
        )
    yield db
    db.dispose()


@pytest.fixture
def sender(database: Database, smtp: SmtpSink, tmp_path: Path) -> MessageSender:
    return make_sender(database, smtp, tmp_path)


def smtp_messages(smtp: SmtpSink) -> list[OutboxMessage]:
    return read_email_outbox(smtp.maildir_path)


def rows(database: Database) -> list[Delivery]:
    with database.session() as session:
        return list(session.exec(select(Delivery)).all())


def test_a_send_reaches_the_smtp_server_as_multipart_text_and_html(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    result = activity_env().run(sender.send_email, cart_send_input())

    [message] = smtp_messages(smtp)
    [row] = rows(database)
    assert result.status == "sent" and result.delivery_id == row.id
    assert (row.status, row.to_address, row.attempts) == ("sent", "ann@example.com", 1)
    assert message.to == "ann@example.com"
    assert message.subject == "You left something in your cart"
    assert "Hi Ann," in message.text and "€150.00" in message.text
    assert message.html is not None and ">Hi Ann,</p>" in message.html
    assert message.delivery_id == row.id
    assert message.message_id == row.provider_message_id


def test_the_same_delivery_twice_sends_once(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    env = activity_env()
    first = env.run(sender.send_email, cart_send_input())
    second = env.run(sender.send_email, cart_send_input())

    assert first == second
    assert len(smtp_messages(smtp)) == 1
    assert len(rows(database)) == 1


def test_a_transient_refusal_is_retried_by_temporal_and_recorded(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next("451 4.3.0 Mailbox busy, try later")
    with pytest.raises(ApplicationError, match="SMTP 451") as caught:
        activity_env().run(sender.send_email, cart_send_input())
    assert not caught.value.non_retryable
    assert [r.status for r in rows(database)] == ["deferred"]

    result = activity_env().run(sender.send_email, cart_send_input())

    assert result.status == "sent"
    [row] = rows(database)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(smtp_messages(smtp)) == 1


def test_the_last_transient_attempt_records_a_failure_instead_of_raising(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next("421 4.7.0 Too many connections")
    env = activity_env(attempt=8, retry_policy=RetryPolicy(maximum_attempts=8))
    result = env.run(sender.send_email, cart_send_input())
    assert (result.status, [r.status for r in rows(database)]) == ("failed", ["failed"])


def test_an_unknown_recipient_is_a_permanent_failure(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.refuse_recipient("ann@example.com", "550 5.1.1 No such user")
    result = activity_env().run(sender.send_email, cart_send_input())
    assert result.status == "failed"
    assert "SMTP 550 5.1.1 No such user" in result.detail
    assert smtp_messages(smtp) == []


def test_a_connection_lost_after_handing_over_is_uncertain_and_never_resent(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next(DROP_AFTER_ACCEPT)
    first = activity_env().run(sender.send_email, cart_send_input())
    again = activity_env().run(sender.send_email, cart_send_input())

    assert (first.status, again.status) == ("uncertain", "uncertain")
    assert len(smtp_messages(smtp)) == 1  # the server did keep it: sending again would duplicate


def left_by_a_dead_attempt(database: Database, status: str) -> None:
    """The row a worker killed mid-send leaves behind."""
    with database.session() as session:
        session.add(
            Delivery(
                id="d-crashed",
                idempotency_key="journey/cart/c1/1/reminder/1",
                contact_key="c1",
                journey="cart-abandonment",
                step_id="reminder",
                channel="email",
                template="cart-reminder",
                purpose="marketing",
                status=status,
                attempts=1,
                scheduled_at=NOW,
                updated_at=NOW,
            )
        )


def test_an_attempt_that_died_after_handing_over_is_not_repeated(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    """Killed past the point of no return (`sending`): nobody knows, so the retry stops."""
    left_by_a_dead_attempt(database, "sending")
    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())
    assert (result.status, result.delivery_id) == ("uncertain", "d-crashed")
    assert smtp_messages(smtp) == []


def test_an_attempt_that_died_before_handing_over_is_sent_by_the_next(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    """Killed while `claimed`: nothing reached the server, so the retry sends it, once."""
    left_by_a_dead_attempt(database, "claimed")
    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    assert (result.status, result.delivery_id) == ("sent", "d-crashed")
    assert len(smtp_messages(smtp)) == 1
    [row] = rows(database)
    assert (row.status, row.attempts) == ("sent", 2)


def test_a_send_accepted_but_never_recorded_is_recorded_from_its_receipt(
    sender: MessageSender, smtp: SmtpSink, database: Database, tmp_path: Path
) -> None:
    """Killed after the server's 250, while waiting to record it: the receipt tells."""
    left_by_a_dead_attempt(database, "sending")
    receipts = Receipts(tmp_path / "receipts")
    receipts.keep(
        "journey/cart/c1/1/reminder/1",
        Receipt("smtp", "<m1@acme.example>", "digest", accepted_at=NOW),
    )
    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    assert (result.status, result.delivery_id) == ("sent", "d-crashed")
    assert smtp_messages(smtp) == []  # not sent again
    [row] = rows(database)
    assert (row.status, row.provider, row.provider_message_id) == (
        "sent",
        "smtp",
        "<m1@acme.example>",
    )
    assert list((tmp_path / "receipts").iterdir()) == []


def test_a_recorded_send_leaves_no_receipt(
    sender: MessageSender, smtp: SmtpSink, database: Database, tmp_path: Path
) -> None:
    assert activity_env().run(sender.send_email, cart_send_input()).status == "sent"
    assert list((tmp_path / "receipts").iterdir()) == []


def status_of(database: Database) -> tuple[str, int]:
    [row] = rows(database)
    return row.status, row.attempts


def test_the_point_of_no_return_comes_after_the_envelope(
    sender: MessageSender, smtp: SmtpSink, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`claimed` while the server checks the recipient, `sending` once it has the body."""
    seen: dict[str, tuple[str, int]] = {}
    rcpt, data = smtp.handler.handle_RCPT, smtp.handler.handle_DATA

    async def at_rcpt(*args: Any) -> str:
        seen["rcpt"] = status_of(database)
        return await rcpt(*args)

    async def at_data(*args: Any) -> str:
        seen["data"] = status_of(database)
        return await data(*args)

    monkeypatch.setattr(smtp.handler, "handle_RCPT", at_rcpt)
    monkeypatch.setattr(smtp.handler, "handle_DATA", at_data)
    result = activity_env().run(sender.send_email, cart_send_input())

    assert result.status == "sent"
    assert seen == {"rcpt": ("claimed", 1), "data": ("sending", 1)}


def test_an_attempt_overtaken_by_a_later_one_hangs_up_before_the_body(
    sender: MessageSender, smtp: SmtpSink, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt given up for dead wakes after another took the delivery: it sends nothing."""
    rcpt = smtp.handler.handle_RCPT

    async def taken_meanwhile(*args: Any) -> str:
        with database.session() as session:
            session.execute(text("UPDATE deliveries SET attempts = attempts + 1"))
        return await rcpt(*args)

    monkeypatch.setattr(smtp.handler, "handle_RCPT", taken_meanwhile)
    activity_env().run(sender.send_email, cart_send_input())

    assert smtp_messages(smtp) == []
    assert status_of(database) == ("claimed", 2)  # the later attempt's claim stands
    monkeypatch.undo()
    later = activity_env(attempt=3).run(sender.send_email, cart_send_input())
    assert later.status == "sent" and len(smtp_messages(smtp)) == 1


def test_missing_required_data_fails_with_the_field_and_the_fix(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    bare = JourneyEvent(event_id="e2", name="cart_updated", occurred_at=NOW)
    result = activity_env().run(sender.send_email, cart_send_input(trigger=bare, event=bare))
    assert result.status == "failed"
    assert "trigger.properties.cart_url" in result.detail
    assert (
        "give the field a default or add a `fallback:` email variant to "
        "templates/cart-reminder.yaml"
    ) in result.detail
    assert smtp_messages(smtp) == []
    assert [r.status for r in rows(database)] == ["failed"]


def test_a_contact_without_an_email_address_is_skipped(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    result = activity_env().run(sender.send_email, cart_send_input(contact_key="no-email"))
    assert (result.status, result.detail) == ("skipped", "the contact has no email address")


async def test_a_journey_rides_out_a_busy_smtp_server(stack: Stack, contact_key: str) -> None:
    """Temporal retries the 4xx with backoff (skipped time); one email arrives."""
    await stack.client.identify(contact_key, jurisdiction="US", emails=["patient@example.com"])
    stack.smtp.reply_next("451 4.3.0 try later", "451 4.3.0 try later")
    await stack.client.track(contact_key, "signed_up")

    await stack.result("onboarding", contact_key)

    welcome = [d for d in stack.deliveries() if d.step_id == "welcome"]
    assert [(d.status, d.attempts) for d in welcome] == [("sent", 3)]
    assert [s.step_id for s in stack.sent()] == ["welcome", "tips", "check-in"]


async def test_a_permanent_failure_is_recorded_and_the_journey_goes_on(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["gone@example.com"])
    stack.smtp.refuse_recipient("gone@example.com")
    await stack.client.track(contact_key, "signed_up")

    result = await stack.result("onboarding", contact_key)

    assert (result.outcome, result.sends) == ("completed", 0)
    assert sorted(d.status for d in stack.deliveries()) == ["failed", "failed", "failed"]


def test_no_attempt_starts_when_it_could_not_end_before_the_deadline(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next("451 4.3.0 try later")
    with pytest.raises(ApplicationError):
        activity_env(retry_policy=SEND_RETRY).run(sender.send_email, cart_send_input())
    late = activity_env(attempt=2, retry_policy=SEND_RETRY, scheduled_ago=26 * 60)

    result = late.run(sender.send_email, cart_send_input())

    assert result.status == "failed" and "too late" in result.detail
    assert [(r.status, r.attempts) for r in rows(database)] == [("failed", 1)]
    assert smtp_messages(smtp) == []


def test_a_transient_failure_is_final_when_the_next_retry_would_be_too_late(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next("451 4.3.0 try later")
    nearly_late = activity_env(attempt=7, retry_policy=SEND_RETRY, scheduled_ago=24 * 60)
    result = nearly_late.run(sender.send_email, cart_send_input())
    assert (result.status, [r.status for r in rows(database)]) == ("failed", ["failed"])


def test_a_retry_that_finds_nothing_to_send_settles_the_deferred_row(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    smtp.reply_next("451 4.3.0 try later")
    with pytest.raises(ApplicationError):
        activity_env(retry_policy=SEND_RETRY).run(sender.send_email, cart_send_input())
    with database.session() as session:
        session.execute(text("DELETE FROM contact_identities"))

    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    assert result.status == "skipped"
    assert [r.status for r in rows(database)] == ["skipped"]


async def test_an_internationalized_address_goes_over_smtputf8(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["jöhn@exämple.com"])
    await stack.client.track(contact_key, "signed_up")
    await stack.result("onboarding", contact_key)
    assert [s.to for s in stack.sent()] == ["jöhn@exämple.com"] * 3


def test_a_template_that_breaks_on_its_data_fails_that_send_with_the_reason(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "ratio.yaml").write_text(
        "purpose: service\n"
        "email: {subject: Ratio, text: '{{ 1 / trigger.properties.total }}'}\n"
        "fields: {trigger.properties.total: required}\n"
    )
    broken = make_sender(database, smtp, tmp_path, templates_dir=templates)
    zero = JourneyEvent(event_id="z", name="cart_updated", properties={"total": 0}, occurred_at=NOW)
    result = activity_env().run(
        broken.send_email, cart_send_input(template="ratio", trigger=zero, event=zero)
    )
    assert result.status == "failed"
    assert "ZeroDivisionError" in result.detail


def test_a_retry_does_not_wait_for_its_own_earlier_attempt_under_a_cap(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    """2 of 3 marketing messages this week are used; this one's first attempt hit a 451."""
    capped = make_sender(
        database,
        smtp,
        tmp_path,
        policy=PolicyConfig(caps=[Cap(name="3 a week", max=3, per=timedelta(days=7))]),
    )
    for n in (1, 2):
        activity_env().run(capped.send_email, cart_send_input(key=f"earlier/{n}"))
    smtp.reply_next("451 4.3.0 try later")
    with pytest.raises(ApplicationError):
        activity_env(retry_policy=SEND_RETRY).run(capped.send_email, cart_send_input(key="third"))

    retried = activity_env(attempt=2, retry_policy=SEND_RETRY).run(
        capped.send_email, cart_send_input(key="third")
    )

    assert retried.status == "sent"
    assert len(smtp_messages(smtp)) == 3
