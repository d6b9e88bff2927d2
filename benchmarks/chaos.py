"""Chaos: journeys keep their promises while the worker is killed and the server restarts.

    python benchmarks/chaos.py [--journeys 1000] [--kill-every 10] [--waits 10,20]
    pytest -m chaos tests/test_chaos.py          # the same run as a test, on demand

1,000 journeys (send, wait, send, wait, send) run while:

- the worker, the standalone one (`python -m tidings.worker`) in a child
  process, is SIGKILLed every `--kill-every` seconds and started again at
  once (and whenever it exits by itself, as it does when it starts while the
  server is down);
- the Temporal dev server, run as `tidings dev` runs it (starter/dev.py: a
  SQLite file in the data dir), is stopped once mid-run and started again on
  the same file.

The SMTP server (the dev Maildir sink) and the app database (SQLite) stay up.
The run goes on, killing, until every journey has ended. Then:

- every journey workflow is Completed, with outcome `completed`;
- the deliveries table has one row per journey and send step, all `sent`;
- the Maildir has each of those messages exactly once (matched by the
  X-Tidings-Delivery header each email carries, and by its Message-ID, which
  is stable per send): none lost, none twice.

Prints progress on stderr, the report on stdout, and writes it to
benchmarks/results/chaos.json; the report's `problems` is empty when all held.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    TIDINGS_WORKER,
    TIDINGS_WORKER_READY,
    ChildProcess,
    add_contacts,
    bounded,
    email,
    machine,
    recorded_at,
    worker_env,
    write_journey,
    write_results,
)
from sqlmodel import col, select  # noqa: E402
from temporalio.client import Client  # noqa: E402

from tidings import naming  # noqa: E402
from tidings.activities.send import RELAY_ABSENT, RELAY_FOUND  # noqa: E402
from tidings.catalog import Catalog  # noqa: E402
from tidings.db.engine import Database, scratch_schema  # noqa: E402
from tidings.models.tables import Delivery, DeliveryEventRecord  # noqa: E402
from tidings.models.workflow_io import JourneyResult  # noqa: E402
from tidings.settings import Settings  # noqa: E402
from tidings.starter.client import TidingsClient  # noqa: E402
from tidings.starter.dev import DevPorts, temporal_dev_server  # noqa: E402
from tidings.starter.outbox import read_email_outbox  # noqa: E402
from tidings.starter.ports import free_port  # noqa: E402
from tidings.starter.smtp_sink import SmtpSink  # noqa: E402
from tidings.starter.template_admin import TemplateAdmin  # noqa: E402

JOURNEY = "chaos"
SEND_STEPS = ("hello", "nudge", "last")
SHOWN = 20
"""Cases listed one by one in the report, at most (all are counted)."""


@dataclass(frozen=True)
class Options:
    journeys: int = 1_000
    kill_every: float = 10.0
    waits: tuple[int, int] = (10, 20)
    """Seconds of the journey's two waits."""
    restart_after: float = 15.0
    """Seconds after the last journey started when the dev server is restarted."""
    timeout: float = 1_800.0
    """Seconds the journeys have to end, from the last one's start."""
    database_url: str = ""
    """The app database; empty for SQLite in the run's data dir."""


def journey_spec(waits: tuple[int, int]) -> dict[str, Any]:
    return {
        "name": JOURNEY,
        "version": 1,
        "description": "Three emails with waits between them, for the chaos run.",
        "trigger": {"event": "signed_up"},
        "reentry": {"policy": "never"},
        "steps": [
            {"id": "hello", "send": email("welcome")},
            {"id": "pause", "wait": f"{waits[0]}s"},
            {"id": "nudge", "send": email("check-in")},
            {"id": "pause-again", "wait": f"{waits[1]}s"},
            {"id": "last", "send": email("check-in")},
        ],
    }


def say(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:7.1f} s] {message}", file=sys.stderr, flush=True)


class DevServer:
    """The dev server as `tidings dev` runs it, stopped and started again on its file."""

    def __init__(self, settings: Settings, ports: DevPorts) -> None:
        self.settings, self.ports = settings, ports
        self._running = AsyncExitStack()

    async def start(self) -> Client:
        return await self._running.enter_async_context(
            temporal_dev_server(self.settings, self.ports)
        )

    async def stop(self) -> None:
        await self._running.aclose()


