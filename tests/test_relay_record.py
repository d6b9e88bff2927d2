"""A send cut short mid-hand-over, settled from the relay's own record: the Maildir the
SMTP sink keeps, a Postfix mail log; on retry, and later by `tidings deliveries reconcile`."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import POSTGRES_URL
from sqlalchemy import create_engine, text, update
from sqlmodel import col, select
from support import AUDIT_KEY, activity_env, cart_send_input, make_sender
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner

from tidings.activities.channels.relay_record import (
    HandedOver,
    MaildirRecord,
    PostfixLogRecord,
    parse,
)
from tidings.activities.send import RELAY_ABSENT, RELAY_FOUND, MessageSender, email_message_id
from tidings.db import deliveries, delivery_events
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database, normalize_url
from tidings.models.contact import IdentifyContact
from tidings.models.tables import Delivery
from tidings.settings import Settings
from tidings.starter.cli import app
from tidings.starter.outbox import read_email_outbox
from tidings.starter.smtp_sink import DROP_AFTER_ACCEPT, SmtpSink

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
SENDER = "Acme <hello@acme.example>"
KEY = "journey/cart/c1/1/reminder/1"
LONG_AGO = timedelta(hours=1)
"""Older than any provider's timeout plus margin: an `absent` answer is trusted."""

POSTFIX_LOG = """\
{day} 05:40:01 mx1 postfix/smtpd[20911]: connect from app1.example.net[10.0.0.5]
{day} 05:40:01 mx1 postfix/smtpd[20911]: 4F3A21C0E5B: client=app1.example.net[10.0.0.5]
{day} 05:40:01 mx1 postfix/cleanup[20914]: 4F3A21C0E5B: message-id=<aaa@acme.example>
{day} 05:40:01 mx1 postfix/qmgr[1187]: 4F3A21C0E5B: from=<hello@acme.example>, size=2113, \
nrcpt=1 (queue active)
{day} 05:40:02 mx1 postfix/smtp[20915]: 4F3A21C0E5B: to=<ann@example.com>, \
relay=mx.example.com[93.184.216.34]:25, delay=0.9, delays=0.05/0.01/0.4/0.44, dsn=2.0.0, \
status=sent (250 2.0.0 OK)
{day} 05:40:02 mx1 postfix/qmgr[1187]: 4F3A21C0E5B: removed
{day} 05:40:05 mx1 postfix/smtpd[20911]: 5B7E41C0E60: client=app1.example.net[10.0.0.5]
{day} 05:40:05 mx1 postfix/cleanup[20914]: 5B7E41C0E60: message-id=<bbb@acme.example>
{day} 05:40:09 mx1 postfix/smtpd[20911]: lost connection after DATA (1024 bytes) from \
app1.example.net[10.0.0.5]
{day} 05:40:09 mx1 postfix/smtpd[20911]: disconnect from app1.example.net[10.0.0.5] ehlo=1 \
mail=1 rcpt=1 data=0/1 commands=3/4
{day} 05:41:00 mx1 postfix/cleanup[20914]: 6C8F51C0E61: message-id=<other@elsewhere.example>
{day} 05:41:00 mx1 postfix/qmgr[1187]: 6C8F51C0E61: from=<x@elsewhere.example>, size=99, \
nrcpt=2 (queue active)
"""


def local(hour: int, minute: int, second: int = 0) -> datetime:
    """A moment of the log above, in this machine's zone as syslog writes it."""
    return datetime(2026, 11, 24, hour, minute, second).astimezone()


def postfix(path: Path) -> PostfixLogRecord:
    return PostfixLogRecord(path, now=datetime(2026, 11, 24, 23, tzinfo=UTC))


def asked(message_id: str, at: datetime | None = None) -> HandedOver:
    return HandedOver(message_id, "ann@example.com", at or local(5, 40, 5))


# --- the records themselves ------------------------------------------------------------


