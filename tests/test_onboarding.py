"""Onboarding, end to end on the time-skipping server: 7 days in seconds."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from support import Stack
from temporalio.testing import WorkflowEnvironment


def next_local(after: datetime, at: time, tz: str) -> datetime:
    local = after.astimezone(ZoneInfo(tz))
    candidate = datetime.combine(local.date(), at, tzinfo=ZoneInfo(tz))
    if candidate <= after:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=ZoneInfo(tz))
    return candidate.astimezone(UTC)


async def test_a_new_sign_up_gets_welcome_tips_and_check_in_on_schedule(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(
        contact_key,
        jurisdiction="US",
        emails=["ada@example.com", "ada.work@example.com"],
        timezone="America/Chicago",
        traits={"first_name": "Ada"},
    )
    await stack.client.track(contact_key, "signed_up", {"plan": "pro"})

    result = await stack.result("onboarding", contact_key)

    assert (result.outcome, result.sends) == ("completed", 3)
    [run] = stack.journey_runs(contact_key)
    entered = run.entered_at
    sent = stack.sent()
    assert [(s.to, s.step_id) for s in sent] == [
        ("ada@example.com", "welcome"),
        ("ada@example.com", "tips"),
        ("ada@example.com", "check-in"),
    ]
    assert sent[0].subject == "Welcome to Acme, Ada!"
    assert "Your pro plan is ready" in sent[0].message.text
    assert "<strong>pro</strong>" in (sent[0].message.html or "")
    tips_at = next_local(entered + timedelta(days=1), time(9), "America/Chicago")
    assert abs(sent[0].scheduled_at - entered) < timedelta(seconds=5)
    assert abs(sent[1].scheduled_at - tips_at) < timedelta(seconds=5)
    local = sent[1].scheduled_at.astimezone(ZoneInfo("America/Chicago"))
    assert (local.hour, local.minute) == (9, 0)
    assert abs(sent[2].scheduled_at - (tips_at + timedelta(days=5))) < timedelta(seconds=5)
    assert run.outcome == "completed" and run.exited_at is not None


async def test_activating_on_day_3_converts_and_stops_the_day_7_email(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(
        contact_key, jurisdiction="US", emails=["grace@example.com"], timezone="Europe/Paris"
    )
    await stack.client.track(contact_key, "signed_up")

    await time_skipping.sleep(timedelta(days=3))
    tracked = await stack.client.track(contact_key, "activated")
    result = await stack.result("onboarding", contact_key)

    assert tracked.woke == ["onboarding"]
    assert result.outcome == "converted"
    assert [s.step_id for s in stack.sent()] == ["welcome", "tips"]
    assert stack.sent()[0].message.text.startswith("Hi,\n")  # the declared default: ""
    [run] = stack.journey_runs(contact_key)
    assert run.outcome == "converted"
