"""Merging two contacts found to be one person: what moves, who wins, what is refused.

The database rules run on SQLite and PostgreSQL; running journeys, aliases and the
anonymous contacts of the Segment API run against a real worker and Temporal's
time-skipping server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from support import AUDIT_KEY, Stack, activity_env, eventually, make_sender
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings import naming
from tidings.activities.policy import PolicyGate
from tidings.db import (
    audit,
    consent,
    contacts,
    events,
    journey_runs,
    preferences,
    suppressions,
)
from tidings.db.audit_chain import verify
from tidings.db.engine import Database
from tidings.db.identities import resolve
from tidings.db.merges import merge_contacts, merges_of
from tidings.errors import InputError
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.journey import Reentry
from tidings.models.merges import MergeOutcome
from tidings.models.policy import ConsentChange, PolicyConfig
from tidings.models.tables import (
    ConsentRecord,
    Contact,
    ContactIdentity,
    ContactMerge,
    Delivery,
    EventRecord,
    PreferenceRecord,
    SuppressionRecord,
)
from tidings.models.workflow_io import PolicyCheckInput, SendInput
from tidings.policy.engine import consent_state
from tidings.settings import Settings
from tidings.starter.cli import app
from tidings.starter.outbox import read_email_outbox
from tidings.starter.policy_admin import PolicyAdmin
from tidings.starter.smtp_sink import SmtpSink

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
EVIDENCE = "same Stripe customer, support ticket 4411"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, audit_key=AUDIT_KEY)
    yield database
    database.dispose()


def identify(db: Database, at: datetime, **fields: Any) -> None:
    with db.session() as session:
        contacts.upsert_contact(
            session=session, data=IdentifyContact.model_validate(fields), now=at
        )


def merge(db: Database, survivor: str, merged: str, at: datetime = T0) -> MergeOutcome:
    with db.session() as session:
        return merge_contacts(
            session=session, survivor=survivor, merged=merged, evidence=EVIDENCE, now=at
        )


def grant(db: Database, key: str, channel: str, at: datetime, **fields: Any) -> None:
    change = ConsentChange(
        contact_key=key,
        channel=channel,
        basis="express",
        source="signup form",
        proof={"form": "signup"},
        effective_at=at,
        **fields,
    )
    with db.session() as session:
        consent.record_change(session=session, change=change, jurisdiction=None, now=at)


def revoke(db: Database, key: str, channel: str, at: datetime, **fields: Any) -> None:
    change = ConsentChange(
        contact_key=key,
        channel=channel,
        action="revoke",
        source="unsubscribe link",
        effective_at=at,
        **fields,
    )
    with db.session() as session:
        consent.record_change(session=session, change=change, jurisdiction=None, now=at)


def may_send(db: Database, key: str, channel: str, purpose: str = "marketing") -> bool:
    with db.session() as session:
        ledger = consent.ledger(session=session, contact_key=key)
    state = consent_state(
        ledger,
        channel=channel,
        purpose=purpose,
        topic="general",
        now=T0 + timedelta(days=9),
        packs=[],
    )
    return state.entry_id is not None


def everything(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row a merge could touch, to show that a refused one touched none."""
    tables: list[Any] = [
        Contact,
        ContactIdentity,
        ContactMerge,
        ConsentRecord,
        SuppressionRecord,
        PreferenceRecord,
        EventRecord,
        Delivery,
    ]
    with db.session() as session:
        return {
            table.__tablename__: sorted(
                (row.model_dump(mode="json") for row in session.exec(select(table))), key=str
            )
            for table in tables
        }


def delivery(key: str, number: int) -> Delivery:
    return Delivery(
        id=f"d{number}",
        idempotency_key=f"journey/onboarding/{key}/1/welcome/{number}",
        contact_key=key,
        journey="onboarding",
        step_id="welcome",
        channel="email",
        template="welcome",
        purpose="service",
        status="sent",
        scheduled_at=T0,
        updated_at=T0,
    )