def test_a_postfix_queue_id_is_committed_only_once_qmgr_took_it(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(POSTFIX_LOG.format(day="Nov 24"))
    record = postfix(log)

    committed = record.look_up(asked("<aaa@acme.example>"))
    lost_after_data = record.look_up(asked("<bbb@acme.example>"))
    never_seen = record.look_up(asked("<ccc@acme.example>"))

    assert (committed.verdict, committed.relay_id) == ("found", "4F3A21C0E5B")
    assert lost_after_data.verdict == "absent"  # cleanup logged it, qmgr never queued it
    assert never_seen.verdict == "absent"
    assert record.look_up(asked("<other@elsewhere.example>")).relay_id == "6C8F51C0E61"


def test_a_postfix_log_is_followed_across_partial_lines_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    lines = POSTFIX_LOG.format(day="Nov 24").splitlines(keepends=True)
    log.write_text("".join(lines[:3]))
    record = postfix(log)
    assert record.look_up(asked("<aaa@acme.example>")).verdict == "absent"

    qmgr = lines[3]
    with log.open("a") as handle:  # the logger is half-way through the qmgr line
        handle.write(qmgr[:40])
    assert record.look_up(asked("<aaa@acme.example>")).verdict == "absent"
    with log.open("a") as handle:
        handle.write(qmgr[40:])
    assert record.look_up(asked("<aaa@acme.example>")).verdict == "found"

    # logrotate: the file moves to mail.log.1 (after one more line), a new one starts.
    with log.open("a") as handle:
        handle.write(
            "Nov 24 05:50:00 mx1 postfix/cleanup[20914]: 7D9A: message-id=<ddd@a.example>\n"
        )
    log.rename(tmp_path / "mail.log.1")
    log.write_text(
        "Nov 24 05:50:00 mx1 postfix/qmgr[1187]: 7D9A: from=<h@a.example>, size=10, "
        "nrcpt=1 (queue active)\n"
    )
    assert record.look_up(asked("<ddd@a.example>")).verdict == "found"
    # A reader started after the rotation reads mail.log.1 first.
    assert postfix(log).look_up(asked("<aaa@acme.example>")).verdict == "found"


def test_a_postfix_log_that_starts_after_the_hand_over_cannot_say_absent(
    tmp_path: Path,
) -> None:
    log = tmp_path / "mail.log"
    log.write_text(POSTFIX_LOG.format(day="Nov 24"))
    answer = postfix(log).look_up(asked("<zzz@acme.example>", at=local(5, 0)))
    assert answer.verdict == "unknown"
    assert "does not reach back" in answer.detail and str(log) in answer.detail


def test_an_unreadable_record_answers_unknown_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for record in (MaildirRecord(missing), PostfixLogRecord(missing)):
        answer = record.look_up(asked("<aaa@acme.example>"))
        assert answer.verdict == "unknown"
        assert str(missing) in answer.detail and "TIDINGS_SMTP_RECORD" in answer.detail


def test_a_bad_setting_names_the_setting_and_both_forms() -> None:
    with pytest.raises(ValueError, match="smtp_record") as caught:
        Settings(smtp_record="/var/mail/archive")
    assert "maildir:PATH" in str(caught.value) and "postfix-log:PATH" in str(caught.value)
    assert parse("") is None
    assert isinstance(parse("postfix-log:/var/log/mail.log"), PostfixLogRecord)


def test_the_maildir_record_matches_message_id_and_recipient_over_real_smtp(
    smtp: SmtpSink,
) -> None:
    record = MaildirRecord(smtp.maildir_path)
    assert record.look_up(asked("<m1@acme.example>")).verdict == "absent"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, "ann@example.com", "hi"
    message["Message-ID"] = "<m1@acme.example>"
    message.set_content("hello")
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.send_message(message, to_addrs=["ann@example.com", "bob@example.com"])

    found = record.look_up(asked("<m1@acme.example>"))  # only new files are read
    assert found.verdict == "found" and found.relay_id
    bob = HandedOver("<m1@acme.example>", "BOB@example.com", local(5, 40))
    assert record.look_up(bob).verdict == "found"  # its own copy, Delivered-To: bob
    carol = HandedOver("<m1@acme.example>", "carol@example.com", local(5, 40))
    assert record.look_up(carol).verdict == "absent"


# --- the send activity on retry ----------------------------------------------------------


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, audit_key=AUDIT_KEY)
    with db.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(
                key="c1", emails=["ann@example.com"], jurisdiction="US", traits={"first_name": "A"}
            ),
            now=NOW,
        )
    yield db
    db.dispose()


def with_record(database: Database, smtp: SmtpSink, tmp_path: Path) -> MessageSender:
    return make_sender(database, smtp, tmp_path, smtp_record=f"maildir:{smtp.maildir_path}")


def the_row(database: Database) -> Delivery:
    with database.session() as session:
        [row] = session.exec(select(Delivery)).all()
        return row


