"""Record the histories the replay test checks: `python tests/histories/record.py`.

Each example journey runs a typical scenario on the time-skipping server;
every run's history is written as JSON beside this file. Re-record only when
a change to journey code is meant to alter histories, and then guard the old
behaviour with `workflow.patched` so running journeys still replay.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path

from pydantic import JsonValue

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from support import Stack, running_stack, start_time_skipping  # noqa: E402

from tidings.starter.smtp_sink import SmtpSink  # noqa: E402

CART: dict[str, JsonValue] = {
    "total": 150.0,
    "currency": "EUR",
    "cart_url": "https://shop.example/cart/9",
}

Scenario = Callable[[Stack], Awaitable[tuple[str, str]]]


async def onboarding_completed(stack: Stack) -> tuple[str, str]:
    await stack.client.identify(
        "rec-onboard", jurisdiction="US", emails=["o@example.com"], timezone="America/Chicago"
    )
    await stack.client.track("rec-onboard", "signed_up", {"plan": "pro"})
    return "onboarding", "rec-onboard"


async def onboarding_converted(stack: Stack) -> tuple[str, str]:
    await stack.client.identify("rec-convert", jurisdiction="US", emails=["c@example.com"])
    await stack.client.track("rec-convert", "signed_up")
    await stack.env.sleep(timedelta(days=3))
    await stack.client.track("rec-convert", "activated")
    return "onboarding", "rec-convert"


async def cart_with_offer(stack: Stack) -> tuple[str, str]:
    await stack.client.identify(
        "rec-cart", jurisdiction="US", emails=["k@example.com"], traits={"tier": "gold"}
    )
    await stack.client.track("rec-cart", "cart_updated", CART)
    return "cart-abandonment", "rec-cart"


async def renewal_reminders(stack: Stack) -> tuple[str, str]:
    today = (await stack.env.get_current_time()).date()
    end = date.fromordinal(today.toordinal() + 45).isoformat()
    await stack.client.identify(
        "rec-renew",
        jurisdiction="US",
        emails=["r@example.com"],
        timezone="Europe/Berlin",
        traits={"contract_end": end},
    )
    await stack.client.track("rec-renew", "contract_started")
    return "renewal", "rec-renew"


async def win_back_after_a_streak(stack: Stack) -> tuple[str, str]:
    await stack.client.identify("rec-winback", jurisdiction="US", emails=["w@example.com"])
    for _ in range(12):
        await stack.client.track("rec-winback", "session_started")
        await stack.env.sleep(timedelta(days=2))
    return "win-back", "rec-winback"


SCENARIOS: dict[str, Scenario] = {
    "onboarding-completed": onboarding_completed,
    "onboarding-converted": onboarding_converted,
    "cart-abandonment-offer": cart_with_offer,
    "renewal-reminders": renewal_reminders,
    "win-back-continued-as-new": win_back_after_a_streak,
}


async def record() -> None:
    for name, scenario in SCENARIOS.items():
        env = await start_time_skipping()
        with tempfile.TemporaryDirectory() as tmp, SmtpSink(Path(tmp) / "outbox") as smtp:
            async with running_stack(
                env, data_dir=Path(tmp), smtp=smtp, history_event_limit=60
            ) as stack:
                journey, key = await scenario(stack)
                await stack.result(journey, key)
                handle = stack.handle(journey, key)
                runs = [run.run_id for run in stack.journey_runs(key)]
                current = (await handle.describe()).run_id
                for index, run_id in enumerate(dict.fromkeys([*runs, current])):
                    history = await stack.temporal.get_workflow_handle(
                        handle.id, run_id=run_id
                    ).fetch_history()
                    path = HERE / f"{name}-{index + 1}.json"
                    path.write_text(history.to_json())
                    print(f"wrote {path.relative_to(HERE.parent.parent)}")
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
