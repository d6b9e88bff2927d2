"""Record the histories the replay test checks: `python tests/histories/record.py`.

Each example journey runs a typical scenario on the time-skipping server;
every run's history is written as JSON beside this file (`record.py NAME`
records one scenario). Re-record only when
a change to journey code is meant to alter histories, and then guard the old
behaviour with `workflow.patched` so running journeys still replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path

from pydantic import JsonValue
from temporalio.client import WorkflowHistory

HERE = Path(__file__).resolve().parent
IDS = HERE / "ids.json"
sys.path.insert(0, str(HERE.parent))

from support import Stack, running_stack, start_time_skipping  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.starter.approval_admin import DecisionRefusedError  # noqa: E402
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


async def retention_offer_approved(stack: Stack) -> tuple[str, str]:
    """An approval gate: a refused decision (absent from the history), then the sign-off."""
    await stack.client.identify("rec-retention", jurisdiction="US", emails=["r@example.com"])
    await stack.client.track("rec-retention", "churn_risk_detected")
    approvals = stack.client.approvals
    while not (gates := await approvals.list()):
        await asyncio.sleep(0.05)
    with contextlib.suppress(DecisionRefusedError):  # lena is legal, not marketing-lead
        await approvals.decide(gates[0].id, user="lena", verdict="approve")
    await approvals.decide(gates[0].id, user="priya", verdict="approve", comment="ok")
    return "retention-offer", "rec-retention"


async def payment_failed_escalated_then_paid(stack: Stack) -> tuple[str, str]:
    """Three reminders unanswered, an escalation to people, then the payment goes through."""
    await stack.client.identify("rec-payment", jurisdiction="US", emails=["p@example.com"])
    invoice: dict[str, JsonValue] = {
        "amount": 42.0,
        "currency": "USD",
        "invoice_url": "https://billing.example/i/1",
    }
    await stack.client.track("rec-payment", "payment_failed", invoice)
    await stack.env.sleep(timedelta(days=6, hours=1))
    await stack.client.track("rec-payment", "payment_succeeded")
    return "payment-failed", "rec-payment"


SCENARIOS: dict[str, Scenario] = {
    "onboarding-completed": onboarding_completed,
    "onboarding-converted": onboarding_converted,
    "cart-abandonment-offer": cart_with_offer,
    "renewal-reminders": renewal_reminders,
    "win-back-continued-as-new": win_back_after_a_streak,
    "retention-offer-approved": retention_offer_approved,
    "payment-failed-escalated": payment_failed_escalated_then_paid,
}
RELATED: dict[str, Callable[[str], str]] = {
    "payment-failed-escalated": lambda journey_id: naming.escalation_workflow_id(
        journey_id, 1, "follow-up", 1
    ),
}
"""Workflows a scenario starts besides its journey, recorded as `<name>-related.json`."""


def write(path: Path, workflow_id: str, history: WorkflowHistory) -> None:
    """The history, and its workflow's id in ids.json: replay runs a workflow under its
    own id (child workflow ids derive from it)."""
    path.write_text(history.to_json())
    ids = json.loads(IDS.read_text()) if IDS.exists() else {}
    ids[path.stem] = workflow_id
    IDS.write_text(json.dumps(dict(sorted(ids.items())), indent=2) + "\n")
    print(f"wrote {path.relative_to(HERE.parent.parent)}")


async def record(names: list[str]) -> None:
    """Every scenario, or those named (to add a new one without re-recording the rest)."""
    for name, scenario in SCENARIOS.items():
        if names and name not in names:
            continue
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
                    write(HERE / f"{name}-{index + 1}.json", handle.id, history)
                if name in RELATED:
                    related = stack.temporal.get_workflow_handle(RELATED[name](handle.id))
                    await related.result()
                    history = await related.fetch_history()
                    write(HERE / f"{name}-related.json", related.id, history)
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