def left_sending(database: Database, marked: timedelta, provider: str = "smtp") -> None:
    """The row a worker killed between its mark and its record leaves: `sending`,
    marked `marked` ago, naming the provider it handed the message to."""
    with database.session() as session:
        session.execute(
            update(Delivery).values(
                status="sending",
                provider=provider,
                sent_at=None,
                provider_message_id=None,
                updated_at=datetime.now(UTC) - marked,
            )
        )


def cut_short(
    database: Database, *, status: str, marked: timedelta, key: str = KEY, row_id: str = "d-cut"
) -> None:
    """A row an attempt left mid-send `marked` ago: `sending` (the retry finds it) or
    `uncertain` (what reconcile settles)."""
    with database.session() as session:
        session.add(
            Delivery(
                id=row_id,
                idempotency_key=key,
                contact_key="c1",
                journey="cart-abandonment",
                step_id="reminder",
                channel="email",
                template="cart-reminder",
                purpose="marketing",
                topic="cart",
                to_address="ann@example.com",
                status=status,
                provider="smtp",
                attempts=1,
                scheduled_at=NOW,
                counted_at=datetime.now(UTC) - marked,
                updated_at=datetime.now(UTC) - marked,
            )
        )


def history(database: Database) -> list[str]:
    row = the_row(database)
    with database.session() as session:
        events = delivery_events.history(session=session, delivery_id=row.id)
        return [event.provider_status for event in events]