def test_identities_move_and_the_merged_key_resolves_to_the_survivor(db: Database) -> None:
    identify(db, T0, key="ann", emails=["ann@example.com"], push_tokens=["token-ann-old"])
    identify(
        db,
        T0 - timedelta(days=30),
        key="ann-2",
        emails=["ann.work@example.com"],
        phones=["+447700900123"],
        push_tokens=["token-ann-2-new"],
        devices=["ios-1"],
    )
    with db.session() as session:  # ann-2's token was registered after ann's
        row = session.exec(
            select(ContactIdentity).where(ContactIdentity.value == "token-ann-2-new")
        ).one()
        row.created_at = T0 + timedelta(hours=1)

    outcome = merge(db, "ann", "ann-2", at=T0 + timedelta(days=1))

    assert (outcome.survivor, outcome.merged, outcome.moved.identities) == ("ann", "ann-2", 4)
    with db.session() as session:
        view = contacts.get_contact(session=session, key="ann")
        email = contacts.primary_address(session=session, key="ann", kind="email")
        push = contacts.primary_address(session=session, key="ann", kind="push")
        tombstone = session.get(Contact, "ann-2")
        assert tombstone is not None
    # The survivor's own address stays first, whatever the merged contact's age.
    assert view.emails == ["ann@example.com", "ann.work@example.com"]
    assert (email, push) == ("ann@example.com", "token-ann-2-new")
    assert (view.phones, view.devices) == (["+447700900123"], ["ios-1"])
    assert (tombstone.merged_into, tombstone.traits) == ("ann", {})
    assert {resolved(db, r) for r in ("ann-2", "email:ann.work@example.com", "device:ios-1")} == {
        "ann"
    }


def resolved(db: Database, ref: str) -> str:
    with db.session() as session:
        return resolve(session=session, ref=ref)


def test_the_newest_value_of_each_trait_wins_and_the_survivor_on_ties(db: Database) -> None:
    identify(db, T0, key="a", traits={"plan": "basic", "city": "Leeds", "tier": "gold"})
    identify(db, T0, key="b", traits={"tier": "silver"}, timezone="Europe/London")
    identify(db, T0 + timedelta(days=1), key="b", traits={"plan": "pro", "age": 41})
    identify(db, T0 + timedelta(days=2), key="a", traits={"city": "York"})

    outcome = merge(db, "a", "b", at=T0 + timedelta(days=3))

    with db.session() as session:
        view = contacts.get_contact(session=session, key="a")
    assert view.traits == {"plan": "pro", "city": "York", "tier": "gold", "age": 41}
    assert outcome.moved.traits == ["age", "plan"]
    assert view.timezone == "Europe/London"  # the survivor had none


def test_identify_with_a_merged_key_updates_the_survivor(db: Database) -> None:
    identify(db, T0, key="a")
    identify(db, T0, key="b")
    merge(db, "a", "b")
    identify(db, T0 + timedelta(days=1), key="b", traits={"plan": "pro"})
    with db.session() as session:
        assert contacts.get_contact(session=session, key="a").traits == {"plan": "pro"}


def test_consent_the_most_restrictive_wins_and_the_ledger_is_only_appended_to(
    db: Database,
) -> None:
    for key in ("a", "b"):
        identify(db, T0, key=key, jurisdiction="GB")
    revoke(db, "b", "email", T0 + timedelta(days=1), purpose="marketing")
    grant(db, "a", "email", T0 + timedelta(days=2))  # later, but b had said no
    grant(db, "b", "sms", T0 + timedelta(days=1))  # a never said anything about SMS
    revoke(db, "a", "push", T0, purpose=None)  # a turned push off altogether...
    grant(db, "b", "push", T0 + timedelta(days=1))  # ...b turned push marketing on
    grant(db, "a", "webhook", T0)
    with db.session() as session:
        before = [r.model_dump() for r in session.exec(select(ConsentRecord))]
    assert may_send(db, "a", "email") and may_send(db, "b", "push")

    outcome = merge(db, "a", "b", at=T0 + timedelta(days=3))

    assert not may_send(db, "a", "email")
    assert may_send(db, "a", "sms")
    assert not may_send(db, "a", "push")
    assert may_send(db, "a", "webhook")
    with db.session() as session:
        after = [r.model_dump() for r in session.exec(select(ConsentRecord))]
        carried = consent.ledger(session=session, contact_key="a", channel="sms")
    assert after[: len(before)] == before  # nothing rewritten
    # b's revocation and SMS grant, and the revocation of a's later email grant
    assert len(after) - len(before) == outcome.moved.consent_lines == 3
    [sms] = carried
    assert sms.source == "merge:b"
    assert sms.effective_at == T0 + timedelta(days=1)  # a consent's age is kept
    assert sms.proof["merged_from"] == "b" and sms.proof["proof"] == {"form": "signup"}