class WorkerKiller:
    """Keeps one worker process running and SIGKILLs it every `every` seconds."""

    def __init__(self, env: dict[str, str], logs: Path, every: float, began: float) -> None:
        self.env, self.logs, self.every, self.began = env, logs, every, began
        self.kills: list[float] = []
        """When each kill happened, in seconds from the run's start."""
        self.exits: list[dict[str, Any]] = []
        """Workers that ended by themselves: when, exit code, their last words."""
        self.started = 0
        self.startups: list[float] = []
        """Seconds from each start to the worker running, for those that got there."""

    def _start(self) -> tuple[ChildProcess, float]:
        self.started += 1
        log = self.logs / f"worker-{self.started}.log"
        worker = ChildProcess(TIDINGS_WORKER, log, TIDINGS_WORKER_READY, self.env).start()
        return worker, time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        worker, since = self._start()
        ready = False
        next_kill = time.monotonic() + self.every
        while not stop.is_set():
            await asyncio.sleep(0.1)
            if not ready and worker.is_ready():
                ready = True
                self.startups.append(time.monotonic() - since)
            code = worker.exited()
            if code is not None:
                self.exits.append(
                    {"at": self._now(), "code": code, "log_tail": worker.tail(400).strip()}
                )
                await asyncio.sleep(1)  # it could not connect: the server is restarting
                (worker, since), ready = self._start(), False
            elif time.monotonic() >= next_kill:
                worker.kill()
                self.kills.append(self._now())
                next_kill += self.every
                (worker, since), ready = self._start(), False
        worker.stop()

    def _now(self) -> float:
        return round(time.monotonic() - self.began, 1)


async def until_all_ended(client: Client, count: int, timeout: float, began: float) -> bool:
    """Poll visibility until `count` journeys exist and none runs; False on timeout."""
    deadline = time.monotonic() + timeout
    journeys = f'WorkflowType="{naming.JOURNEY_WORKFLOW}"'
    while time.monotonic() < deadline:
        total = (await client.count_workflows(journeys)).count
        running = (await client.count_workflows(f'{journeys} AND ExecutionStatus="Running"')).count
        say(began, f"journeys: {total} started, {running} running")
        if total >= count and running == 0:
            return True
        await asyncio.sleep(5)
    return False


async def journey_ends(client: Client, keys: Sequence[str]) -> dict[str, Counter[str]]:
    """How each journey's workflow ended, and its own outcome when it completed."""
    statuses: Counter[str] = Counter()
    async for execution in client.list_workflows(f'WorkflowType="{naming.JOURNEY_WORKFLOW}"'):
        statuses[execution.status.name if execution.status else "UNKNOWN"] += 1
    outcomes: Counter[str] = Counter()

    async def outcome(key: str) -> None:
        handle = client.get_workflow_handle(
            naming.journey_workflow_id(JOURNEY, key), result_type=JourneyResult
        )
        try:
            result = await asyncio.wait_for(handle.result(), 30)
        except Exception as err:  # a failed or still running journey: counted, not raised
            outcomes[f"no result: {type(err).__name__}"] += 1
            return
        outcomes[f"{result.outcome}, {result.sends} sent"] += 1

    await bounded((outcome(key) for key in keys), limit=50)
    return {"statuses": statuses, "outcomes": outcomes}


