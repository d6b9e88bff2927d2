"""Segments: named sets of contacts by traits and recent events, used by journeys.

Scenarios: files that load or are refused with one precise message each;
membership on a fixed clock (events just inside and just outside the window);
a trigger that starts a journey only for members; a branch that takes each
path when membership changed while the journey slept; the CLI; and a journey
naming an unknown segment refused before anything starts.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session
from support import EXAMPLE_TEMPLATES, Stack, eventually, running_stack
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings import naming
from tidings.catalog import Catalog
from tidings.db import events, segments
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.errors import SpecError
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.expressions import (
    STEP_ROOTS,
    ExpressionError,
    check_expression,
    evaluate,
)
from tidings.models.expressions import segments_read as names_read
from tidings.models.segment import Segment
from tidings.models.workflow_io import JourneyStatus
from tidings.segment_files import load_segment, load_segments
from tidings.settings import PACKAGE_DIR
from tidings.starter.cli import app as cli
from tidings.starter.smtp_sink import SmtpSink

EXAMPLE_SEGMENTS = PACKAGE_DIR / "segments"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""The fixed clock membership is evaluated at (never the wall clock)."""

runner = CliRunner()


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def at_risk() -> Segment:
    return load_segments(EXAMPLE_SEGMENTS)["at-risk"]


# Loading and validation


def test_the_example_segments_load_with_their_metadata() -> None:
    found = load_segments(EXAMPLE_SEGMENTS)
    assert set(found) == {"at-risk", "engaged-buyers"}
    segment = found["at-risk"]
    assert (segment.owner, segment.tags) == ("lifecycle-team", ["retention", "billing"])
    assert segment.conditions() == [
        "where contact.traits.plan == 'pro'",
        "no session_started in the last 30d",
    ]
    assert found["engaged-buyers"].conditions() == [
        "order_completed at least 2 times in the last 90d",
        "session_started at least once in the last 7d",
    ]


GOOD = "name: {name}\nowner: lifecycle-team\ndescription: Quiet pro customers\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "tagz: [retention]\nwhere: \"contact.traits.plan == 'pro'\"\n",
            ":4: tagz: unknown field; the fields here are: name, owner, description, tags, "
            "where, events (check the spelling)",
        ),
        (
            "events:\n  - performed: login\n    within: 30d\n    atleast: 2\n",
            ":7: events[0].atleast: unknown field; the fields here are: performed, "
            "not_performed, within, at_least, at_most",
        ),
        (
            "where: \"contact.plan == 'pro'\"\n",
            ":4: where: \"contact.plan == 'pro'\" reads contact.plan, which contacts do not "
            "have (fields: key, timezone, locale, traits); if it is a trait, write "
            "contact.traits.plan",
        ),
        (
            'where: "contact.traits.plan =="\n',
            ":4: where: cannot parse",
        ),
        (
            "where: \"event.name == 'login'\"\n",
            ":4: where: \"event.name == 'login'\" uses 'event', which is not available here; "
            "use one of: contact",
        ),
        (
            "events:\n  - performed: login\n    within: 30 days\n",
            ":6: events[0].within: '30 days' is not a duration; write it like 90s, 15m, "
            "1h30m, 2d or 1w",
        ),
        (
            "events:\n  - performed: login\n",
            ":5: events[0].within: required; add the window events are counted over, "
            "e.g. `within: 30d`",
        ),
        (
            "events:\n  - performed: login\n    not_performed: login\n    within: 3d\n",
            ":5: events[0]: an event condition needs exactly one of `performed: EVENT` or "
            "`not_performed: EVENT`",
        ),
        (
            "events:\n  - not_performed: login\n    within: 3d\n    at_least: 2\n",
            ":5: events[0]: `not_performed` means no such event at all",
        ),
        (
            "events:\n  - performed: login\n    within: 3d\n    at_least: 3\n    at_most: 1\n",
            ":5: events[0]: `at_least` (3) is more than `at_most` (1)",
        ),
        (
            "where: \"contact.in_segment('other')\"\n",
            ":4: where: \"contact.in_segment('other')\" names a segment; a segment's "
            "conditions read the contact only",
        ),
        ("tags: [retention]\n", ":1: a segment needs `where:`"),
    ],
    ids=[
        "unknown-field",
        "unknown-event-field",
        "field-contacts-lack",
        "malformed-expression",
        "root-not-available",
        "bad-duration",
        "missing-window",
        "both-forms",
        "counts-with-not-performed",
        "impossible-counts",
        "segment-in-segment",
        "no-condition",
    ],
)
def test_a_bad_segment_file_gets_one_message_naming_file_field_and_fix(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = write(tmp_path, "quiet.yaml", GOOD.format(name="quiet") + body)
    with pytest.raises(SpecError) as caught:
        load_segment(path)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(f"{path}{expected}"), caught.value.problems[0]


def test_a_missing_owner_and_a_name_that_differs_from_the_file_are_refused(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "quiet.yaml", "name: quiet\ndescription: d\nwhere: 'contact.key'\n")
    with pytest.raises(SpecError, match=r"quiet.yaml:1: owner: required; add who maintains it"):
        load_segment(path)
    path = write(tmp_path, "quiet.yaml", GOOD.format(name="loud") + "where: 'contact.key'\n")
    with pytest.raises(SpecError, match=r"'loud' differs from the file's name; rename the file"):
        load_segment(path)


def test_a_folder_with_one_bad_file_loads_nothing_and_reports_each(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD.format(name="good") + "where: 'contact.key'\n")
    write(tmp_path, "bad.yaml", GOOD.format(name="bad") + "events: [{performed: x}]\n")
    write(tmp_path, "worse.yaml", "- not a mapping\n")
    with pytest.raises(SpecError) as caught:
        load_segments(tmp_path)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        str(tmp_path / "bad.yaml"),
        str(tmp_path / "worse.yaml"),
    ]