def test_suppressions_preferences_events_and_deliveries_move(db: Database) -> None:
    identify(db, T0, key="a")
    identify(db, T0, key="b")
    event = JourneyEvent(event_id="evt-b-1", name="signed_up", occurred_at=T0)
    with db.session() as session:
        suppressions.suppress(session=session, reason="complaint", now=T0, contact_key="b")
        preferences.set_preference(
            session=session,
            contact_key="a",
            channel="email",
            topic="news",
            subscribed=True,
            now=T0,
        )
        preferences.set_preference(
            session=session,
            contact_key="b",
            channel="email",
            topic="news",
            subscribed=False,
            now=T0,
        )
        preferences.set_preference(
            session=session,
            contact_key="b",
            channel="sms",
            topic="offers",
            subscribed=True,
            now=T0,
        )
        events.record_event(session=session, contact_key="b", event=event, now=T0)
        session.add_all([delivery("b", 1), delivery("b", 2), delivery("a", 3)])

    outcome = merge(db, "a", "b")

    moved = outcome.moved
    assert (moved.suppressions, moved.preferences, moved.events, moved.deliveries) == (1, 2, 1, 2)
    with db.session() as session:
        active = suppressions.active_for(session=session, contact_key="a", addresses=[])
        prefs = {
            (p.channel, p.topic): p.subscribed
            for p in preferences.preferences_for(session=session, contact_key="a")
        }
        history = [d.id for d in session.exec(select(Delivery).where(Delivery.contact_key == "a"))]
        stored = session.get(EventRecord, "evt-b-1")
        assert stored is not None
        left = preferences.preferences_for(session=session, contact_key="b")
    assert [s.reason for s in active] == ["complaint"]
    assert prefs == {("email", "news"): False, ("sms", "offers"): True}  # unsubscribe wins
    assert sorted(history) == ["d1", "d2", "d3"]
    assert (stored.contact_key, left) == ("a", [])


async def test_consent_given_under_a_merged_key_lands_on_the_survivor(db: Database) -> None:
    identify(db, T0, key="a", jurisdiction="GB")
    identify(db, T0, key="b")
    merge(db, "a", "b")
    admin = PolicyAdmin(db, sms_help_text="")

    entry = await admin.revoke("b", channel="email", source="unsubscribe link")
    held = await admin.suppress("b", reason="complaint")
    await admin.set_preference("b", channel="email", topic="news", subscribed=False)

    assert (entry.contact_key, held.contact_key) == ("a", "a")
    with db.session() as session:
        chosen = preferences.preferences_for(session=session, contact_key="a")
    assert [(p.topic, p.subscribed) for p in chosen] == [("news", False)]


def test_different_ids_in_one_source_system_refuse_the_merge_and_change_nothing(
    db: Database,
) -> None:
    identify(db, T0, key="a", external_ids={"stripe": "cus_1", "zendesk": "77"}, traits={"x": 1})
    identify(db, T0, key="b", external_ids={"stripe": "cus_2"}, emails=["b@example.com"])
    grant(db, "b", "sms", T0)
    before = everything(db)

    with pytest.raises(InputError) as caught:
        merge(db, "a", "b")

    message = str(caught.value)
    assert "refusing to merge 'b' into 'a': they have different stripe ids" in message
    assert "('cus_2' and 'cus_1')" in message
    assert everything(db) == before


def test_same_id_in_one_source_system_is_no_conflict(db: Database) -> None:
    identify(db, T0, key="a", external_ids={"stripe": "cus_1"})
    identify(db, T0, key="b", external_ids={"zendesk": "77"})
    assert merge(db, "a", "b").moved.identities == 1
    assert resolved(db, "external:zendesk:77") == "a"


def test_a_merge_is_recorded_on_both_sides_and_in_both_audit_chains(db: Database) -> None:
    for key in ("a", "b", "c"):
        identify(db, T0, key=key)
    merge(db, "b", "c", at=T0)
    merge(db, "a", "b", at=T0 + timedelta(hours=1))

    with db.session() as session:
        of_b = [(m.survivor, m.merged, m.evidence) for m in merges_of(session=session, key="b")]
        of_c = [(m.survivor, m.merged) for m in merges_of(session=session, key="c")]
        trail = {
            key: [(r.kind, r.action) for r in audit.for_contact(session=session, contact_key=key)]
            for key in ("a", "b")
        }
        intact = verify(session, AUDIT_KEY).intact
    assert of_b == [("b", "c", EVIDENCE), ("a", "b", EVIDENCE)]
    assert of_c == [("b", "c")]
    assert trail == {
        "a": [("contact", "absorbed")],
        "b": [("contact", "absorbed"), ("contact", "merged")],
    }
    assert intact
    # c was merged into b before b into a: c now resolves to a in one step.
    assert resolved(db, "c") == "a"