def deliveries_and_mail(
    database: Database, maildir: Path, keys: Sequence[str], kills: Sequence[float], began: float
) -> dict[str, Any]:
    """Each expected email against its delivery row and what the SMTP server kept."""
    with database.session() as session:
        rows = list(session.exec(select(Delivery).where(col(Delivery.journey) == JOURNEY)).all())
        from_record = Counter(
            session.exec(
                select(DeliveryEventRecord.provider_status).where(
                    col(DeliveryEventRecord.provider_status).in_((RELAY_FOUND, RELAY_ABSENT))
                )
            ).all()
        )
    messages = read_email_outbox(maildir)
    by_id = {row.id: row for row in rows}
    expected = {(key, step) for key in keys for step in SEND_STEPS}
    row_count = Counter((row.contact_key, row.step_id) for row in rows)
    received = Counter(
        (by_id[m.delivery_id].contact_key, by_id[m.delivery_id].step_id)
        for m in messages
        if m.delivery_id in by_id
    )
    copies = Counter(m.delivery_id for m in messages)
    message_ids = Counter(m.message_id for m in messages)
    clock = RunClock(began, kills)
    arrived = {m.delivery_id: clock.seconds(m.received_at) for m in messages}

    def evidence(row: Delivery) -> dict[str, Any]:
        """When the send was claimed (its attempt's start, `counted_at`) and when it reached
        the SMTP server, in seconds from the run's start, against the kills."""
        claimed = clock.seconds(row.counted_at)
        return {
            "contact": row.contact_key,
            "step": row.step_id,
            "status": row.status,
            "error": row.error,
            "copies_received": copies[row.id],
            "claimed_at": claimed,
            "received_at": arrived.get(row.id),
            "next_kill_after_claim": clock.to_next_kill(claimed),
            "settled_after_claim": round(clock.seconds(row.updated_at) - claimed, 1),
        }

    not_sent = [evidence(row) for row in rows if row.status != "sent"]
    gaps = [clock.to_next_kill(clock.seconds(row.counted_at)) for row in rows]
    sent_gaps = [gap for row, gap in zip(rows, gaps, strict=True) if row.status == "sent"]
    not_sent_gaps = [gap for row, gap in zip(rows, gaps, strict=True) if row.status != "sent"]
    lost = sorted(expected - set(received))
    twice = sorted(pair for pair, n in received.items() if n > 1)
    return {
        "deliveries": {
            "expected": len(expected),
            "rows": len(rows),
            "by_status": dict(Counter(row.status for row in rows)),
            "missing_rows": len(expected - set(row_count)),
            "extra_rows": sum(n - 1 for n in row_count.values() if n > 1),
            "not_sent_delivered_anyway": sum(1 for r in not_sent if r["copies_received"] == 1),
            "not_sent_never_delivered": sum(1 for r in not_sent if r["copies_received"] == 0),
            # Sends a kill cut short mid-hand-over, settled from the SMTP sink's Maildir.
            "confirmed_from_relay_record": from_record[RELAY_FOUND],
            "resent_after_relay_record_absent": from_record[RELAY_ABSENT],
            # A send cut by a kill was claimed just before it; the others, anywhere in
            # the 10 s between kills.
            "seconds_from_claim_to_next_kill": {
                "not_sent_max": max((g for g in not_sent_gaps if g is not None), default=None),
                "not_sent_median": median_of(not_sent_gaps),
                "sent_median": median_of(sent_gaps),
            },
            "not_sent_never_delivered_first": [r for r in not_sent if r["copies_received"] == 0][
                :SHOWN
            ],
            "not_sent_first": not_sent[:SHOWN],
        },
        "smtp": {
            "messages": len(messages),
            "lost": len(lost),
            "lost_first": [f"{key}/{step}" for key, step in lost[:SHOWN]],
            "duplicates": len(twice),
            "duplicates_first": [f"{key}/{step}" for key, step in twice[:SHOWN]],
            "duplicate_message_ids": sum(1 for n in message_ids.values() if n > 1),
            "without_a_known_delivery": sum(1 for m in messages if m.delivery_id not in by_id),
        },
    }


class RunClock:
    """Timestamps (the server's, the database's, the SMTP server's: one machine's clock)
    as seconds from the run's start, where the kills are recorded."""

    def __init__(self, began: float, kills: Sequence[float]) -> None:
        self.start = datetime.now(UTC).timestamp() - (time.monotonic() - began)
        self.kills = sorted(kills)

    def seconds(self, at: datetime | None) -> float:
        assert at is not None
        aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return round(aware.timestamp() - self.start, 2)

    def to_next_kill(self, moment: float) -> float | None:
        """Seconds from `moment` to the first kill after it (None: no kill came after)."""
        index = bisect.bisect_left(self.kills, moment)
        return round(self.kills[index] - moment, 2) if index < len(self.kills) else None


def median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def problems(report: dict[str, Any], count: int) -> list[str]:
    """What broke the run's promises; empty when every one held."""
    found = []
    ends, deliveries, smtp = report["journeys"], report["deliveries"], report["smtp"]
    if not report["all_ended"]:
        found.append("journeys still running at the timeout")
    if ends["statuses"] != {"COMPLETED": count}:
        found.append(f"workflow statuses: {ends['statuses']}")
    if ends["outcomes"] != {f"completed, {len(SEND_STEPS)} sent": count}:
        found.append(f"journey outcomes: {ends['outcomes']}")
    if deliveries["by_status"] != {"sent": deliveries["expected"]}:
        found.append(f"deliveries: {deliveries['by_status']}, expected {deliveries['expected']}")
    for key in ("missing_rows", "extra_rows"):
        if deliveries[key]:
            found.append(f"deliveries {key.replace('_', ' ')}: {deliveries[key]}")
    for key in ("lost", "duplicates", "duplicate_message_ids", "without_a_known_delivery"):
        if smtp[key]:
            found.append(f"smtp {key.replace('_', ' ')}: {smtp[key]}")
    return found