# The expression form journeys use


def test_in_segment_is_checked_like_any_condition() -> None:
    source = "contact.in_segment('at-risk') and not contact.in_segment('engaged-buyers')"
    check_expression(source, roots=STEP_ROOTS, trigger_event="x", trigger_properties={})
    assert names_read(source) == ("at-risk", "engaged-buyers")
    assert names_read("contact.in_segment('at-risk')") == ("at-risk",)
    for bad, message in [
        ("contact.in_segment(name)", "takes one segment name in quotes"),
        ("contact.in_segment('a', 'b')", "takes one segment name in quotes"),
        ("contact.in_segment", "without calling it"),
        ("contact.in_segment.x", "without calling it"),
    ]:
        with pytest.raises(ExpressionError, match=message):
            check_expression(bad, roots=STEP_ROOTS, trigger_event="x", trigger_properties={})


def test_in_segment_reads_the_memberships_loaded_with_the_contact() -> None:
    source = "contact.in_segment('at-risk')"
    assert evaluate(source, {"contact": {"segments": {"at-risk": True}}}) is True
    assert evaluate(source, {"contact": {"segments": {"at-risk": False}}}) is False
    # Not loaded (no contact, or a snapshot from before segments): not a member.
    assert evaluate(source, {"contact": {}}) is False


# Membership on a fixed clock, on SQLite and PostgreSQL


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        db.dispose()


def identify(session: Session, key: str, **traits: str) -> None:
    upsert_contact(
        session=session,
        data=IdentifyContact(key=key, traits=traits),
        now=NOW,
    )


def happened(session: Session, key: str, name: str, ago: timedelta) -> None:
    event = JourneyEvent(event_id=uuid.uuid4().hex, name=name, occurred_at=NOW - ago)
    events.record_event(session=session, contact_key=key, event=event, now=NOW)


def test_membership_by_traits_and_by_events_inside_and_outside_the_window(
    database: Database,
) -> None:
    segment = at_risk()  # plan pro, and no session_started in the last 30 days
    with database.session() as session:
        identify(session, "quiet-pro", plan="pro")
        happened(session, "quiet-pro", "session_started", timedelta(days=30))  # just outside
        identify(session, "active-pro", plan="pro")
        happened(session, "active-pro", "session_started", timedelta(days=29, hours=23))
        identify(session, "quiet-free", plan="free")
        identify(session, "no-plan")
        identify(session, "later-pro", plan="pro")
        happened(session, "later-pro", "session_started", -timedelta(hours=1))  # after NOW

    with database.session() as session:
        member = {
            key: segments.is_member(session=session, segment=segment, contact_key=key, now=NOW)
            for key in ("quiet-pro", "active-pro", "quiet-free", "no-plan", "later-pro")
        }
        # A day later the active contact's session has left the window.
        later = segments.is_member(
            session=session, segment=segment, contact_key="active-pro", now=NOW + timedelta(days=1)
        )
    assert member == {
        "quiet-pro": True,
        "active-pro": False,
        "quiet-free": False,
        "no-plan": False,
        "later-pro": True,
    }
    assert later is True


