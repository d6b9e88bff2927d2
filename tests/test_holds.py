"""Legal hold, pause and kill switch: scopes, the policy's decision, the CLI, journeys
held and resumed or ended (time-skipping server), and 1,000 journeys held at once
and resumed by one batch signal (real dev server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select
from support import AUDIT_KEY, Stack, activity_env, eventually, make_sender, running_stack
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings import naming
from tidings.activities.send import MessageSender
from tidings.db import holds
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.db.policy_facts import load_facts
from tidings.errors import InputError
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.holds import Hold, normalize_scope, parse_scope
from tidings.models.policy import (
    Channel,
    ConsentEntry,
    ContactFacts,
    Message,
    PolicyConfig,
    Suppression,
)
from tidings.models.primitives import Purpose
from tidings.models.tables import AuditRecord, Delivery, HoldRecord
from tidings.models.workflow_io import JourneyResult, JourneyStatus, SendInput
from tidings.policy.engine import Facts, decide
from tidings.policy.holds import HOLD_RECHECK, KILLED, covers
from tidings.starter.cli import app
from tidings.starter.hold_admin import HoldAdmin
from tidings.starter.smtp_sink import SmtpSink

NOW = datetime(2027, 3, 2, 15, tzinfo=UTC)
runner = CliRunner()


# --- scopes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("all", "all"),
        (" ALL ", "all"),
        ("journey:onboarding", "journey:onboarding"),
        ("Journey: Onboarding", "journey:onboarding"),
        ("template:check-in", "template:check-in"),
        ("channel:SMS", "channel:sms"),
        ("jurisdiction:us-fl", "jurisdiction:US-FL"),
        ("purpose:critical", "purpose:critical"),
    ],
)
def test_a_scope_is_stored_in_one_normal_form(given: str, stored: str) -> None:
    assert normalize_scope(given) == stored


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("everything", "is not a hold scope; use one of: all, journey:NAME, template:NAME"),
        ("contact:c1", "is not a hold scope; use one of: all, journey:NAME"),
        ("journey:", "names no journey; write it as journey:onboarding"),
        ("channel:fax", "there is no channel 'fax'; use one of email, sms"),
        ("purpose:promo", "there is no purpose 'promo'"),
        ("jurisdiction:Florida", "is not a jurisdiction"),
    ],
)
def test_a_malformed_scope_is_refused_naming_the_accepted_forms(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scope(given)


def hold(scope: str, action: str = "hold", hold_id: int = 1, **more: object) -> Hold:
    return Hold.model_validate(
        {
            "id": hold_id,
            "scope": scope,
            "action": action,
            "reason": "Legal review of case 42",
            "set_by": "lee",
            "set_at": NOW - timedelta(hours=1),
            **more,
        }
    )


def message(
    channel: Channel = "email",
    purpose: Purpose = "marketing",
    journey: str = "onboarding",
    template: str = "tips",
) -> Message:
    return Message(
        channel=channel, purpose=purpose, topic="tips", journey=journey, template=template
    )


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        ("all", True),
        ("journey:onboarding", True),
        ("journey:renewal", False),
        ("template:tips", True),
        ("template:welcome", False),
        ("channel:email", True),
        ("channel:sms", False),
        ("purpose:marketing", True),
        ("purpose:service", False),
        ("jurisdiction:US", True),  # a country covers its regions
        ("jurisdiction:US-FL", True),
        ("jurisdiction:US-TX", False),
        ("jurisdiction:DE", False),
    ],
)
def test_a_scope_covers_the_messages_it_names(scope: str, covered: bool) -> None:
    assert covers(hold(scope), message(), "US-FL") is covered


def test_a_jurisdiction_scope_leaves_contacts_of_unknown_jurisdiction_alone() -> None:
    assert not covers(hold("jurisdiction:US"), message(), None)
    assert covers(hold("all"), message(), None)


# --- the decision -----------------------------------------------------------------


def facts(*held: Hold, purpose: Purpose = "marketing", **more: object) -> Facts:
    return Facts(
        contact=ContactFacts(key="c1", jurisdiction="US-FL", timezone="America/New_York"),
        message=message(purpose=purpose).model_copy(update={"address": "c1@example.com"}),
        now=NOW,
        config=PolicyConfig(),
        holds=held,
        **more,  # type: ignore[arg-type]
    )


def test_a_hold_makes_the_send_wait_and_check_again_in_a_few_minutes() -> None:
    decision = decide(facts(hold("journey:onboarding", hold_id=7)))

    assert (decision.action, decision.kind) == ("wait", "hold")
    assert decision.until == NOW + HOLD_RECHECK
    assert decision.rule == "hold 7: journey:onboarding"
    assert decision.reason.startswith(
        "on hold 7 (journey:onboarding): Legal review of case 42; waiting for it to lift"
    )
    assert decision.inputs["hold_id"] == 7


def test_a_kill_switch_ends_the_journey_instead_of_sending() -> None:
    decision = decide(facts(hold("channel:email", action="kill", hold_id=3)))

    assert (decision.action, decision.kind) == ("end", "hold")
    assert decision.reason == f"{KILLED} 3 (channel:email): Legal review of case 42"


def test_a_kill_switch_outranks_a_hold_and_an_older_hold_speaks_first() -> None:
    both = decide(facts(hold("all", hold_id=1), hold("purpose:marketing", "kill", hold_id=2)))
    holds_only = decide(facts(hold("channel:email", hold_id=5), hold("all", hold_id=4)))

    assert (both.action, both.inputs["hold_id"], both.inputs["holds"]) == ("end", 2, [2, 1])
    assert (holds_only.action, holds_only.inputs["hold_id"]) == ("wait", 4)


@pytest.mark.parametrize("purpose", ["critical", "transactional", "service", "marketing"])
def test_a_hold_stops_every_purpose_critical_included(purpose: Purpose) -> None:
    assert decide(facts(hold("all"), purpose=purpose)).kind == "hold"


def test_a_hold_outranks_every_other_rule() -> None:
    suppressed = Suppression(
        id=1,
        contact_key="c1",
        channel=None,
        address=None,
        reason="complaint",
        note="",
        created_at=NOW,
    )
    revoked = ConsentEntry(
        id=1,
        contact_key="c1",
        channel="email",
        purpose=None,
        topic=None,
        action="revoke",
        basis=None,
        source="test",
        proof={},
        effective_at=NOW - timedelta(days=1),
        expires_at=None,
    )
    without = decide(facts(suppressions=(suppressed,), consents=(revoked,)))
    held = decide(facts(hold("all"), suppressions=(suppressed,), consents=(revoked,)))

    assert (without.action, without.kind) == ("skip", "suppression")
    assert (held.action, held.kind) == ("wait", "hold")


def test_a_lifted_hold_or_one_that_covers_something_else_changes_nothing() -> None:
    lifted = hold("all", lifted_at=NOW, lifted_by="lee")
    elsewhere = hold("channel:sms", action="kill")
    assert decide(facts(lifted, elsewhere)).action == "send"


# --- the database -----------------------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, audit_key=AUDIT_KEY)
    with database.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(key="c1", emails=["c1@example.com"], jurisdiction="US-FL"),
            now=NOW,
        )
    yield database
    database.dispose()


def test_the_policy_reads_active_holds_in_its_one_query_and_every_change_is_audited(
    db: Database,
) -> None:
    with db.session() as session:
        kept = holds.set_hold(
            session=session, scope="all", action="hold", reason="Case 42", set_by="lee", now=NOW
        )
        lifted = holds.set_hold(
            session=session,
            scope="channel:sms",
            action="kill",
            reason="Vendor incident",
            set_by="max",
            now=NOW,
        )
    with db.session() as session:
        holds.lift_hold(
            session=session, hold_id=lifted.id, lifted_by="max", reason="fixed", now=NOW
        )
    with db.session() as session:
        found = load_facts(
            session=session,
            contact_key="c1",
            message=message(),
            now=NOW,
            config=PolicyConfig(),
            default_timezone="UTC",
        ).holds
        records = list(session.exec(select(AuditRecord).where(AuditRecord.kind == "hold")))

    assert found == (kept,)
    assert [(r.action, r.rule, r.detail, r.data["by"]) for r in records] == [
        ("set", "hold 1 (all)", "Case 42", "lee"),
        ("set", "kill switch 2 (channel:sms)", "Vendor incident", "max"),
        ("lift", "kill switch 2 (channel:sms)", "fixed", "max"),
    ]


# --- the send activity --------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    with database.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(key="c1", emails=["ann@example.com"], jurisdiction="US"),
            now=NOW,
        )
    yield database
    database.dispose()


@pytest.fixture
def sender(sqlite_db: Database, smtp: SmtpSink, tmp_path: Path) -> MessageSender:
    return make_sender(sqlite_db, smtp, tmp_path)


def send_input() -> SendInput:
    event = JourneyEvent(event_id="e1", name="signed_up", occurred_at=NOW)
    return SendInput(
        idempotency_key="journey/onboarding/c1/1/check-in/1",
        journey="onboarding",
        version=1,
        step_id="check-in",
        contact_key="c1",
        template="check-in",
        purpose="service",
        topic="onboarding",
        trigger=event,
        event=event,
        scheduled_at=NOW,
    )


def set_hold(database: Database, scope: str, action: str = "hold") -> Hold:
    with database.session() as session:
        return holds.set_hold(
            session=session,
            scope=scope,
            action="kill" if action == "kill" else "hold",
            reason="Set after the pre-check",
            set_by="lee",
            now=datetime.now(UTC),
        )


def test_a_hold_set_after_the_pre_check_is_caught_at_send_time(
    sender: MessageSender, sqlite_db: Database, smtp: SmtpSink
) -> None:
    """The workflow's check passed; the hold came before the send activity ran."""
    placed = set_hold(sqlite_db, "template:check-in")

    result = activity_env().run(sender.send_email, send_input())

    assert (result.status, result.kind, result.end) == ("deferred", "hold", False)
    assert result.until is not None and result.until > datetime.now(UTC)
    assert result.detail.startswith(f"on hold {placed.id} (template:check-in)")
    assert smtp.maildir_path.exists() is False or not list(smtp.maildir_path.rglob("*.*"))
    with sqlite_db.session() as session:
        assert session.exec(select(Delivery)).all() == []


