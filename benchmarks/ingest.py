"""Ingest: `track()` until the journey has started, vs a bare signal-with-start.

    python benchmarks/ingest.py [--events 300] [--rounds 3] [--concurrency 1,16]

One dev server (SQLite, WAL) and one app database (SQLite); no worker runs, so
nothing competes with the calls being timed. A call ends when the server has
accepted the start: from then the journey is durable and a worker takes it
from the queue. Variants, from the same process on the same server:

- tidings: `TidingsClient.track(key, "signed_up")` for a new contact, with the
  example journeys loaded: validate the event, store it and check reentry in
  one app-database transaction, signal-with-start the onboarding journey
  (input: the journey's spec), mark the event routed;
- bare: `start_workflow(..., start_signal=...)` of a workflow type no worker
  runs, with the same event as its signal: Temporal's own cost of the start.

Each variant runs `--events` calls per round at each concurrency, variants
alternating, so the machine's noise hits them alike; figures are medians over
rounds. Writes them to benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    Timing,
    add_contacts,
    bounded,
    machine,
    recorded_at,
    start_dev_server,
    write_results,
)
from temporalio.client import Client  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db.engine import Database  # noqa: E402
from tidings.models.events import JourneyEvent  # noqa: E402
from tidings.settings import Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402

EVENT = "signed_up"
BARE_TASK_QUEUE = "bench-ingest"
WARM_UP = 20

Start = Callable[[str], Awaitable[object]]


def tidings_start(client: TidingsClient) -> Start:
    async def start(key: str) -> None:
        result = await client.track(key, EVENT)
        if result.triggered != ["onboarding"]:
            raise RuntimeError(f"track({key!r}) started {result.triggered}: {result.skipped}")

    return start


def bare_start(temporal: Client) -> Start:
    async def start(key: str) -> None:
        event = JourneyEvent(event_id=uuid.uuid4().hex, name=EVENT, occurred_at=datetime.now(UTC))
        await temporal.start_workflow(
            "BareIngest",
            key,
            id=f"bare-ingest/{key}",
            task_queue=BARE_TASK_QUEUE,
            start_signal=naming.EVENT_SIGNAL,
            start_signal_args=[event],
        )

    return start


async def timed(
    database: Database, start: Start, prefix: str, count: int, concurrency: int
) -> Timing:
    """`count` starts for new contacts, at most `concurrency` at a time."""
    keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    add_contacts(database, keys)  # both variants' contacts, so each writes alike beforehand
    latencies: list[float] = []

    async def one(key: str) -> None:
        began = time.perf_counter()
        await start(key)
        latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await bounded((one(key) for key in keys), limit=concurrency)
    return Timing.of(latencies, time.perf_counter() - began)


async def measure(events: int, rounds: int, concurrencies: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = await start_dev_server(tmp / "temporal.db")
        settings = Settings(data_dir=tmp / "data")  # the example journeys
        database = Database.for_settings(settings)
        try:
            client = TidingsClient(
                temporal=env.client,
                database=database,
                catalog=Catalog.from_settings(settings),
                settings=settings,
            )
            variants = {"tidings": tidings_start(client), "bare": bare_start(env.client)}
            found: dict[int, dict[str, list[Timing]]] = {
                c: {name: [] for name in variants} for c in concurrencies
            }
            for name, start in variants.items():
                await timed(database, start, f"warm-{name}", WARM_UP, max(concurrencies))
            for _ in range(rounds):
                for concurrency, by_name in found.items():
                    for name, start in variants.items():
                        by_name[name].append(
                            await timed(database, start, name, events, concurrency)
                        )
        finally:
            database.dispose()
            await env.shutdown()
    figures: dict[str, Any] = {}
    for concurrency, by_name in found.items():
        median = {name: Timing.median(timings) for name, timings in by_name.items()}
        figures[f"concurrency_{concurrency}"] = {
            **{
                name: {
                    "per_second": round(timing.per_second, 1),
                    "p50_ms": round(timing.p50_ms, 2),
                    "p99_ms": round(timing.p99_ms, 2),
                    "all_rates": [round(t.per_second, 1) for t in by_name[name]],
                }
                for name, timing in median.items()
            },
            "ratio_vs_bare": round(median["tidings"].per_second / median["bare"].per_second, 3),
            "extra_ms_per_call_p50": round(median["tidings"].p50_ms - median["bare"].p50_ms, 2),
        }
    return {
        "recorded_at": recorded_at(),
        "machine": machine(database="sqlite (WAL)"),
        "events_per_round": events,
        "rounds": rounds,
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency", default="1,16", help="calls in flight at once, comma-separated"
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    write_results("ingest", asyncio.run(measure(args.events, args.rounds, concurrencies)))


if __name__ == "__main__":
    main()