def test_event_counts_at_least_and_at_most(database: Database, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "regulars.yaml",
        GOOD.format(name="regulars")
        + "events:\n"
        + "  - {performed: order_completed, within: 90d, at_least: 2, at_most: 3}\n",
    )
    segment = load_segment(path)
    with database.session() as session:
        for orders in range(5):
            identify(session, f"buyer-{orders}")
            for day in range(orders):
                happened(session, f"buyer-{orders}", "order_completed", timedelta(days=day + 1))
        happened(session, "buyer-1", "order_completed", timedelta(days=91))  # too old to count
        happened(session, "buyer-1", "order_started", timedelta(days=2))  # another event
    with database.session() as session:
        page = segments.members(session=session, segment=segment, now=NOW, limit=10)
        checks = segments.explain(session=session, segment=segment, contact_key="buyer-1", now=NOW)
    assert (page.keys, page.next_after) == (["buyer-2", "buyer-3"], None)
    assert not checks.member
    assert checks.checks[0].found.startswith("1 order_completed event between 2025-12-01 12:00")


def test_members_are_listed_a_page_at_a_time_with_where_and_events_applied(
    database: Database,
) -> None:
    segment = at_risk()
    with database.session() as session:
        for number in range(7):
            identify(session, f"k{number}", plan="pro" if number % 2 == 0 else "free")
        happened(session, "k2", "session_started", timedelta(days=3))
    pages = []
    after = None
    with database.session() as session:
        while True:
            page = segments.members(session=session, segment=segment, now=NOW, limit=2, after=after)
            pages.append(page.keys)
            if page.next_after is None:
                break
            after = page.next_after
    assert pages == [["k0", "k4"], ["k6"]]


def test_explain_names_the_condition_that_failed(database: Database) -> None:
    with database.session() as session:
        identify(session, "ada", plan="pro")
        happened(session, "ada", "session_started", timedelta(days=2))
    with database.session() as session:
        result = segments.explain(session=session, segment=at_risk(), contact_key="ada", now=NOW)
    assert not result.member
    assert [(c.condition, c.passed) for c in result.checks] == [
        ("where contact.traits.plan == 'pro'", True),
        ("no session_started in the last 30d", False),
    ]
    assert result.checks[1].found == (
        "1 session_started event between 2026-01-30 12:00 and 2026-03-01 12:00 UTC"
    )


# Journeys naming segments


TRIGGERED = """\
name: at-risk-offer
version: 1
trigger:
  event: churn_risk_detected
  where: "contact.in_segment('at-risk')"
reentry: {policy: after_exit}
steps:
  - id: wait-a-day
    wait: 1d
"""

BRANCHING = """\
name: renewal-check
version: 1
trigger:
  event: plan_renewed
reentry: {policy: after_exit}
steps:
  - id: wait-a-week
    wait: 7d
  - id: at-risk-or-not
    branch:
      - when: "contact.in_segment('at-risk')"
        goto: offer
      - else: end
  - id: offer
    send: {template: win-back-offer, purpose: marketing, topic: product-updates}
"""


