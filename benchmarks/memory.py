"""Worker memory with 10,000 journeys asleep on a timer, vs a bare worker with 10,000 sleepers.

    python benchmarks/memory.py [--journeys 10000] [--settle 10]

Each worker runs in a process of its own, so its resident memory (VmRSS, from
/proc) is its own, not the benchmark's or the server's:

- tidings: the standalone worker (`python -m tidings.worker`, as deployed) with
  one journey whose first step waits 30 days; the journeys are started with
  `track()`;
- bare: a worker running one workflow that sleeps 30 days (`sleeper.py`: the
  SDK with its defaults and nothing of tidings), started with `start_workflow`.

For each: memory once the worker is up and settled (idle), then with every
workflow started, the task queue drained and memory settled again (loaded).
What a worker keeps between tasks is its workflow cache: at most
`max_cached_workflows` workflows (the SDK's default; worker.py sets none),
evicted least recently used. So the figure per journey that matters is per
cached workflow; the rest sleep on the server at no cost to the worker.

Writes the figures to benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sleeper  # noqa: E402
from common import (  # noqa: E402
    TIDINGS_WORKER,
    TIDINGS_WORKER_READY,
    ChildProcess,
    add_contacts,
    address_of,
    bounded,
    email,
    machine,
    recorded_at,
    start_dev_server,
    worker_env,
    workflow_backlog,
    write_journey,
    write_results,
)
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from tidings import naming  # noqa: E402
from tidings import worker as tidings_worker  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db.engine import Database  # noqa: E402
from tidings.settings import Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402

SLEEP = timedelta(days=30)
SLEEPER = {
    "name": "sleeper",
    "version": 1,
    "description": "Waits 30 days, then welcomes: a journey asleep on its first step.",
    "trigger": {"event": "signed_up"},
    "reentry": {"policy": "never"},
    "steps": [
        {"id": "sleep", "wait": "30d"},
        {"id": "welcome", "send": email("welcome")},
    ],
}
CACHE_SIZE: int = inspect.signature(Worker.__init__).parameters["max_cached_workflows"].default


async def settled_rss(child: ChildProcess, settle: float) -> int:
    """RSS in KiB once five samples a second apart agree within 1% (or `settle` s passed)."""
    await asyncio.sleep(settle)
    samples: list[int] = []
    deadline = time.monotonic() + 60
    while True:
        samples = [*samples[-4:], child.rss_kib()]
        steady = len(samples) == 5 and max(samples) - min(samples) <= max(samples) * 0.01
        if steady or time.monotonic() > deadline:
            return int(statistics.median(samples))
        await asyncio.sleep(1)


async def drained(client: Client, task_queue: str) -> None:
    """Until the queue has had no workflow task waiting for three polls in a row."""
    empty = 0
    while empty < 3:
        await asyncio.sleep(1)
        empty = empty + 1 if await workflow_backlog(client, task_queue) == 0 else 0


async def measure_worker(
    child: ChildProcess,
    client: Client,
    task_queue: str,
    count: int,
    start_all: Callable[[], Awaitable[None]],
    settle: float,
) -> dict[str, Any]:
    child.start()
    try:
        startup = await child.wait_ready()
        idle = await settled_rss(child, settle)
        began = time.perf_counter()
        await start_all()
        started = time.perf_counter() - began
        await drained(client, task_queue)
        drain = time.perf_counter() - began
        loaded = await settled_rss(child, settle)
    finally:
        child.stop()
    delta = loaded - idle
    return {
        "idle_mib": round(idle / 1024, 1),
        "loaded_mib": round(loaded / 1024, 1),
        "delta_mib": round(delta / 1024, 1),
        "kib_per_workflow": round(delta / count, 2),
        "kib_per_cached_workflow": round(delta / min(count, CACHE_SIZE), 1),
        "worker_startup_seconds": round(startup, 1),
        "start_seconds": round(started, 1),
        "starts_per_second": round(count / started, 1),
        "all_asleep_after_seconds": round(drain, 1),
    }


async def measure(count: int, settle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = await start_dev_server(tmp / "temporal.db")
        settings = Settings(
            data_dir=tmp / "data", journeys_dir=write_journey(tmp / "journeys", SLEEPER)
        )
        catalog = Catalog.from_settings(settings)
        database = Database.for_settings(settings)
        client = TidingsClient(
            temporal=env.client, database=database, catalog=catalog, settings=settings
        )
        keys = [f"sleeper-{n}" for n in range(count)]
        add_contacts(database, keys)
        address = address_of(env.client)

        async def track_all() -> None:
            await bounded((client.track(key, "signed_up") for key in keys), limit=32)

        async def start_bare() -> None:
            await bounded(
                (
                    env.client.start_workflow(
                        sleeper.BareSleeper.run,
                        SLEEP.total_seconds(),
                        id=f"sleep/{n}",
                        task_queue=sleeper.TASK_QUEUE,
                    )
                    for n in range(count)
                ),
                limit=32,
            )

        try:
            ours = ChildProcess(
                TIDINGS_WORKER,
                tmp / "tidings.log",
                TIDINGS_WORKER_READY,
                worker_env(settings, address),
            )
            tidings = await measure_worker(
                ours, env.client, naming.JOURNEY_TASK_QUEUE, count, track_all, settle
            )
            asleep = await env.client.count_workflows(
                f'{naming.JOURNEY.name}="sleeper" AND {naming.STEP.name}="sleep"'
            )
            # Started by import, not as a script: the sandbox re-imports a workflow's module.
            serve = f"import asyncio, sleeper; asyncio.run(sleeper.serve({address!r}))"
            theirs = ChildProcess(
                (sys.executable, "-c", serve),
                tmp / "bare.log",
                sleeper.READY,
                {**os.environ, "PYTHONPATH": str(HERE)},
            )
            bare = await measure_worker(
                theirs, env.client, sleeper.TASK_QUEUE, count, start_bare, settle
            )
        finally:
            database.dispose()
            await env.shutdown()
    return {
        "recorded_at": recorded_at(),
        "machine": machine(database="sqlite (WAL)"),
        "workflows": count,
        "max_cached_workflows": CACHE_SIZE,
        "max_cached_workflows_set_in_worker_py": "max_cached_workflows"
        in Path(tidings_worker.__file__).read_text(),
        "journeys_asleep_on_step_sleep": asleep.count,
        "tidings": tidings,
        "bare": bare,
        "ratio_vs_bare": {
            "loaded": round(tidings["loaded_mib"] / bare["loaded_mib"], 2),
            "delta": round(tidings["delta_mib"] / bare["delta_mib"], 2),
            "idle": round(tidings["idle_mib"] / bare["idle_mib"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=10, help="seconds before sampling")
    args = parser.parse_args()
    write_results("memory", asyncio.run(measure(args.journeys, args.settle)))


if __name__ == "__main__":
    main()