async def run(options: Options, tmp: Path) -> dict[str, Any]:
    """The whole run in `tmp` (its data dir, logs); returns the report."""
    began = time.monotonic()
    settings = Settings(
        data_dir=tmp / "data",
        journeys_dir=write_journey(tmp / "journeys", journey_spec(options.waits)),
        send_drafts=True,
        email_from="Acme <hello@acme.example>",
        database_url=options.database_url,
    )
    server = DevServer(settings, DevPorts(temporal=free_port(), ui=free_port()))
    client = await server.start()
    say(began, f"dev server up on 127.0.0.1:{server.ports.temporal}")
    database = Database.for_settings(settings)
    keys = [f"chaos-{n:05d}" for n in range(options.journeys)]
    logs = tmp / "logs"
    logs.mkdir()
    stop = asyncio.Event()
    killing: asyncio.Task[None] | None = None
    try:
        TemplateAdmin(database, settings).push(actor="chaos")
        add_contacts(database, keys)
        with SmtpSink(tmp / "outbox") as smtp:
            env = worker_env(settings, f"127.0.0.1:{server.ports.temporal}", smtp_port=smtp.port)
            # A send a kill cuts short mid-hand-over is settled from what the sink kept.
            env["TIDINGS_SMTP_RECORD"] = f"maildir:{smtp.maildir_path}"
            killer = WorkerKiller(env, logs, options.kill_every, began)
            killing = asyncio.create_task(killer.run(stop))
            tidings = TidingsClient(
                temporal=client,
                database=database,
                catalog=Catalog.from_settings(settings),
                settings=settings,
            )
            await bounded((tidings.track(key, "signed_up") for key in keys), limit=16)
            ingest = time.monotonic() - began
            say(began, f"{len(keys)} journeys started; {len(killer.kills)} kills so far")
            await asyncio.sleep(options.restart_after)
            restart_at = time.monotonic() - began
            say(began, "stopping the dev server")
            await server.stop()
            client = await server.start()
            down = time.monotonic() - began - restart_at
            say(began, f"dev server back after {down:.1f} s")
            ended = await until_all_ended(client, len(keys), options.timeout, began)
            finished = time.monotonic() - began
            stop.set()
            await killing
            say(began, f"done: {len(killer.kills)} kills; checking")
            report: dict[str, Any] = {
                "recorded_at": recorded_at(),
                "machine": machine(
                    database=database.engine.dialect.name, smtp="tidings dev SMTP sink"
                ),
                "options": dataclasses.asdict(options),
                "all_ended": ended,
                "seconds": {
                    "total": round(finished, 1),
                    "starting_journeys": round(ingest, 1),
                },
                "worker": {
                    "sigkills": len(killer.kills),
                    "starts": killer.started,
                    "exited_by_itself": len(killer.exits),
                    "exits": killer.exits[:SHOWN],
                    "kill_times": killer.kills,
                    "startup_seconds_median": (
                        round(statistics.median(killer.startups), 1) if killer.startups else None
                    ),
                },
                "dev_server": {
                    "restarts": 1,
                    "stopped_at_seconds": round(restart_at, 1),
                    "down_seconds": round(down, 1),
                },
                "journeys": await journey_ends(client, keys),
                **deliveries_and_mail(database, smtp.maildir_path, keys, killer.kills, began),
            }
    finally:
        stop.set()
        if killing is not None:
            await killing  # it stops the last worker
        await server.stop()
        database.dispose()
    report["problems"] = problems(report, len(keys))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Options()
    parser.add_argument("--journeys", type=int, default=defaults.journeys)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every)
    parser.add_argument(
        "--waits", default=",".join(map(str, defaults.waits)), help="the two waits, seconds"
    )
    parser.add_argument("--restart-after", type=float, default=defaults.restart_after)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on this PostgreSQL server, in a schema of its own (dropped afterwards), "
        "e.g. postgresql://postgres@127.0.0.1:5432/test; results go to chaos-postgresql.json",
    )
    args = parser.parse_args()
    first, second = (int(w) for w in args.waits.split(","))
    options = Options(
        journeys=args.journeys,
        kill_every=args.kill_every,
        waits=(first, second),
        restart_after=args.restart_after,
        timeout=args.timeout,
    )
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(scratch_schema(args.postgres, "tidings_chaos"))
            options = dataclasses.replace(options, database_url=url)
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        report = asyncio.run(run(options, Path(tmp)))
    write_results("chaos-postgresql" if args.postgres else "chaos", report)
    if report["problems"]:
        print("problems:\n  " + "\n  ".join(report["problems"]), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
