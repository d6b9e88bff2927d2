"""The example journeys as scenarios on the time-skipping server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import JsonValue
from support import (
    EXAMPLE_JOURNEYS,
    EXAMPLE_TEMPLATES,
    Stack,
    copy_tree,
    running_stack,
    start_time_skipping,
)
from temporalio.testing import WorkflowEnvironment

from tidings import naming
from tidings.catalog import Catalog
from tidings.errors import InputError
from tidings.models.events import JourneyEvent
from tidings.models.workflow_io import JourneyStatus
from tidings.starter.client import TidingsClient
from tidings.starter.smtp_sink import SmtpSink

CART: dict[str, JsonValue] = {
    "total": 150.0,
    "currency": "EUR",
    "cart_url": "https://shop.example/cart/9",
}


async def test_cart_reminder_after_an_hour_and_offer_for_a_big_cart_a_day_later(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["lin@example.com"])
    tracked = await stack.client.track(contact_key, "cart_updated", CART)

    result = await stack.result("cart-abandonment", contact_key)

    assert tracked.triggered == ["cart-abandonment"]
    assert result.outcome == "completed"
    sent = stack.sent()
    [run] = stack.journey_runs(contact_key)
    assert [s.step_id for s in sent] == ["reminder", "offer"]
    assert abs(sent[0].scheduled_at - (run.entered_at + timedelta(hours=1))) < timedelta(seconds=5)
    assert abs(sent[1].scheduled_at - (run.entered_at + timedelta(hours=25))) < timedelta(seconds=5)
    assert "€150.00" in sent[0].message.text
    assert 'href="https://shop.example/cart/9"' in (sent[0].message.html or "")


@pytest.mark.parametrize(
    ("tier", "emails"), [("gold", ["reminder", "offer"]), ("silver", ["reminder"])]
)
async def test_a_small_cart_gets_the_offer_only_for_gold_customers(
    stack: Stack, contact_key: str, tier: str, emails: list[str]
) -> None:
    await stack.client.identify(
        contact_key, jurisdiction="US", emails=["kim@example.com"], traits={"tier": tier}
    )
    await stack.client.track(contact_key, "cart_updated", {**CART, "total": 30})

    await stack.result("cart-abandonment", contact_key)

    assert [s.step_id for s in stack.sent()] == emails


async def test_a_cart_below_the_threshold_starts_nothing(stack: Stack, contact_key: str) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["low@example.com"])

    tracked = await stack.client.track(contact_key, "cart_updated", {**CART, "total": 19.99})

    assert tracked.triggered == []
    assert "properties.total > 20" in tracked.skipped["cart-abandonment"]
    assert stack.journey_runs(contact_key) == []


async def test_an_order_within_the_goal_window_converts_and_stops_the_offer(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["buyer@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await time_skipping.sleep(timedelta(hours=2))

    tracked = await stack.client.track(contact_key, "order_completed", {"order_id": "o-1"})
    result = await stack.result("cart-abandonment", contact_key)

    assert tracked.woke == ["cart-abandonment"]
    assert result.outcome == "converted"
    assert [s.step_id for s in stack.sent()] == ["reminder"]
    assert stack.journey_runs(contact_key)[0].outcome == "converted"


async def test_an_exit_event_wakes_a_sleeping_journey_and_ends_it(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["empty@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await time_skipping.sleep(timedelta(minutes=10))

    await stack.client.track(contact_key, "cart_emptied")
    result = await stack.result("cart-abandonment", contact_key)

    assert (result.outcome, result.reason) == ("exited", "received cart_emptied")
    assert stack.sent() == []


async def test_win_back_after_30_quiet_days_then_an_offer_after_14_more(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["quiet@example.com"])
    await stack.client.track(contact_key, "session_started")

    result = await stack.result("win-back", contact_key)

    [run] = stack.journey_runs(contact_key)
    sent = stack.sent()
    assert result.outcome == "completed"
    assert [s.step_id for s in sent] == ["we-miss-you", "offer"]
    assert abs(sent[0].scheduled_at - (run.entered_at + timedelta(days=30))) < timedelta(seconds=5)
    assert abs(sent[1].scheduled_at - (run.entered_at + timedelta(days=44))) < timedelta(seconds=5)


async def test_a_long_active_streak_continues_as_new_and_keeps_its_place(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, history_event_limit=40
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=["busy@example.com"])
        for _day in range(25):
            await stack.client.track(contact_key, "session_started")
            await time_skipping.sleep(timedelta(days=1))
        handle = stack.handle("win-back", contact_key)
        current_run = (await handle.describe()).run_id
        [run] = stack.journey_runs(contact_key)

        result = await stack.result("win-back", contact_key)

        assert current_run != run.run_id, "the journey never continued as new"
        assert (result.entry, result.outcome) == (1, "completed")
        sent = stack.sent()
        assert [s.step_id for s in sent] == ["we-miss-you", "offer"]
        last_session = run.entered_at + timedelta(days=24)
        assert sent[0].scheduled_at - last_session > timedelta(days=29)


def _next_dst_start(after: date, tz: str) -> date:
    zone = ZoneInfo(tz)
    day = after
    while True:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=zone)
        before = noon - timedelta(days=1)
        if noon.utcoffset() != before.utcoffset() and noon.dst():
            return day
        day += timedelta(days=1)


async def test_renewal_reminders_at_nine_local_on_both_sides_of_a_dst_change(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    today = (await time_skipping.get_current_time()).date()
    dst_start = _next_dst_start(today + timedelta(days=40), "America/New_York")
    contract_end = dst_start + timedelta(days=5)  # -7d is before the change, -1d after
    await stack.client.identify(
        contact_key,
        jurisdiction="US",
        emails=["renew@example.com"],
        timezone="America/New_York",
        traits={"contract_end": contract_end.isoformat()},
    )
    await stack.client.track(contact_key, "contract_started")

    await stack.result("renewal", contact_key)

    sent = stack.sent()
    assert [s.step_id for s in sent] == ["reminder-30-days", "reminder-7-days", "reminder-1-day"]
    new_york = ZoneInfo("America/New_York")
    for item, days in zip(sent, (30, 7, 1), strict=True):
        local = item.scheduled_at.astimezone(new_york)
        assert local.date() == contract_end - timedelta(days=days)
        assert (local.hour, local.minute) == (9, 0)
    utc_hours = [s.scheduled_at.astimezone(UTC).hour for s in sent]
    assert utc_hours == [14, 14, 13]  # EST is UTC-5, EDT UTC-4
    assert "March 19, 2027" in sent[0].message.text  # babel, for the contact's locale


async def test_renewal_skips_reminders_whose_day_has_passed(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    today = (await time_skipping.get_current_time()).date()
    await stack.client.identify(
        contact_key,
        jurisdiction="US",
        emails=["late@example.com"],
        traits={"contract_end": (today + timedelta(days=10)).isoformat()},
    )
    await stack.client.track(contact_key, "contract_started")
    await stack.result("renewal", contact_key)
    assert [s.step_id for s in stack.sent()] == ["reminder-7-days", "reminder-1-day"]


async def test_renewal_without_a_contract_date_ends_with_missing_data(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["nodate@example.com"])
    await stack.client.track(contact_key, "contract_started")
    result = await stack.result("renewal", contact_key)
    assert (result.outcome, result.reason) == ("missing_data", "trait contract_end is not a date")
    assert stack.sent() == []


async def test_reentry_never_refuses_a_second_sign_up_even_after_the_first_ended(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["once@example.com"])
    await stack.client.track(contact_key, "signed_up")
    await stack.result("onboarding", contact_key)

    again = await stack.client.track(contact_key, "signed_up")

    assert again.triggered == []
    assert "reentry policy is `never`" in again.skipped["onboarding"]
    assert len(stack.journey_runs(contact_key)) == 1
    assert len(stack.sent()) == 3


async def test_reentry_after_exit_delivers_a_trigger_to_the_running_entry_not_a_second_one(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["twice@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await time_skipping.sleep(timedelta(minutes=30))
    await stack.client.track(contact_key, "cart_updated", {**CART, "total": 200})

    await stack.result("cart-abandonment", contact_key)

    assert len(stack.journey_runs(contact_key)) == 1
    assert [s.step_id for s in stack.sent()] == ["reminder", "offer"]


async def test_reentry_cooldown_refuses_until_seven_days_after_the_exit(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["cool@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await stack.result("cart-abandonment", contact_key)
    await time_skipping.sleep(timedelta(days=6))
    refused = await stack.client.track(contact_key, "cart_updated", CART)
    await time_skipping.sleep(timedelta(days=1, minutes=1))
    admitted = await stack.client.track(contact_key, "cart_updated", CART)
    second = await stack.result("cart-abandonment", contact_key)

    assert "cooldown of 7d" in refused.skipped["cart-abandonment"]
    assert admitted.triggered == ["cart-abandonment"]
    assert second.entry == 2
    assert [r.entry for r in stack.journey_runs(contact_key)] == [1, 2]
    assert len(stack.sent()) == 4


async def test_the_workflow_itself_enforces_the_cooldown(stack: Stack, contact_key: str) -> None:
    """Even a start that skips the client's pre-check is refused by the workflow."""
    await stack.client.identify(contact_key, jurisdiction="US", emails=["direct@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await stack.result("cart-abandonment", contact_key)
    journey = stack.client.catalog.journeys["cart-abandonment"]
    event = JourneyEvent(
        event_id="direct-1",
        name="cart_updated",
        properties=CART,
        occurred_at=await stack.env.get_current_time(),
    )

    await stack.client._signal_with_start(journey, contact_key, event)
    result = await stack.result("cart-abandonment", contact_key)

    assert result.outcome == "not_admitted"
    assert "cooldown" in result.reason
    assert len(stack.journey_runs(contact_key)) == 1


async def test_the_same_event_id_twice_has_the_effect_of_once(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["dup@example.com"])
    first = await stack.client.track(contact_key, "cart_updated", CART, event_id="evt-7")
    second = await stack.client.track(contact_key, "cart_updated", CART, event_id="evt-7")

    await stack.result("cart-abandonment", contact_key)

    assert (first.duplicate, second.duplicate) == (False, True)
    assert len(stack.journey_runs(contact_key)) == 1
    assert [s.step_id for s in stack.sent()] == ["reminder", "offer"]
    with pytest.raises(InputError, match="already used for a different event"):
        await stack.client.track(contact_key, "cart_emptied", event_id="evt-7")


async def test_a_journey_drops_a_signal_it_has_already_seen(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    """Two racing deliveries of one event (e.g. a retried route) count once."""
    await stack.client.identify(contact_key, jurisdiction="US", emails=["race@example.com"])
    await stack.client.track(contact_key, "session_started", event_id="s-1")
    handle = stack.handle("win-back", contact_key)
    session = JourneyEvent(
        event_id="s-2", name="session_started", occurred_at=await time_skipping.get_current_time()
    )
    await handle.signal(naming.EVENT_SIGNAL, session)
    await handle.signal(naming.EVENT_SIGNAL, session)
    await handle.signal(naming.EVENT_SIGNAL, session.model_copy(update={"event_id": "s-1"}))

    status = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)

    assert status.received == {"session_started": 2}
    assert (status.step_id, status.waiting_for) == ("watch", "event:session_started")


async def test_reentry_never_holds_after_temporal_has_forgotten_the_journey(
    smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    """Histories are purged after the namespace's retention; the database remembers."""
    first_server = await start_time_skipping()
    async with running_stack(first_server, data_dir=tmp_path, smtp=smtp) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=["forgot@example.com"])
        await stack.client.track(contact_key, "signed_up")
        await stack.result("onboarding", contact_key)
    await first_server.shutdown()

    fresh_server = await start_time_skipping()  # knows nothing of the first entry
    try:
        async with running_stack(fresh_server, data_dir=tmp_path, smtp=smtp) as stack:
            again = await stack.client.track(contact_key, "signed_up")
            journey = stack.client.catalog.journeys["onboarding"]
            event = JourneyEvent(
                event_id="bypass",
                name="signed_up",
                occurred_at=await fresh_server.get_current_time(),
            )
            await stack.client._signal_with_start(journey, contact_key, event)
            bypassed = await stack.result("onboarding", contact_key)
    finally:
        await fresh_server.shutdown()

    assert "reentry policy is `never`" in again.skipped["onboarding"]
    assert bypassed.outcome == "not_admitted"
    assert len(stack.outbox()) == 3


async def test_a_running_entry_keeps_its_version_while_new_entries_get_the_new_one(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.client.identify("old-timer", jurisdiction="US", emails=["old@example.com"])
    await stack.client.track("old-timer", "cart_updated", CART)
    v2 = copy_tree(EXAMPLE_JOURNEYS, tmp_path / "journeys-v2")
    spec = v2 / "cart-abandonment.yaml"
    spec.write_text(
        spec.read_text().replace("version: 1", "version: 2").replace("wait: 1h", "wait: 3h")
    )
    published = TidingsClient(
        temporal=stack.temporal,
        database=stack.database,
        catalog=Catalog.load(v2, EXAMPLE_TEMPLATES),
        settings=stack.settings,
        clock=stack.env.get_current_time,
    )
    await published.identify("newcomer", jurisdiction="US", emails=["new@example.com"])
    await published.track("newcomer", "cart_updated", CART)

    await stack.result("cart-abandonment", "old-timer")
    await stack.result("cart-abandonment", "newcomer")

    for key, email, version, hours in (
        ("old-timer", "old@example.com", 1, 1),
        ("newcomer", "new@example.com", 2, 3),
    ):
        [run] = stack.journey_runs(key)
        reminder = stack.sent(email)[0]
        assert run.version == version
        assert abs(reminder.scheduled_at - run.entered_at - timedelta(hours=hours)) < timedelta(
            seconds=5
        )
        attributes = (
            await stack.handle("cart-abandonment", key).describe()
        ).typed_search_attributes
        assert attributes.get(naming.JOURNEY_VERSION) == version