def test_merging_again_returns_the_earlier_merge_and_other_misuse_is_refused(
    db: Database,
) -> None:
    for key in ("a", "b", "x"):
        identify(db, T0, key=key)
    first = merge(db, "a", "b")
    again = merge(db, "a", "b", at=T0 + timedelta(days=1))
    assert (again.already, again.id, again.merged_at) == (True, first.id, first.merged_at)
    with pytest.raises(InputError, match="'b' was merged into 'a' on 2026-11-01; merge 'a'"):
        merge(db, "x", "b")
    with pytest.raises(InputError, match="'x' and 'x' are the same contact"):
        merge(db, "x", "x")
    with db.session() as session, pytest.raises(InputError, match="needs its evidence"):
        merge_contacts(session=session, survivor="a", merged="x", evidence=" ", now=T0)


def test_the_cli_lists_a_contacts_merges(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    database = Database.for_settings(settings)
    for key in ("cus-a", "cus-b"):
        identify(database, T0, key=key, traits={"plan": key})
    identify(
        database,
        T0 + timedelta(days=1),
        key="cus-b",
        emails=["b@example.com"],
        traits={"plan": "pro"},
    )
    with database.session() as session:
        session.add(delivery("cus-b", 1))
    merge(database, "cus-a", "cus-b", at=T0 + timedelta(days=2))
    database.dispose()
    runner = CliRunner()

    listed = runner.invoke(app, ["contacts", "merges", "cus-b", "--data-dir", str(tmp_path)])
    as_json = runner.invoke(
        app, ["contacts", "merges", "cus-a", "--json", "--data-dir", str(tmp_path)]
    )
    never = runner.invoke(app, ["contacts", "merges", "nobody", "--data-dir", str(tmp_path)])

    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "2026-11-03 09:00 UTC  merge 1: cus-b into cus-a",
        f"  evidence: {EVIDENCE}",
        "  moved: 1 identities, 1 deliveries",
        "  traits from cus-b: plan",
    ]
    assert as_json.exit_code == 0
    assert '"survivor": "cus-a"' in as_json.output and '"deliveries": 1' in as_json.output
    assert never.exit_code == 1
    assert "contact 'nobody' is unknown" in never.output


def in_flight_send(key: str, **changes: Any) -> SendInput:
    """A send a journey scheduled before it heard of its contact's merge."""
    signup = JourneyEvent(event_id="e1", name="signed_up", occurred_at=T0)
    values: dict[str, Any] = {
        "trigger": signup,
        "event": signup,
        "idempotency_key": f"journey/welcome/{key}/1/hello/1",
        "journey": "onboarding",
        "version": 1,
        "step_id": "hello",
        "contact_key": key,
        "template": "welcome",
        "purpose": "transactional",
        "topic": "general",
        "scheduled_at": datetime.now(UTC),
    }
    values.update(changes)
    return SendInput.model_validate(values)


