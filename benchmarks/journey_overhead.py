"""Onboarding through tidings vs the same work written as a bare Temporal workflow.

    python benchmarks/journey_overhead.py [--journeys 150] [--rounds 3]

One Temporal dev server (SQLite, WAL), one worker process, one SMTP server
and one SQLite app database serve all variants, in alternating rounds, so the
machine's noise hits each alike. Waits are shortened to 1 s so the run
measures overhead rather than sleeping. Variants:

- tidings: `track()` -> the journey interpreter -> completion;
- bare: a hand-written workflow running the same activities (entry and exit
  bookkeeping, a policy check before each send, three sends) and timers; the
  target is tidings >= 0.87x this;
- bare, sends only: without the bookkeeping and checks, a stricter second figure.

Prints journeys per second, the ratios and history events per sent message,
and writes them to benchmarks/results/journey_overhead.json.
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
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from bare import BareInput, BareOnboarding  # noqa: E402
from common import (  # noqa: E402
    BARE_TASK_QUEUE,
    Steps,
    bare_steps,
    bare_worker,
    bounded,
    events_per_message,
    machine,
    recorded_at,
    start_dev_server,
    write_results,
)
from temporalio.client import Client  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db.engine import Database  # noqa: E402
from tidings.models.events import JourneyEvent  # noqa: E402
from tidings.settings import PACKAGE_DIR, Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402
from tidings.starter.smtp_sink import SmtpSink  # noqa: E402
from tidings.starter.template_admin import TemplateAdmin  # noqa: E402
from tidings.worker import WorkerParts, running_workers  # noqa: E402

WAIT_SECONDS = 1
TARGET_RATIO = 0.87


def shortened_onboarding(directory: Path) -> Path:
    """The onboarding journey with every wait (and the wait-until) set to 1 s."""
    spec = yaml.safe_load((PACKAGE_DIR / "journeys" / "onboarding.yaml").read_text())
    for step in spec["steps"]:
        if "wait" in step or "wait_until" in step:
            step.pop("wait_until", None)
            step["wait"] = f"{WAIT_SECONDS}s"
    directory.mkdir()
    (directory / "onboarding.yaml").write_text(yaml.safe_dump(spec))
    return directory


async def timed(
    client: TidingsClient,
    count: int,
    prefix: str,
    start: Callable[[str], Awaitable[str]],
) -> tuple[float, list[str]]:
    """Journeys per second from the first start to the last completion; workflow ids."""
    keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    for key in keys:
        await client.identify(key, jurisdiction="US", emails=[f"{key}@bench.example"])
    began = time.perf_counter()
    ids: list[str] = []

    async def start_one(key: str) -> None:
        ids.append(await start(key))

    await bounded(start_one(key) for key in keys)
    await bounded(client.temporal.get_workflow_handle(i).result() for i in ids)
    return count / (time.perf_counter() - began), ids


def tidings_start(client: TidingsClient) -> Callable[[str], Awaitable[str]]:
    async def start(key: str) -> str:
        await client.track(key, "signed_up")
        return naming.journey_workflow_id("onboarding", key)

    return start


def bare_start(
    temporal: Client, steps: Steps, *, bookkeeping: bool
) -> Callable[[str], Awaitable[str]]:
    async def start(key: str) -> str:
        trigger = JourneyEvent(
            event_id=uuid.uuid4().hex, name="signed_up", occurred_at=datetime.now(UTC)
        )
        handle = await temporal.start_workflow(
            BareOnboarding.run,
            BareInput(contact_key=key, trigger=trigger, steps=steps, bookkeeping=bookkeeping),
            id=f"bare/{key}",
            task_queue=BARE_TASK_QUEUE,
        )
        return handle.id

    return start


async def measure(journeys: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = await start_dev_server(tmp / "temporal.db")
        settings = Settings(
            data_dir=tmp, journeys_dir=shortened_onboarding(tmp / "journeys"), send_drafts=True
        )
        catalog = Catalog.from_settings(settings)
        database = Database.for_settings(settings)
        TemplateAdmin(database, settings).push(actor="benchmark")
        steps = bare_steps(catalog.journeys["onboarding"], wait_seconds=WAIT_SECONDS)
        sends = sum(1 for _, template, _ in steps if template)
        with SmtpSink(tmp / "outbox") as sink, ThreadPoolExecutor(8) as executor:
            parts = WorkerParts(
                client=env.client,
                settings=settings,
                catalog=catalog,
                database=database,
                email_provider=SmtpProvider(SmtpConfig(host=sink.host, port=sink.port)),
            )
            client = TidingsClient(
                temporal=env.client, database=database, catalog=catalog, settings=settings
            )
            bare = bare_worker(env.client, database, catalog.policy, executor)
            variants = {
                "tidings": tidings_start(client),
                "bare": bare_start(env.client, steps, bookkeeping=True),
                "bare_sends_only": bare_start(env.client, steps, bookkeeping=False),
            }
            rates: dict[str, list[float]] = {name: [] for name in variants}
            last_ids: dict[str, str] = {}
            async with running_workers(parts), bare:
                for name, start in variants.items():  # warm up every path
                    await timed(client, 10, name, start)
                for _ in range(rounds):
                    for name, start in variants.items():
                        rate, ids = await timed(client, journeys, name, start)
                        rates[name].append(rate)
                        last_ids[name] = ids[0]
                events = {
                    name: await events_per_message(env.client, last_ids[name], sends)
                    for name in variants
                }
        database.dispose()
        await env.shutdown()
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "recorded_at": recorded_at(),
        "machine": machine(),
        "journeys_per_round": journeys,
        "rounds": rounds,
        "journeys_per_second": {name: round(value, 2) for name, value in median.items()},
        "ratio_vs_bare": round(median["tidings"] / median["bare"], 3),
        "target_ratio": TARGET_RATIO,
        "ratio_vs_bare_sends_only": round(median["tidings"] / median["bare_sends_only"], 3),
        "history_events_per_message": {name: round(value, 1) for name, value in events.items()},
        "all_rates": {name: [round(v, 2) for v in values] for name, values in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    write_results("journey_overhead", asyncio.run(measure(args.journeys, args.rounds)))


if __name__ == "__main__":
    main()