def test_a_journey_naming_an_unknown_segment_is_refused_at_validation(tmp_path: Path) -> None:
    journeys = tmp_path / "journeys"
    write(journeys, "check.yaml", BRANCHING.replace("'at-risk'", "'at-rsik'"))
    with pytest.raises(SpecError) as caught:
        Catalog.load(journeys, EXAMPLE_TEMPLATES, segments_dir=EXAMPLE_SEGMENTS)
    assert caught.value.problems == [
        f"{journeys / 'check.yaml'}:9: step 'at-risk-or-not': when: names segment 'at-rsik', "
        "which is not defined (known segments: at-risk, engaged-buyers); "
        "add segments/at-rsik.yaml or fix the name"
    ]

    trigger = write(journeys, "trigger.yaml", TRIGGERED.replace("'at-risk'", "'gone'"))
    result = runner.invoke(
        cli,
        ["journeys", "validate", str(trigger)],
        env={"TIDINGS_SEGMENTS_DIR": str(EXAMPLE_SEGMENTS)},
    )
    assert result.exit_code == 1
    assert f"error: {trigger}: trigger.where: names segment 'gone', which is not" in result.stderr
    result = runner.invoke(
        cli,
        ["journeys", "validate", str(write(journeys, "ok.yaml", TRIGGERED))],
        env={"TIDINGS_SEGMENTS_DIR": str(EXAMPLE_SEGMENTS)},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok ")


@pytest.fixture
async def segment_stack(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    journeys = tmp_path / "journeys"
    write(journeys, "at-risk-offer.yaml", TRIGGERED)
    write(journeys, "renewal-check.yaml", BRANCHING)
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=journeys
    ) as stack:
        yield stack


async def test_a_trigger_on_a_segment_starts_the_journey_for_members_only(
    segment_stack: Stack,
) -> None:
    client = segment_stack.client
    await client.identify("carol", jurisdiction="US", traits={"plan": "pro"})
    await client.identify("dan", jurisdiction="US", traits={"plan": "pro"})
    now = await segment_stack.env.get_current_time()
    await client.track("dan", "session_started", occurred_at=now - timedelta(days=1))

    started = await client.track("carol", "churn_risk_detected")
    refused = await client.track("dan", "churn_risk_detected")

    assert (started.triggered, started.skipped) == (["at-risk-offer"], {})
    assert refused.triggered == []
    assert refused.skipped == {
        "at-risk-offer": "trigger condition is false: contact.in_segment('at-risk')"
    }
    assert (await segment_stack.result("at-risk-offer", "carol")).outcome == "completed"
    assert segment_stack.journey_runs("dan") == []


async def test_a_branch_on_a_segment_sees_membership_as_it_is_when_the_branch_runs(
    segment_stack: Stack,
) -> None:
    client = segment_stack.client
    # ada starts on the free plan (not at risk), bob on pro with no sessions (at risk).
    await client.identify(
        "ada", jurisdiction="US", emails=["ada@example.com"], traits={"plan": "free"}
    )
    await client.identify(
        "bob", jurisdiction="US", emails=["bob@example.com"], traits={"plan": "pro"}
    )
    for key in ("ada", "bob"):
        assert (await client.track(key, "plan_renewed")).triggered == ["renewal-check"]

    async def sleeping(key: str) -> bool:
        handle = segment_stack.handle("renewal-check", key)
        status = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
        return (status.step_id, status.waiting_for) == ("wait-a-week", "timer")

    for key in ("ada", "bob"):
        await eventually(functools.partial(sleeping, key))
    # While they sleep (the test server's clock stands still until we wait for a
    # result): ada upgrades, bob comes back.
    await client.identify("ada", traits={"plan": "pro"})
    await client.track("bob", "session_started")

    ada = await segment_stack.result("renewal-check", "ada")
    bob = await segment_stack.result("renewal-check", "bob")

    assert (ada.outcome, ada.sends) == ("completed", 1)
    assert (bob.outcome, bob.sends) == ("completed", 0)
    assert [m.subject for m in segment_stack.outbox("ada@example.com")] == [
        "A month of Acme Pro, on us"
    ]
    assert segment_stack.outbox("bob@example.com") == []


# The CLI


def test_the_cli_lists_shows_checks_and_pages_through_members(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    journeys = tmp_path / "journeys"
    write(journeys, "renewal-check.yaml", BRANCHING)
    env = {"TIDINGS_SEGMENTS_DIR": str(EXAMPLE_SEGMENTS), "TIDINGS_JOURNEYS_DIR": str(journeys)}
    database = Database(f"sqlite:///{(data_dir / 'tidings.db').resolve()}")
    try:
        with database.session() as session:
            for key in ("ada", "bob", "cy"):
                identify(session, key, plan="pro")
            happened(session, "bob", "session_started", timedelta(days=3))
    finally:
        database.dispose()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, [*args, "--data-dir", str(data_dir)], env=env)
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = run("segments", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["at-risk", "lifecycle-team", "[retention,", "billing]"]
    assert "  Paying customers who have gone quiet: on the pro plan" in out
    assert "engaged-buyers" in out
    code, out, _ = run("segments", "list", "--tag", "commerce")
    assert (code, out.split()[0]) == (0, "engaged-buyers")
    assert "at-risk" not in out

    code, out, _ = run("segments", "show", "at-risk")
    assert code == 0
    assert "    - no session_started in the last 30d" in out
    assert "  used by: renewal-check (step 'at-risk-or-not': when)" in out

    code, out, _ = run("segments", "check", "at-risk", "bob", "--at", "2026-03-01T12:00Z")
    assert code == 0
    assert out.splitlines() == [
        "contact bob is not a member of at-risk at 2026-03-01 12:00 UTC",
        "  ok   where contact.traits.plan == 'pro': true",
        "  FAIL no session_started in the last 30d: 1 session_started event between "
        "2026-01-30 12:00 and 2026-03-01 12:00 UTC",
    ]
    code, out, _ = run("segments", "check", "at-risk", "ada", "--at", "2026-03-01T12:00Z")
    assert out.splitlines()[0] == "contact ada is a member of at-risk at 2026-03-01 12:00 UTC"

    code, out, err = run("segments", "members", "at-risk", "--limit", "1", "--at", "2026-03-01")
    assert (code, out.splitlines()) == (0, ["ada"])
    assert "more: tidings segments members at-risk --limit 1 --after ada" in err
    code, out, err = run("segments", "members", "at-risk", "--after", "ada", "--at", "2026-03-01")
    assert (code, out.splitlines(), err) == (0, ["cy"], "")

    code, _, err = run("segments", "check", "at-rsik", "ada")
    assert code == 1
    assert "error: no segment 'at-rsik'" in err
    assert "(known: at-risk, engaged-buyers)" in err
    code, _, err = run("segments", "check", "at-risk", "nobody")
    assert (code, "contact 'nobody' is unknown" in err) == (1, True)
