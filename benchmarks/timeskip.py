"""A 30-day journey simulated on the time-skipping test server: wall time per journey.

    python benchmarks/timeskip.py [--journeys 5] [--rounds 3]

The journey is onboarding stretched over 30 days: welcome, a day, tips, six
days, a check-in, 23 days, a last check-in (four emails over SMTP). It runs on
Temporal's time-skipping test server (what the tests use), with the worker,
the SMTP server and SQLite as `tests/support.running_stack` sets them up,
one journey at a time, from `track()` to its result. The baseline, on the
same server, worker pool and send activity, is the bare workflow
(`bare.py`) with the same timers, sends, policy checks and bookkeeping.

Prints and writes benchmarks/results/timeskip.json: wall seconds per journey
(median over rounds), simulated days per wall second, the ratio (bare's
wall time / tidings', as the other benchmarks' speed ratios), and history
events per email.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bare import BareInput, BareOnboarding  # noqa: E402
from common import (  # noqa: E402
    BARE_TASK_QUEUE,
    Steps,
    add_contacts,
    bare_steps,
    bare_worker,
    email,
    events_per_message,
    machine,
    recorded_at,
    write_journey,
    write_results,
)
from support import Stack, running_stack, start_time_skipping  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.models.events import JourneyEvent  # noqa: E402
from tidings.starter.smtp_sink import SmtpSink  # noqa: E402

JOURNEY = "thirty-days"
SENDS = 4
SIMULATED_DAYS = 30


THIRTY_DAYS: dict[str, Any] = {
    "name": JOURNEY,
    "version": 1,
    "description": "Onboarding over 30 days, for the time-skipping benchmark.",
    "trigger": {"event": "signed_up"},
    "reentry": {"policy": "never"},
    "steps": [
        {"id": "welcome", "send": email("welcome")},
        {"id": "day-1", "wait": "1d"},
        {"id": "tips", "send": email("getting-started-tips", "marketing")},
        {"id": "day-7", "wait": "6d"},
        {"id": "check-in", "send": email("check-in")},
        {"id": "day-30", "wait": "23d"},
        {"id": "last-check-in", "send": email("check-in")},
    ],
}

Run = Callable[[str], Awaitable[str]]
"""Runs one journey for a new contact to its end; returns its workflow id."""


def tidings_run(stack: Stack) -> Run:
    async def run(key: str) -> str:
        await stack.client.track(key, "signed_up")
        result = await stack.result(JOURNEY, key, timeout=300)
        if (result.outcome, result.sends) != ("completed", SENDS):
            raise RuntimeError(f"{key}: {result}")
        return naming.journey_workflow_id(JOURNEY, key)

    return run


def bare_run(stack: Stack, steps: Steps) -> Run:
    async def run(key: str) -> str:
        trigger = JourneyEvent(
            event_id=uuid.uuid4().hex,
            name="signed_up",
            occurred_at=await stack.env.get_current_time(),
        )
        sent = await stack.temporal.execute_workflow(
            BareOnboarding.run,
            BareInput(contact_key=key, trigger=trigger, steps=steps),
            id=f"bare/{key}",
            task_queue=BARE_TASK_QUEUE,
        )
        if sent != SENDS:
            raise RuntimeError(f"{key}: the bare workflow sent {sent}")
        return f"bare/{key}"

    return run


async def timed(stack: Stack, run: Run, prefix: str, count: int) -> tuple[list[float], str]:
    """Wall seconds of each of `count` journeys run one after another; the last one's id."""
    keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    add_contacts(stack.database, keys)
    seconds, workflow_id = [], ""
    for key in keys:
        began = time.perf_counter()
        workflow_id = await run(key)
        seconds.append(time.perf_counter() - began)
    return seconds, workflow_id


async def measure(journeys: int, rounds: int) -> dict[str, Any]:
    env = await start_time_skipping()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp_name,
            SmtpSink(Path(tmp_name) / "outbox") as smtp,
            ThreadPoolExecutor(8) as executor,
        ):
            tmp = Path(tmp_name)
            journeys_dir = write_journey(tmp / "journeys", THIRTY_DAYS)
            async with running_stack(
                env, data_dir=tmp / "data", smtp=smtp, journeys_dir=journeys_dir
            ) as stack:
                catalog = stack.client.catalog
                steps = bare_steps(catalog.journeys[JOURNEY])
                variants = {"tidings": tidings_run(stack), "bare": bare_run(stack, steps)}
                found: dict[str, list[float]] = {name: [] for name in variants}
                last: dict[str, str] = {}
                async with bare_worker(env.client, stack.database, catalog.policy, executor):
                    for name, run in variants.items():  # warm up every path
                        await timed(stack, run, f"warm-{name}", 1)
                    for _ in range(rounds):
                        for name, run in variants.items():
                            seconds, last[name] = await timed(stack, run, name, journeys)
                            found[name] += seconds
                    events = {
                        name: await events_per_message(env.client, workflow_id, SENDS)
                        for name, workflow_id in last.items()
                    }
                emails = len(stack.outbox())
    finally:
        await env.shutdown()
    median = {name: statistics.median(values) for name, values in found.items()}
    expected_emails = SENDS * (journeys * rounds + 1) * len(variants)
    if emails != expected_emails:
        raise RuntimeError(f"the SMTP server got {emails} emails, expected {expected_emails}")
    return {
        "recorded_at": recorded_at(),
        "machine": machine(server="temporal-test-server (time-skipping)"),
        "journey": [
            step["id"] + (f" (wait {step['wait']})" if "wait" in step else "")
            for step in THIRTY_DAYS["steps"]
        ],
        "simulated_days": SIMULATED_DAYS,
        "emails_per_journey": SENDS,
        "journeys_per_round": journeys,
        "rounds": rounds,
        "wall_seconds_per_journey": {name: round(value, 3) for name, value in median.items()},
        "simulated_days_per_wall_second": {
            name: round(SIMULATED_DAYS / value, 1) for name, value in median.items()
        },
        "ratio_vs_bare": round(median["bare"] / median["tidings"], 3),
        "history_events_per_message": {name: round(value, 1) for name, value in events.items()},
        "all_wall_seconds": {name: [round(v, 3) for v in values] for name, values in found.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=5, help="journeys per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    write_results("timeskip", asyncio.run(measure(args.journeys, args.rounds)))


if __name__ == "__main__":
    main()