def test_a_send_in_flight_during_a_merge_goes_to_the_survivor(
    db: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    identify(db, T0, key="ada", jurisdiction="US", emails=["ada@example.com"])
    identify(db, T0, key="ada-old", jurisdiction="US", emails=["ada.old@example.com"])
    merge(db, "ada", "ada-old")
    sender = make_sender(db, smtp, tmp_path)

    result = activity_env().run(sender.send_email, in_flight_send("ada-old"))

    [message] = read_email_outbox(smtp.maildir_path)
    with db.session() as session:
        [row] = session.exec(select(Delivery)).all()
        expected = contacts.primary_address(session=session, key="ada", kind="email")
    assert result.status == "sent", result.detail
    assert (row.contact_key, row.to_address, message.to) == ("ada", expected, expected)


def test_a_send_in_flight_during_a_merge_is_judged_by_the_survivors_consent(
    db: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    """Marketing email in Germany needs express consent; the survivor gave it after the
    merge, so the merged key's message may go (its own ledger would say no)."""
    identify(db, T0, key="ada", jurisdiction="DE", emails=["ada@example.com"])
    identify(db, T0, key="ada-old", jurisdiction="DE", emails=["ada.old@example.com"])
    merge(db, "ada", "ada-old")
    grant(db, "ada", "email", datetime.now(UTC) - timedelta(minutes=1))
    sender = make_sender(db, smtp, tmp_path)
    planned = PolicyGate(db, PolicyConfig(), default_timezone="UTC")
    cart = JourneyEvent(
        event_id="e2",
        name="cart_updated",
        properties={"total": 20.0, "currency": "EUR", "cart_url": "https://shop.example/c/1"},
        occurred_at=T0,
    )
    send = in_flight_send(
        "ada-old", purpose="marketing", template="cart-reminder", trigger=cart, event=cart
    )
    check = PolicyCheckInput(
        **send.model_dump(
            include={
                "idempotency_key",
                "journey",
                "step_id",
                "contact_key",
                "template",
                "purpose",
                "topic",
            }
        ),
        channel="email",
        now=datetime.now(UTC),
    )

    decision = activity_env().run(planned.check_policy, check)
    result = activity_env().run(sender.send_email, send)

    assert decision.action == "send", decision
    assert result.status == "sent", result
    assert [m.to for m in read_email_outbox(smtp.maildir_path)] == ["ada@example.com"]


def test_the_reentry_policy_counts_the_merged_contacts_entries(db: Database) -> None:
    """ada-old went through onboarding (`never` again) before the merge: ada, now the
    same person, is refused; a journey only ada entered is unaffected."""
    identify(db, T0, key="ada", jurisdiction="US", emails=["ada@example.com"])
    identify(db, T0, key="ada-old", jurisdiction="US", emails=["ada.old@example.com"])
    never, cooldown = Reentry(policy="never"), Reentry(policy="after_exit", cooldown="30d")

    def admit(journey: str, key: str, reentry: Reentry, at: datetime) -> journey_runs.Admission:
        with db.session() as session:
            return journey_runs.admit(
                session=session,
                journey=journey,
                version=1,
                contact_key=key,
                workflow_id=f"journey/{journey}/{key}",
                run_id=f"run-{journey}-{key}",
                reentry=reentry,
                now=at,
            )

    for journey in ("onboarding", "renewal"):
        admit(journey, "ada-old", never, T0)
        with db.session() as session:
            journey_runs.record_exit(
                session=session,
                journey=journey,
                contact_key="ada-old",
                entry=1,
                outcome="completed",
                reason="done",
                now=T0 + timedelta(days=1),
            )
    merge(db, "ada", "ada-old", at=T0 + timedelta(days=2))
    later = T0 + timedelta(days=3)

    onboarding, renewal, checkout = (
        admit("onboarding", "ada", never, later),
        admit("renewal", "ada", cooldown, later),
        admit("checkout", "ada", never, later),
    )

    assert not onboarding.admitted and "policy is `never`" in onboarding.reason
    assert not renewal.admitted and "cooldown of 30d" in renewal.reason
    assert (checkout.admitted, checkout.entry) == (True, 1)


# Running journeys, aliases and anonymous contacts: a real worker.


async def welcome_sent(stack: Stack, to: str) -> None:
    """The journey's first email reached the SMTP server (it sends before any timer)."""

    async def arrived() -> bool:
        return any(s.to == to for s in stack.sent())

    await eventually(arrived)


async def is_running(stack: Stack, workflow_id: str) -> bool:
    try:
        description = await stack.temporal.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return description.status == WorkflowExecutionStatus.RUNNING


async def test_a_merged_contacts_journey_continues_for_the_survivor_and_hears_its_events(
    stack: Stack, time_skipping: WorkflowEnvironment
) -> None:
    await stack.client.identify("ada", jurisdiction="US", emails=["ada@example.com"])
    await stack.client.identify("ada-old", jurisdiction="US", emails=["ada.old@example.com"])
    await stack.client.track("ada-old", "signed_up")
    await welcome_sent(stack, "ada.old@example.com")  # now asleep until tomorrow

    outcome = await stack.client.merge("ada", "email:ada.old@example.com", evidence=EVIDENCE)
    retried = await stack.client.merge("ada", "ada-old", evidence=EVIDENCE)

    old_journey = naming.journey_workflow_id("onboarding", "ada-old")
    assert outcome.moved.journeys_continued == {old_journey: "onboarding"}
    assert retried.already
    # A trigger for ada joins the journey ada-old started instead of starting another.
    again = await stack.client.track("ada", "signed_up", event_id="evt-again")
    assert again.triggered == ["onboarding"]
    assert not await is_running(stack, naming.journey_workflow_id("onboarding", "ada"))

    async def listed_for_ada() -> bool:
        [listed] = await stack.client.status("ada")
        assert listed.workflow_id == old_journey
        return listed.status is not None and listed.status.contact_key == "ada"

    await eventually(listed_for_ada)  # the journey addresses ada once it took the signal

    await time_skipping.sleep(timedelta(days=3))  # the tips went out on the morning of day 2
    woke = await stack.client.track("email:ada@example.com", "activated")
    result = await stack.result("onboarding", "ada-old")

    assert woke.woke == ["onboarding"]
    assert (result.outcome, result.sends) == ("converted", 2)
    assert [(s.to, s.step_id) for s in stack.sent()] == [
        ("ada.old@example.com", "welcome"),
        ("ada@example.com", "tips"),
    ]
    assert {d.contact_key for d in stack.deliveries()} == {"ada"}
    [run] = stack.journey_runs("ada-old")  # recorded under the key it started with
    assert (run.outcome, run.exited_at is not None) == ("converted", True)


async def test_when_both_are_in_the_journey_the_merged_contacts_entry_ends(
    stack: Stack,
) -> None:
    await stack.client.identify("bo", jurisdiction="US", emails=["bo@example.com"])
    await stack.client.identify("bo-2", jurisdiction="US", emails=["bo.2@example.com"])
    await stack.client.track("bo", "signed_up")
    await stack.client.track("bo-2", "signed_up")
    await welcome_sent(stack, "bo@example.com")
    await welcome_sent(stack, "bo.2@example.com")

    outcome = await stack.client.merge("bo", "bo-2", evidence=EVIDENCE)
    ended = await stack.result("onboarding", "bo-2")
    kept = await stack.result("onboarding", "bo")

    assert outcome.moved.journeys_ended == {
        naming.journey_workflow_id("onboarding", "bo-2"): "onboarding"
    }
    assert (ended.outcome, ended.reason) == (
        "exited",
        "merged into bo, already in this journey",
    )
    assert (kept.outcome, kept.sends) == ("completed", 3)
    assert sorted((s.to, s.step_id) for s in stack.sent()) == [
        ("bo.2@example.com", "welcome"),
        ("bo@example.com", "check-in"),
        ("bo@example.com", "tips"),
        ("bo@example.com", "welcome"),
    ]
    [run] = stack.journey_runs("bo-2")
    assert (run.outcome, run.reason) == ("exited", "merged into bo, already in this journey")


async def test_an_anonymous_visitor_who_signs_up_is_merged_into_the_user(stack: Stack) -> None:
    client = stack.client
    visitor = await client.contact_for(user_id=None, anonymous_id="anon-7f3a")
    assert visitor.startswith("anon-") and "7f3a" not in visitor  # a random key
    assert await client.contact_for(user_id=None, anonymous_id="anon-7f3a") == visitor
    await client.track(visitor, "session_started", event_id="evt-visit")

    user = await client.contact_for(user_id="u-42", anonymous_id="anon-7f3a")

    assert user == "u-42"
    assert await client.resolve("anonymous:anon-7f3a") == "u-42"
    assert await client.resolve(visitor) == "u-42"
    [record] = await client.merges("u-42")
    assert (record.survivor, record.merged) == ("u-42", visitor)
    with stack.database.session() as session:
        assert _event_owner(session, "evt-visit") == "u-42"


async def test_a_known_person_sharing_a_browser_is_not_merged(stack: Stack) -> None:
    client = stack.client
    await client.contact_for(user_id="u-1", anonymous_id="browser-1")
    other = await client.contact_for(user_id="u-2", anonymous_id="browser-1")
    assert other == "u-2"
    assert await client.resolve("anonymous:browser-1") == "u-1"
    assert await client.merges("u-2") == []


async def test_alias_links_a_previous_id_to_the_user_once(stack: Stack) -> None:
    client = stack.client
    visitor = await client.contact_for(user_id=None, anonymous_id="anon-1")
    await client.identify("u-9", emails=["u9@example.com"])

    first = await client.alias("anon-1", "u-9")
    again = await client.alias(visitor, "u-9")
    unseen = await client.alias("anon-never-seen", "u-9")
    same = await client.alias("anon-never-seen", "u-9")

    assert (first.survivor, first.merged, first.already) == ("u-9", visitor, False)
    assert (again.id, again.already) == (first.id, True)
    assert (unseen.survivor, unseen.already) == ("u-9", False)
    assert (same.id, same.already) == (None, True)
    assert await client.resolve("anonymous:anon-never-seen") == "u-9"
    assert [m.id for m in await client.merges("u-9")] == [first.id, unseen.id]


def _event_owner(session: Session, event_id: str) -> str | None:
    record = session.get(EventRecord, event_id)
    return record.contact_key if record else None