def test_a_kill_switch_at_send_time_skips_the_delivery_and_ends_the_journey_even_on_retry(
    sender: MessageSender, sqlite_db: Database
) -> None:
    placed = set_hold(sqlite_db, "journey:onboarding", "kill")

    first = activity_env().run(sender.send_email, send_input())
    retried = activity_env(attempt=2).run(sender.send_email, send_input())

    reason = f"{KILLED} {placed.id} (journey:onboarding): Set after the pre-check"
    assert (first.status, first.end, first.detail) == ("skipped", True, reason)
    assert retried == first
    with sqlite_db.session() as session:
        [row] = session.exec(select(Delivery)).all()
    assert (row.status, row.error) == ("skipped", reason)


# --- the CLI ----------------------------------------------------------------------


def test_hold_set_list_and_lift_from_the_command_line(tmp_path: Path) -> None:
    # Nothing listens on this port: the lift cannot wake journeys and says so.
    env = {"TIDINGS_DATA_DIR": str(tmp_path), "TEMPORAL_ADDRESS": "127.0.0.1:9"}

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["hold", *args], env=env)
        return result.exit_code, result.output

    set_ = cli("set", "Journey:Onboarding", "--reason", "Legal review 42", "--as", "lee")
    kill = cli("set", "channel:sms", "--reason", "Vendor incident", "--as", "max", "--kill")
    listed = cli("list")
    lifted = cli("lift", "1", "--as", "lee", "--reason", "cleared")
    active = cli("list")
    everything = cli("list", "--all")

    assert set_[0] == 0, set_[1]
    assert "hold 1 set on journey:onboarding: journeys wait at their next send" in set_[1]
    assert 'WaitingFor="policy:hold"' in set_[1]
    assert kill[0] == 0 and "kill switch 2 set on channel:sms" in kill[1]
    assert "warning: kill switch 2 (channel:sms) is set, but held journeys" in kill[1]
    assert "   1  hold  journey:onboarding" in listed[1] and "set by lee" in listed[1]
    assert "   2  KILL  channel:sms" in listed[1]
    assert lifted[0] == 0, lifted[1]
    assert "hold 1 (journey:onboarding) lifted" in lifted[1]
    assert (
        "warning: hold 1 (journey:onboarding) is lifted, but held journeys could not be "
        in (lifted[1])
    )
    assert "each checks again on its own within 5m" in lifted[1]
    assert "journey:onboarding" not in active[1] and "channel:sms" in active[1]
    assert "lifted by lee" in everything[1] and ": cleared" in everything[1]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["set", "contact:c1", "--reason", "x", "--as", "lee"],
            "error: invalid hold scope: 'contact:c1' is not a hold scope; use one of: all, "
            "journey:NAME, template:NAME, channel:NAME, jurisdiction:CODE (US covers US-FL), "
            "purpose:NAME",
        ),
        (
            ["set", "journey:onbaording", "--reason", "x", "--as", "lee"],
            "error: invalid hold scope 'journey:onbaording': there is no journey 'onbaording' "
            "(cart-abandonment, onboarding, ",
        ),
        (["set", "all", "--reason", " ", "--as", "lee"], "error: --reason: say why"),
        (["set", "all", "--reason", "x", "--as", "lee@corp.example"], "error: --as: "),
        (["lift", "99", "--as", "lee"], "error: there is no hold 99; `tidings hold list`"),
    ],
)
def test_hold_commands_refuse_bad_input_with_one_clear_message(
    tmp_path: Path, args: list[str], error: str
) -> None:
    result = runner.invoke(app, ["hold", *args], env={"TIDINGS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.startswith(error), result.output


def test_lifting_a_hold_twice_is_refused_saying_who_lifted_it(tmp_path: Path) -> None:
    env = {"TIDINGS_DATA_DIR": str(tmp_path), "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    runner.invoke(app, ["hold", "set", "all", "--reason", "x", "--as", "lee"], env=env)
    first = runner.invoke(app, ["hold", "lift", "1", "--as", "max"], env=env)
    second = runner.invoke(app, ["hold", "lift", "1", "--as", "lee"], env=env)
    assert first.exit_code == 0
    assert second.exit_code == 1
    assert second.output.startswith("error: hold 1 (all) was already lifted by max at ")


# --- journeys on the time-skipping server -----------------------------------------

PAUSED = """\
name: paused
version: 1
trigger: {event: ping}
steps:
  - id: hello
    send: {template: welcome, purpose: service, topic: onboarding}
  - id: pause
    wait: 1h
  - id: follow-up
    send: {template: check-in, purpose: service, topic: onboarding}
"""


def paused_journey(tmp_path: Path, spec: str = PAUSED) -> Path:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "journey.yaml").write_text(spec)
    return journeys


async def status(handle: WorkflowHandle[object, JourneyResult]) -> JourneyStatus:
    result: JourneyStatus = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
    return result


async def test_a_held_journey_waits_at_its_send_and_sends_where_it_stopped_after_the_lift(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    journeys = paused_journey(tmp_path)
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=journeys
    ) as s:
        await s.client.identify(contact_key, emails=["held@example.com"], jurisdiction="US")
        await s.client.track(contact_key, "ping")
        handle = s.handle("paused", contact_key)
        await eventually(lambda: _waiting(handle, "timer"), timeout=60)
        change = await s.client.holds.set(
            "journey:paused", reason="Legal review of case 42", by="lee"
        )
        await time_skipping.sleep(timedelta(minutes=71))  # the pause ends; two rechecks

        held = await status(handle)
        described = await handle.describe()
        sent_while_held = [m.subject for m in s.outbox()]
        lift = await s.client.holds.lift(change.hold.id, by="lee", reason="cleared")
        # The test server runs no batch operations: wake the journey as one would.
        await handle.signal(naming.RECHECK_SIGNAL)
        await eventually(lambda: asyncio.to_thread(lambda: len(s.outbox()) == 2), timeout=60)
        result = await s.result("paused", contact_key)

        assert (held.step_id, held.waiting_for) == ("follow-up", "policy:hold")
        assert held.details.startswith(
            f"Held: on hold {change.hold.id} (journey:paused): Legal review of case 42"
        )
        assert described.typed_search_attributes.get(naming.WAITING_FOR) == "policy:hold"
        assert len(sent_while_held) == 1
        assert lift.warning is not None and "within 5m" in lift.warning
        assert (result.outcome, result.sends) == ("completed", 2)
        assert [x.step_id for x in s.sent()] == ["hello", "follow-up"]
        with s.database.session() as session:
            decisions = session.exec(
                select(AuditRecord).where(
                    col(AuditRecord.kind).startswith("policy:"),
                    col(AuditRecord.rule).startswith("hold "),
                )
            ).all()
            changes = session.exec(select(AuditRecord).where(AuditRecord.kind == "hold")).all()
        assert len(decisions) >= 3  # the first check, and again every 5 minutes
        assert {d.contact_key for d in decisions} == {contact_key}
        assert {(d.action, d.data["hold_id"]) for d in decisions} == {("wait", change.hold.id)}
        assert [(c.action, c.data["by"], c.detail) for c in changes] == [
            ("set", "lee", "Legal review of case 42"),
            ("lift", "lee", "cleared"),
        ]


async def _waiting(handle: WorkflowHandle[object, JourneyResult], what: str) -> bool:
    return (await status(handle)).waiting_for == what


async def test_a_kill_switch_ends_journeys_at_their_next_send_with_its_reason(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    journeys = paused_journey(tmp_path)
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=journeys
    ) as s:
        await s.client.identify(contact_key, emails=["killed@example.com"], jurisdiction="US")
        await s.client.track(contact_key, "ping")
        await eventually(lambda: _waiting(s.handle("paused", contact_key), "timer"), timeout=60)
        change = await s.client.holds.set(
            "template:check-in", reason="Wrong prices in the email", by="max", action="kill"
        )

        result = await s.result("paused", contact_key)

        reason = f"{KILLED} {change.hold.id} (template:check-in): Wrong prices in the email"
        assert (result.outcome, result.reason, result.sends) == ("exited", reason, 1)
        [run] = s.journey_runs(contact_key)
        assert (run.outcome, run.reason) == ("exited", reason)
        follow_up = next(d for d in s.deliveries() if d.step_id == "follow-up")
        assert (follow_up.status, follow_up.error) == ("skipped", reason)
        assert [x.step_id for x in s.sent()] == ["hello"]


async def test_a_hold_on_one_jurisdiction_holds_only_its_contacts(
    stack: Stack, contact_key: str
) -> None:
    """The example onboarding journey: held at its first send in Florida, not in Texas."""
    florida, texas = f"{contact_key}-fl", f"{contact_key}-tx"
    await stack.client.identify(florida, emails=["fl@example.com"], jurisdiction="US-FL")
    await stack.client.identify(texas, emails=["tx@example.com"], jurisdiction="US-TX")
    await stack.client.holds.set("jurisdiction:US-FL", reason="State inquiry", by="lee")
    for key in (florida, texas):
        await stack.client.track(key, "signed_up")

    await eventually(
        lambda: asyncio.to_thread(lambda: len(stack.outbox("tx@example.com")) == 1), timeout=60
    )
    await eventually(
        lambda: _waiting(stack.handle("onboarding", florida), "policy:hold"), timeout=60
    )

    assert stack.outbox("fl@example.com") == []
    assert [d for d in stack.deliveries() if d.contact_key == florida] == []


def test_hold_admin_is_usable_without_temporal(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    admin = HoldAdmin(database, journeys={"onboarding"})
    try:
        change = asyncio.run(admin.set("all", reason="Audit", by="lee"))
        lifted = asyncio.run(admin.lift(change.hold.id, by="lee"))
        with pytest.raises(InputError, match="there is no template"):
            HoldAdmin(database, templates={"welcome"}).check_scope("template:welcom")
    finally:
        database.dispose()
    assert change.warning is None and change.batch_job_id is None
    assert lifted.hold.lifted_by == "lee" and lifted.warning is not None


# --- 1,000 journeys on the real dev server ------------------------------------------

# Starting 1,000 journeys takes 12-25 s on two idle cores, and past 40 s on two busy
# ones: the wait outlasts that, so the hold is set while every journey still sleeps
# before its send (the test checks it did, rather than trust the clock).
ABOUT_TO_SEND = """\
name: about-to-send
version: 1
trigger: {event: ping}
steps:
  - id: pause
    wait: 75s
  - id: hello
    send: {template: welcome, purpose: service, topic: onboarding}
"""
PAUSE_SECONDS = 75
JOURNEYS = 1_000


@pytest.mark.timeout(360)
async def test_a_hold_stops_1000_journeys_about_to_send_and_one_batch_signal_resumes_them(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> None:
    """Zero sends while held; after the lift, every journey sends exactly once, woken by
    the batch signal (well before their own recheck timers, 5 minutes after they stopped)."""
    journeys = paused_journey(tmp_path, ABOUT_TO_SEND)
    async with running_stack(
        dev_server, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=journeys
    ) as s:
        keys = [f"bulk-{n:04d}-{tmp_path.name[-6:]}" for n in range(JOURNEYS)]
        with s.database.session() as session:
            for key in keys:
                upsert_contact(
                    session=session,
                    data=IdentifyContact(
                        key=key, emails=[f"{key}@bulk.example"], jurisdiction="US"
                    ),
                    now=datetime.now(UTC),
                )
        began = time.monotonic()
        semaphore = asyncio.Semaphore(50)

        async def start(key: str) -> None:
            async with semaphore:
                await s.client.track(key, "ping")

        await asyncio.gather(*(start(key) for key in keys))
        started = time.monotonic() - began
        change = await s.client.holds.set("all", reason="Legal hold: case 42", by="lee")
        hold_set = time.monotonic() - began
        assert hold_set < PAUSE_SECONDS, "the first journeys' wait ended before the hold was set"

        held = 'Journey="about-to-send" AND WaitingFor="policy:hold" AND ExecutionStatus="Running"'
        await eventually(lambda: _count(s, held, JOURNEYS), timeout=120, interval=1)
        all_held = time.monotonic() - began
        await asyncio.sleep(2)  # anything about to slip through would show now
        sent_while_held = await asyncio.to_thread(lambda: len(s.outbox()))
        claimed_while_held = len(s.deliveries())

        lifted_at = time.monotonic()
        lift = await s.client.holds.lift(change.hold.id, by="lee", reason="Case closed")
        # Counted in the database: parsing the outbox every second would slow the worker
        # (one process) down; it is read once at the end.
        await eventually(
            lambda: asyncio.to_thread(_sent, s.database, JOURNEYS),
            timeout=HOLD_RECHECK.total_seconds() - 60,
            interval=1,
        )
        resumed = time.monotonic() - lifted_at
        await asyncio.sleep(2)  # a second copy of anything would show now

        print(
            f"\n{JOURNEYS} journeys: started in {started:.1f}s, hold set at {hold_set:.1f}s, "
            f"all held at {all_held:.1f}s, all sent {resumed:.1f}s after the lift"
        )
        assert sent_while_held == 0 and claimed_while_held == 0
        assert lift.warning is None and lift.batch_job_id is not None
        recipients = [m.to for m in await asyncio.to_thread(s.outbox)]
        assert sorted(recipients) == sorted(f"{key}@bulk.example" for key in keys)
        rows = s.deliveries()
        assert len(rows) == JOURNEYS and {r.status for r in rows} == {"sent"}
        await eventually(lambda: _count(s, held, 0), timeout=30)
        with s.database.session() as session:
            record = session.get(HoldRecord, change.hold.id)
        assert record is not None and record.lift_reason == "Case closed"


def _sent(database: Database, expected: int) -> bool:
    with database.session() as session:
        rows = session.exec(select(Delivery.id).where(Delivery.status == "sent")).all()
    return len(rows) >= expected


async def _count(s: Stack, query: str, expected: int) -> bool:
    return (await s.temporal.count_workflows(query)).count == expected
