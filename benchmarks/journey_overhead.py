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
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from bare import BareInput, BareOnboarding  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider  # noqa: E402
from tidings.activities.journal import JourneyJournal  # noqa: E402
from tidings.activities.policy import PolicyGate  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db.engine import Database  # noqa: E402
from tidings.models.events import JourneyEvent  # noqa: E402
from tidings.settings import PACKAGE_DIR, Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402
from tidings.starter.dev import find_binary  # noqa: E402
from tidings.starter.smtp_sink import SmtpSink  # noqa: E402
from tidings.starter.template_admin import TemplateAdmin  # noqa: E402
from tidings.worker import WorkerParts, running_workers, sandbox_runner  # noqa: E402

RESULTS = HERE / "results" / "journey_overhead.json"
WAIT_SECONDS = 1
TARGET_RATIO = 0.87
BARE_TASK_QUEUE = "bench-bare"
"""Its own queue (one process may not poll a queue twice); sends share tidings' email queue."""

Steps = list[tuple[str, str, float]]


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


def bare_steps(catalog: Catalog) -> Steps:
    """The journey's sends and waits, in order, for the bare workflow."""
    steps: Steps = []
    for step in catalog.journeys["onboarding"].steps:
        if step.kind == "send":
            steps.append((step.id, step.send.template, 0.0))  # type: ignore[union-attr]
        else:
            previous = steps.pop() if steps else ("start", "", 0.0)
            steps.append((previous[0], previous[1], previous[2] + WAIT_SECONDS))
    return steps


async def bounded(calls: Iterable[Awaitable[object]], limit: int = 50) -> None:
    """Await all, at most `limit` at a time (as a backend's connection pool would)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[object]) -> None:
        async with semaphore:
            await call

    await asyncio.gather(*(one(call) for call in calls))


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


async def events_per_message(temporal: Client, workflow_id: str, messages: int) -> float:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events) / messages


async def measure(journeys: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=find_binary("temporal"),
            dev_server_database_filename=str(tmp / "temporal.db"),
            dev_server_extra_args=[
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ],
            search_attributes=naming.SEARCH_ATTRIBUTES,
        )
        settings = Settings(
            data_dir=tmp, journeys_dir=shortened_onboarding(tmp / "journeys"), send_drafts=True
        )
        catalog = Catalog.from_settings(settings)
        database = Database(settings.database_url)
        TemplateAdmin(database, settings).push(actor="benchmark")
        steps = bare_steps(catalog)
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
            journal = JourneyJournal(database)
            gate = PolicyGate(database, catalog.policy, default_timezone="UTC")
            bare_worker = Worker(
                env.client,
                task_queue=BARE_TASK_QUEUE,
                workflows=[BareOnboarding],
                activities=[journal.enter_journey, journal.exit_journey, gate.check_policy],
                activity_executor=executor,
                workflow_runner=sandbox_runner(),
            )
            variants = {
                "tidings": tidings_start(client),
                "bare": bare_start(env.client, steps, bookkeeping=True),
                "bare_sends_only": bare_start(env.client, steps, bookkeeping=False),
            }
            rates: dict[str, list[float]] = {name: [] for name in variants}
            last_ids: dict[str, str] = {}
            async with running_workers(parts), bare_worker:
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
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
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
    figures = asyncio.run(measure(args.journeys, args.rounds))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
