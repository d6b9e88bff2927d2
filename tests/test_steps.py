"""Step semantics that the example journeys do not show, on the time-skipping server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import JsonValue
from support import Stack, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings.errors import InputError
from tidings.starter.smtp_sink import SmtpSink

ACTIVATION = """\
name: activation
version: 1
trigger: {event: signed_up}
reentry: {policy: after_exit}
steps:
  - id: settle
    wait: 1h
  - id: activated-yet
    wait_for: {event: activated, since: SINCE, timeout: 2d, on_event: thanks, on_timeout: nudge}
  - id: nudge
    send: {template: check-in, purpose: service, topic: onboarding}
    next: end
  - id: thanks
    send: {template: welcome, purpose: service, topic: onboarding}
"""

BIG_ORDERS = """\
name: big-orders
version: 1
trigger: {event: order_placed, where: "properties.total > 100", properties: {total: number}}
steps:
  - id: next-order
    wait_for: {event: order_placed, timeout: 7d, on_event: follow-up, on_timeout: end}
  - id: follow-up
    send: {template: check-in, purpose: service, topic: onboarding}
"""


@pytest.fixture
async def custom(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    for name, text in request.param.items():
        (journeys / f"{name}.yaml").write_text(text)
    async with running_stack(
        time_skipping, data_dir=tmp_path, smtp=smtp, journeys_dir=journeys
    ) as s:
        yield s


@pytest.mark.parametrize(
    ("custom", "expected"),
    [
        ({"activation": ACTIVATION.replace("SINCE", "entry")}, ["thanks"]),
        ({"activation": ACTIVATION.replace("SINCE", "step")}, ["nudge"]),
    ],
    indirect=["custom"],
    ids=["since-entry-counts-an-earlier-event", "since-step-does-not"],
)
async def test_wait_for_since_entry_counts_an_event_from_before_the_step(
    custom: Stack, time_skipping: WorkflowEnvironment, contact_key: str, expected: list[str]
) -> None:
    await custom.client.identify(contact_key, jurisdiction="US", emails=["early@example.com"])
    await custom.client.track(contact_key, "signed_up")
    await time_skipping.sleep(timedelta(minutes=10))
    await custom.client.track(contact_key, "activated")  # during `settle`, before the wait_for

    await custom.result("activation", contact_key)

    assert [s.step_id for s in custom.sent()] == expected


@pytest.mark.parametrize("custom", [{"big-orders": BIG_ORDERS}], indirect=True)
async def test_an_event_that_fails_the_trigger_condition_still_reaches_a_waiting_entry(
    custom: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await custom.client.identify(contact_key, jurisdiction="US", emails=["orders@example.com"])
    first = await custom.client.track(contact_key, "order_placed", {"total": 250})
    await time_skipping.sleep(timedelta(days=1))

    small = await custom.client.track(contact_key, "order_placed", {"total": 30})
    await custom.result("big-orders", contact_key)

    assert (first.triggered, small.triggered, small.woke) == (["big-orders"], [], ["big-orders"])
    assert [s.step_id for s in custom.sent()] == ["follow-up"]


@pytest.mark.parametrize("custom", [{"big-orders": BIG_ORDERS}], indirect=True)
async def test_a_small_order_without_a_running_entry_starts_nothing(
    custom: Stack, contact_key: str
) -> None:
    await custom.client.identify(contact_key, jurisdiction="US", emails=["small@example.com"])
    small = await custom.client.track(contact_key, "order_placed", {"total": 30})
    assert (small.triggered, small.woke) == ([], [])
    assert custom.journey_runs(contact_key) == []


QUICK = Path(__file__).parent / "fixtures" / "quick-journeys"


async def test_a_trigger_that_lands_while_an_entry_ends_starts_the_next_entry(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    async with running_stack(time_skipping, data_dir=tmp_path, smtp=smtp, journeys_dir=QUICK) as s:
        await s.client.identify(contact_key, jurisdiction="US", emails=["again@example.com"])
        await s.client.track(contact_key, "ping")
        await s.client.track(contact_key, "stop")  # ends entry 1 during its pause...
        again = await s.client.track(contact_key, "ping")  # ...racing this trigger

        result = await s.result("quick", contact_key)

        assert again.triggered == ["quick"]
        assert result.entry == 2 and result.outcome == "completed"
        runs = sorted(s.journey_runs(contact_key), key=lambda r: r.entry)
        assert [(r.entry, r.outcome) for r in runs] == [(1, "exited"), (2, "completed")]
        assert sorted(d.step_id for d in s.deliveries()) == ["follow-up", "hello", "hello"]


async def test_a_flood_of_events_mid_wait_continues_as_new_without_moving_the_timer(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    async with running_stack(
        time_skipping, data_dir=tmp_path, smtp=smtp, history_event_limit=40
    ) as s:
        await s.client.identify(contact_key, jurisdiction="US", emails=["flood@example.com"])
        cart: dict[str, JsonValue] = {
            "total": 150.0,
            "currency": "EUR",
            "cart_url": "https://shop.example/c/1",
        }
        await s.client.track(contact_key, "cart_updated", cart)
        for _ in range(60):  # each delivered to the entry sleeping in `wait-1h`
            await s.client.track(contact_key, "cart_updated", cart)
        current = (await s.handle("cart-abandonment", contact_key).describe()).run_id

        result = await s.result("cart-abandonment", contact_key)
        [run] = s.journey_runs(contact_key)

        assert current != run.run_id, "the history grew without continuing as new"
        assert (result.entry, result.outcome) == (1, "completed")
        sent = s.sent()
        assert [x.step_id for x in sent] == ["reminder", "offer"]
        assert abs(sent[0].scheduled_at - run.entered_at - timedelta(hours=1)) < timedelta(
            seconds=5
        )


UNDECLARED = """\
name: loose
version: 1
trigger: {event: purchase, where: "properties.total > 20"}
steps:
  - id: thanks
    send: {template: check-in, purpose: service, topic: onboarding}
"""


@pytest.mark.parametrize("custom", [{"loose": UNDECLARED}], indirect=True)
async def test_an_event_its_trigger_condition_cannot_read_is_refused_and_not_stored(
    custom: Stack, contact_key: str
) -> None:
    await custom.client.identify(contact_key, jurisdiction="US", emails=["loose@example.com"])
    with pytest.raises(InputError, match="journey 'loose': its trigger condition failed"):
        await custom.client.track(contact_key, "purchase", {"total": "lots"}, event_id="p-1")

    fixed = await custom.client.track(contact_key, "purchase", {"total": 30}, event_id="p-1")

    assert fixed.triggered == ["loose"]
