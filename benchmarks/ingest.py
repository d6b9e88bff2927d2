"""Ingest: `track()` and the HTTP event API until the journey has started, vs a bare
signal-with-start.

    python benchmarks/ingest.py [--events 300] [--rounds 3] [--concurrency 1,16]

One dev server (SQLite, WAL) and one app database (SQLite); no worker runs, so
nothing competes with the calls being timed. A call ends when the server has
accepted the start: from then the journey is durable and a worker takes it
from the queue. Variants, on the same server (all but `http` from this process):

- tidings: `TidingsClient.track(key, "signed_up")` for a new contact, with the
  example journeys loaded: validate the event, store it and check reentry in
  one app-database transaction, signal-with-start the onboarding journey
  (input: the journey's spec), mark the event routed;
- http: `POST /v1/track` (Segment's wire format, write key over Basic auth) to
  `tidings serve` in a process of its own on the same database and server,
  timed from the first post until the service's router has routed every
  event into its journey (the same signal-with-start as `tidings`); the
  latencies are the posts' (accept: validate, one queue write, 200);
- bare: `start_workflow(..., start_signal=...)` of a workflow type no worker
  runs, with the same event as its signal: Temporal's own cost of the start.

Each variant runs `--events` calls per round at each concurrency, variants
alternating, so the machine's noise hits them alike; figures are medians over
rounds. Writes them to benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

import httpx  # noqa: E402
from common import (  # noqa: E402
    ChildProcess,
    Timing,
    add_contacts,
    address_of,
    bounded,
    machine,
    recorded_at,
    start_dev_server,
    write_results,
)
from temporalio.client import Client  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db import ingest_queue  # noqa: E402
from tidings.db.engine import Database  # noqa: E402
from tidings.models.events import JourneyEvent  # noqa: E402
from tidings.settings import Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402
from tidings.starter.ports import free_port  # noqa: E402

EVENT = "signed_up"
BARE_TASK_QUEUE = "bench-ingest"
WARM_UP = 20
WRITE_KEY = "bench-write-key-0123456789"

Start = Callable[[str], Awaitable[object]]
Variant = Callable[[str, int, int], Awaitable[Timing]]
"""(prefix, events, concurrency) -> the round's figures."""


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


def http_variant(database: Database, http: httpx.AsyncClient) -> Variant:
    async def run(prefix: str, count: int, concurrency: int) -> Timing:
        """`count` events posted for new contacts, until all are routed; the latencies
        are the posts' own."""
        keys = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        add_contacts(database, keys)
        latencies: list[float] = []

        async def one(key: str) -> None:
            began = time.perf_counter()
            answer = await http.post(
                "/v1/track", json={"userId": key, "event": EVENT, "messageId": uuid.uuid4().hex}
            )
            if answer.status_code != 200:
                raise RuntimeError(f"POST /v1/track: {answer.status_code} {answer.text}")
            latencies.append((time.perf_counter() - began) * 1000)

        began = time.perf_counter()
        await bounded((one(key) for key in keys), limit=concurrency)
        await until_routed(database)
        return Timing.of(latencies, time.perf_counter() - began)

    return run


async def until_routed(database: Database) -> None:
    while True:
        counts = await database.run(lambda session: ingest_queue.counts(session=session))
        if counts[ingest_queue.DEAD]:
            raise RuntimeError(f"events could not be routed: `tidings ingest list` ({counts})")
        if not counts[ingest_queue.PENDING]:
            return
        await asyncio.sleep(0.01)


def serve_process(settings: Settings, temporal: str, log: Path) -> tuple[ChildProcess, str]:
    """`tidings serve` in a process of its own, on the benchmark's database and server."""
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal,
        "TIDINGS_DATA_DIR": str(settings.data_dir),
        "TIDINGS_WRITE_KEYS": f"bench:{WRITE_KEY}:0",  # no rate limit
    }
    command = [sys.executable, "-m", "tidings.starter.cli", "serve", "--port", str(port)]
    return ChildProcess(command, log, "HTTP service on", env).start(), f"http://127.0.0.1:{port}"


async def until_healthy(http: httpx.AsyncClient, service: ChildProcess) -> None:
    await service.wait_ready()
    while True:
        if service.exited() is not None:
            raise RuntimeError(f"tidings serve exited: {service.tail()}")
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)


async def measure(events: int, rounds: int, concurrencies: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = await start_dev_server(tmp / "temporal.db")
        settings = Settings(data_dir=tmp / "data")  # the example journeys
        database = Database.for_settings(settings)
        service, url = serve_process(settings, address_of(env.client), tmp / "serve.log")
        http = httpx.AsyncClient(base_url=url, auth=(WRITE_KEY, ""), timeout=60)
        try:
            await until_healthy(http, service)
            client = TidingsClient(
                temporal=env.client,
                database=database,
                catalog=Catalog.from_settings(settings),
                settings=settings,
            )

            def in_process(start: Start) -> Variant:
                return lambda prefix, count, concurrency: timed(
                    database, start, prefix, count, concurrency
                )

            variants: dict[str, Variant] = {
                "tidings": in_process(tidings_start(client)),
                "http": http_variant(database, http),
                "bare": in_process(bare_start(env.client)),
            }
            found: dict[int, dict[str, list[Timing]]] = {
                c: {name: [] for name in variants} for c in concurrencies
            }
            for name, run in variants.items():
                await run(f"warm-{name}", WARM_UP, max(concurrencies))
            for _ in range(rounds):
                for concurrency, by_name in found.items():
                    for name, run in variants.items():
                        by_name[name].append(await run(name, events, concurrency))
        finally:
            await http.aclose()
            service.stop()
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
            # http: events routed into journeys per second; its p50/p99 are accept latencies
            "http_ratio_vs_bare": round(median["http"].per_second / median["bare"].per_second, 3),
            "http_accept_p99_ms": round(median["http"].p99_ms, 2),
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
