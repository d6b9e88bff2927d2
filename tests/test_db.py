"""The database layer, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from support import AUDIT_KEY, run_onboarding, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings.db import contacts, deliveries, events, journey_runs
from tidings.db.engine import Database
from tidings.db.policy_facts import load_facts
from tidings.errors import InputError, TidingsError, UnknownContactError
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.journey import Reentry
from tidings.models.policy import Message, PolicyConfig
from tidings.models.tables import SCHEMA_VERSION
from tidings.starter.smtp_sink import SmtpSink

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, audit_key=AUDIT_KEY)
    yield database
    database.dispose()


def identify(db: Database, **fields: object) -> None:
    with db.session() as session:
        contacts.upsert_contact(
            session=session, data=IdentifyContact.model_validate(fields), now=NOW
        )


def test_identify_merges_traits_and_keeps_every_identity(db: Database) -> None:
    identify(db, key="c1", emails=["Ann@Example.com"], traits={"tier": "gold", "age": 40})
    identify(
        db,
        key="c1",
        emails=["ann.work@example.com"],
        phones=["+1 (415) 555-0123"],
        timezone="America/Chicago",
        traits={"age": None, "plan": "pro"},
    )
    with db.session() as session:
        view = contacts.get_contact(session=session, key="c1")
        first_email = contacts.primary_address(session=session, key="c1", kind="email")
    assert view.emails == ["ann@example.com", "ann.work@example.com"]
    assert view.phones == ["+14155550123"]
    assert view.traits == {"tier": "gold", "plan": "pro"}
    assert (view.timezone, first_email) == ("America/Chicago", "ann@example.com")


def test_a_push_goes_to_the_newest_token_and_the_policy_checks_that_one(db: Database) -> None:
    """An app registers a new token on reinstall; the first one is dead by then."""
    identify(db, key="c1", emails=["a@example.com"], push_tokens=["old-token"])
    identify(db, key="c1", emails=["b@example.com"], push_tokens=["new-token"])
    with db.session() as session:
        push = contacts.primary_address(session=session, key="c1", kind="push")
        email = contacts.primary_address(session=session, key="c1", kind="email")
        checked = load_facts(
            session=session,
            contact_key="c1",
            message=Message(channel="push", purpose="service", topic=""),
            now=NOW,
            config=PolicyConfig(),
            default_timezone="UTC",
        ).message.address
    assert (push, email, checked) == ("new-token", "a@example.com", "new-token")


def test_an_address_of_another_contact_is_refused_and_nothing_is_written(db: Database) -> None:
    identify(db, key="c1", emails=["ann@example.com"])
    with pytest.raises(InputError, match="already belongs to contact 'c1'"):
        identify(db, key="c2", emails=["bob@example.com", "ann@example.com"])
    with db.session() as session, pytest.raises(UnknownContactError):
        contacts.get_contact(session=session, key="c2")


def test_times_come_back_aware_and_in_utc(db: Database) -> None:
    local = NOW.astimezone(ZoneInfo("Asia/Tokyo"))
    with db.session() as session:
        contacts.upsert_contact(session=session, data=IdentifyContact(key="c1"), now=local)
    with db.session() as session:
        run = journey_runs.admit(
            session=session,
            journey="j",
            version=1,
            contact_key="c1",
            workflow_id="w",
            run_id="r1",
            reentry=Reentry(),
            now=local,
        )
        stored = journey_runs.latest_entry(session=session, journey="j", contact_key="c1")
    assert run.admitted and stored is not None
    assert stored.entered_at == NOW and stored.entered_at.tzinfo == UTC


def test_an_event_id_is_recorded_once(db: Database) -> None:
    identify(db, key="c1")
    event = JourneyEvent(
        event_id="e1", name="signed_up", properties={"plan": "pro"}, occurred_at=NOW
    )
    with db.session() as session:
        first = events.record_event(session=session, contact_key="c1", event=event, now=NOW)
        events.mark_routed(session=session, event_id="e1", now=NOW)
    with db.session() as session:
        again = events.record_event(session=session, contact_key="c1", event=event, now=NOW)
    assert (first.already_routed, again.already_routed) == (False, True)
    with db.session() as session, pytest.raises(InputError, match="already used"):
        events.record_event(
            session=session,
            contact_key="c1",
            event=event.model_copy(update={"name": "other"}),
            now=NOW,
        )


def admit(db: Database, run_id: str, reentry: Reentry, now: datetime) -> journey_runs.Admission:
    with db.session() as session:
        return journey_runs.admit(
            session=session,
            journey="cart",
            version=1,
            contact_key="c1",
            workflow_id="journey/cart/c1",
            run_id=run_id,
            reentry=reentry,
            now=now,
        )


def leave(db: Database, entry: int, now: datetime) -> None:
    with db.session() as session:
        journey_runs.record_exit(
            session=session,
            journey="cart",
            contact_key="c1",
            entry=entry,
            outcome="completed",
            reason="done",
            now=now,
        )


def test_reentry_rules(db: Database) -> None:
    never, cooldown = (
        Reentry(policy="never"),
        Reentry(policy="after_exit", cooldown=timedelta(days=7)),
    )
    assert admit(db, "r1", never, NOW).entry == 1
    assert admit(db, "r1", never, NOW).entry == 1  # a retried activity: same answer
    leave(db, 1, NOW)
    assert not admit(db, "r2", never, NOW + timedelta(days=400)).admitted
    assert not admit(db, "r3", cooldown, NOW + timedelta(days=6, hours=23)).admitted
    assert admit(db, "r4", cooldown, NOW + timedelta(days=7)).entry == 2


def test_an_entry_that_never_recorded_its_exit_is_closed_as_abandoned(db: Database) -> None:
    after_exit = Reentry(policy="after_exit")
    admit(db, "r1", after_exit, NOW)
    assert admit(db, "r2", after_exit, NOW + timedelta(hours=1)).entry == 2
    with db.session() as session:
        runs = journey_runs.runs_for(session=session, contact_key="c1")
    assert [(r.entry, r.outcome) for r in runs] == [(1, "abandoned"), (2, None)]


def test_racing_attempts_at_one_delivery_hand_it_over_once(db: Database) -> None:
    """Each attempt may take a row nothing was handed over from, but only one passes
    the point of no return: whichever took it last, or marked it first."""
    new = deliveries.NewDelivery(
        idempotency_key="journey/cart/c1/1/reminder/1",
        contact_key="c1",
        journey="cart",
        step_id="reminder",
        channel="email",
        template="t",
        purpose="marketing",
        topic="cart",
        scheduled_at=NOW,
    )
    handed_over: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        with db.session() as session:
            claim = deliveries.claim(
                session=session, new=new, to_address="a@example.com", now=NOW, counted_at=NOW
            )
        if claim.verdict == "send":
            with db.session() as session:
                handed_over.append(
                    deliveries.hand_over(session=session, delivery=claim.delivery, now=NOW)
                )

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handed_over.count(True) == 1
    with db.session() as session:
        row = deliveries.find(session=session, idempotency_key=new.idempotency_key)
    assert row is not None and row.status in ("sending", "uncertain")


@pytest.mark.postgres
async def test_a_journey_runs_end_to_end_on_postgresql(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    postgres_url: str,
    contact_key: str,
) -> None:
    async with running_stack(
        time_skipping, data_dir=tmp_path, smtp=smtp, database_url=postgres_url
    ) as stack:
        await run_onboarding(stack, contact_key)


def test_a_database_made_by_another_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_info SET version = 1"))
    engine.dispose()
    with pytest.raises(
        TidingsError, match=f"has schema version 1, and this tidings needs {SCHEMA_VERSION}"
    ):
        Database(url)