def test_a_send_the_relay_kept_is_recorded_sent_from_its_record(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    sender = with_record(database, smtp, tmp_path)
    assert activity_env().run(sender.send_email, cart_send_input()).status == "sent"
    left_sending(database, marked=timedelta(seconds=1))  # killed before recording the 250

    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    row = the_row(database)
    assert (result.status, row.status, row.attempts) == ("sent", "sent", 1)
    assert row.provider_message_id == email_message_id(KEY, SENDER)
    assert RELAY_FOUND in history(database)
    assert len(read_email_outbox(smtp.maildir_path)) == 1  # not sent again


def test_a_send_the_relay_never_got_is_sent_again_once_with_the_same_message_id(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    cut_short(database, status="sending", marked=LONG_AGO)
    sender = with_record(database, smtp, tmp_path)

    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    row = the_row(database)
    [message] = read_email_outbox(smtp.maildir_path)
    assert (result.status, row.status, row.attempts) == ("sent", "sent", 2)
    assert message.message_id == email_message_id(KEY, SENDER)
    assert RELAY_ABSENT in history(database)
    # A third attempt (the second's answer lost) finds it sent: no copy more.
    assert activity_env(attempt=3).run(sender.send_email, cart_send_input()).status == "sent"
    assert len(read_email_outbox(smtp.maildir_path)) == 1


def test_an_absent_answer_is_not_trusted_until_the_hand_over_is_old_enough(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    cut_short(database, status="sending", marked=timedelta(seconds=5))
    sender = with_record(database, smtp, tmp_path)

    with pytest.raises(ApplicationError) as caught:
        activity_env(attempt=2).run(sender.send_email, cart_send_input())

    # SMTP timeout 5 s + margin 30 s, of which 5 s have passed.
    delay = caught.value.next_retry_delay
    assert delay is not None and 25 < delay.total_seconds() <= 30
    assert the_row(database).status == "sending"
    assert read_email_outbox(smtp.maildir_path) == []


@pytest.mark.parametrize("record", ["", "maildir:{tmp}/no-such-maildir"])
def test_without_a_readable_record_a_cut_send_stays_uncertain(
    database: Database, smtp: SmtpSink, tmp_path: Path, record: str
) -> None:
    cut_short(database, status="sending", marked=LONG_AGO)
    sender = make_sender(database, smtp, tmp_path, smtp_record=record.format(tmp=tmp_path))

    result = activity_env(attempt=2).run(sender.send_email, cart_send_input())

    row = the_row(database)
    assert (result.status, row.status) == ("uncertain", "uncertain")
    assert read_email_outbox(smtp.maildir_path) == []
    if record:
        assert row.error is not None and "no-such-maildir" in row.error


# --- deliveries.record, fenced -----------------------------------------------------------


@pytest.mark.postgres
def test_an_attempt_that_read_the_row_before_another_claimed_it_cannot_settle_it(
    postgres_url: str,
) -> None:
    """PostgreSQL reads do not wait for writers: a stale attempt reads the row `deferred`,
    a live one claims it meanwhile; settling it as read would undo the live claim."""
    database = Database(postgres_url, audit_key=AUDIT_KEY)
    new = deliveries.NewDelivery(
        idempotency_key=KEY,
        contact_key="c1",
        journey="cart-abandonment",
        step_id="reminder",
        channel="email",
        template="cart-reminder",
        purpose="marketing",
        topic="cart",
        scheduled_at=NOW,
    )
    with database.session() as session:
        deliveries.record(session=session, new=new, status="deferred", error="", now=NOW)
    stale_done = threading.Event()

    def stale_attempt() -> None:
        with database.session() as session:
            deliveries.record(session=session, new=new, status="skipped", error="old", now=NOW)
        stale_done.set()

    try:
        with database.session() as live:
            claim = deliveries.claim(
                session=live, new=new, to_address="a@x", now=NOW, counted_at=NOW
            )
            assert claim.verdict == "send"
            stale = threading.Thread(target=stale_attempt)
            stale.start()
            waiting_for_the_row_lock()
        stale.join(10)
        assert stale_done.is_set()
        with database.session() as session:
            row = session.exec(select(Delivery)).one()
        assert (row.status, row.attempts) == ("claimed", 1)  # not skipped by the stale one
    finally:
        database.dispose()


def waiting_for_the_row_lock() -> None:
    """Until another session waits for a row lock (the stale attempt's UPDATE)."""
    watcher = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with watcher.connect() as connection:
                waiting = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
        raise AssertionError("the stale attempt never reached its UPDATE")
    finally:
        watcher.dispose()


# --- tidings deliveries reconcile --------------------------------------------------------


def uncertain_row(database: Database, key: str, *, marked: timedelta) -> None:
    cut_short(database, status="uncertain", marked=marked, key=key, row_id=key.rsplit("/", 1)[-1])


def test_reconcile_settles_uncertain_sends_from_the_relay_record(
    database: Database,
    database_url: str,
    smtp: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One send the relay kept though its answer was lost (a real uncertain send) ...
    sender = make_sender(database, smtp, tmp_path)
    smtp.reply_next(DROP_AFTER_ACCEPT)
    assert activity_env().run(sender.send_email, cart_send_input()).status == "uncertain"
    with database.session() as session:
        session.execute(update(Delivery).values(updated_at=datetime.now(UTC) - LONG_AGO, id="kept"))
    # ... one it never got, and one the worker handed to a provider with no record.
    uncertain_row(database, "journey/x/c1/1/s/never", marked=LONG_AGO)
    uncertain_row(database, "journey/x/c1/1/s/other", marked=LONG_AGO)
    with database.session() as session:
        session.execute(
            update(Delivery).where(col(Delivery.id) == "other").values(provider="sendgrid")
        )
    monkeypatch.setenv("TIDINGS_DATABASE_URL", database_url)
    monkeypatch.setenv("TIDINGS_SMTP_RECORD", f"maildir:{smtp.maildir_path}")
    monkeypatch.setenv("TIDINGS_EMAIL_FROM", SENDER)
    runner = CliRunner()
    args = ["deliveries", "reconcile", "--data-dir", str(tmp_path / "data")]

    dry = runner.invoke(app, [*args, "--dry-run"])

    assert dry.exit_code == 0, dry.output
    assert "3 uncertain: 1 absent, 1 found, 1 no record" in dry.output
    assert "would be sent" in dry.output and "would be failed" in dry.output
    assert statuses(database) == {"kept": "uncertain", "never": "uncertain", "other": "uncertain"}

    done = runner.invoke(app, args)

    assert done.exit_code == 0, done.output
    assert statuses(database) == {"kept": "sent", "never": "failed", "other": "uncertain"}
    with database.session() as session:
        never = session.get(Delivery, "never")
    assert never is not None and never.error is not None
    assert "never reached the relay" in never.error and "send it again" in never.error
    assert len(read_email_outbox(smtp.maildir_path)) == 1
    again = runner.invoke(app, args)
    assert "1 uncertain: 1 no record" in again.output


def test_reconcile_refuses_to_run_without_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIDINGS_SMTP_RECORD", raising=False)
    result = CliRunner().invoke(
        app, ["deliveries", "reconcile", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 1 and "TIDINGS_SMTP_RECORD" in result.output


def statuses(database: Database) -> dict[str, str]:
    with database.session() as session:
        return {row.id: row.status for row in session.exec(select(Delivery)).all()}
