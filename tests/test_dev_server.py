"""On the real Temporal dev server: restarts lose nothing and send nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from datetime import timedelta
from pathlib import Path

import httpx
from support import EXAMPLE_TEMPLATES, eventually, publish, running_stack
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tidings import naming
from tidings.connection import create_commands, missing_search_attributes
from tidings.db.engine import Database
from tidings.models.events import JourneyEvent
from tidings.models.workflow_io import JourneyResult, JourneyStatus
from tidings.settings import PACKAGE_DIR, Settings
from tidings.starter.client import TidingsClient
from tidings.starter.dev import find_binary
from tidings.starter.outbox import read_email_outbox
from tidings.starter.ports import free_port, port_in_use
from tidings.starter.smtp_sink import SmtpSink

QUICK_JOURNEYS = Path(__file__).parent / "fixtures" / "quick-journeys"


async def test_a_worker_stopped_mid_journey_finishes_it_once_after_restart(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    options = {"data_dir": tmp_path / "data", "smtp": smtp, "journeys_dir": QUICK_JOURNEYS}
    async with running_stack(dev_server, **options) as stack:  # type: ignore[arg-type]
        await stack.client.identify(contact_key, jurisdiction="US", emails=["restart@example.com"])
        await stack.client.track(contact_key, "ping")
        await eventually(lambda: asyncio.to_thread(lambda: len(stack.outbox()) == 1))
    # The worker is gone while the journey sleeps; its timer comes due meanwhile.
    await asyncio.sleep(5)
    assert len(read_email_outbox(smtp.maildir_path)) == 1

    async with running_stack(dev_server, **options) as stack:  # type: ignore[arg-type]
        result = await stack.result("quick", contact_key, timeout=30)

        assert (result.outcome, result.sends) == ("completed", 2)
        assert [s.step_id for s in stack.sent()] == ["hello", "follow-up"]
        assert sorted(d.status for d in stack.deliveries()) == ["sent", "sent"]


class DevProcess:
    """`tidings dev` as a user runs it, in a subprocess with its own ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {
            "temporal": free_port(),
            "ui": free_port(),
            "smtp": free_port(),
            "http": free_port(),
            "metrics": free_port(),
        }
        self.env = {
            **os.environ,
            "TIDINGS_DATA_DIR": str(data_dir),
            "TIDINGS_JOURNEYS_DIR": str(QUICK_JOURNEYS),
            "TIDINGS_TEMPLATES_DIR": str(EXAMPLE_TEMPLATES),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.ports['temporal']}",
        }
        self.process: asyncio.subprocess.Process | None = None
        self.output = ""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            find_binary("tidings"),
            "dev",
            "--temporal-port",
            str(self.ports["temporal"]),
            "--ui-port",
            str(self.ports["ui"]),
            "--smtp-port",
            str(self.ports["smtp"]),
            "--http-port",
            str(self.ports["http"]),
            "--metrics-port",
            str(self.ports["metrics"]),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        while "tidings explain" not in self.output:  # the banner's last line
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
            assert line, f"tidings dev exited early:\n{self.output}"
            self.output += line.decode()

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(self.process.communicate(), 60)
        self.output += rest.decode()
        return self.process.returncode or 0

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def cli(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            find_binary("tidings"),
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, f"tidings {' '.join(args)}: {err.decode()}"
        return out.decode()

    async def outbox(self) -> list[dict[str, str]]:
        return list(json.loads(await self.cli("outbox", "--json")))


async def test_tidings_dev_runs_the_stack_and_resumes_sleeping_journeys_after_a_restart(
    tmp_path: Path,
) -> None:
    dev = DevProcess(tmp_path / "data")
    try:
        await dev.start()
        assert f"http://localhost:{dev.ports['ui']}" in dev.output
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{dev.ports['http']}/health")
        assert health.json() == {"status": "ok"}
        await dev.cli(
            "identify", "dev-1", "--email", "dev@example.com", "--trait", "first_name=Dev"
        )
        tracked = await dev.cli("track", "dev-1", "ping", "--event-id", "ping-1")
        assert "triggered journey quick" in tracked
        await eventually(lambda: dev.outbox())
        status = await dev.cli("status", "dev-1")
        assert "step pause (wait)" in status
        await eventually(lambda: _scrape(dev.ports["metrics"], "tidings_send_outcomes"))
        metrics = await _scrape(dev.ports["metrics"], "tidings_send_outcomes")
        # tidings' own series and the Temporal SDK's, on the worker's one endpoint.
        assert 'channel="email"' in metrics and 'outcome="sent"' in metrics
        assert "tidings_journeys_entered" in metrics and 'journey="quick"' in metrics
        assert "tidings_policy_decisions" in metrics
        assert "temporal_workflow_task_execution_latency" in metrics
        assert "dev@example.com" not in metrics

        assert await dev.stop() == 0
        assert "tidings dev stopped" in dev.output
        assert not any(port_in_use(port) for port in dev.ports.values())
        await asyncio.sleep(10)  # the journey's timer comes due while nothing runs

        await dev.start()
        messages = await eventually(lambda: _two(dev))
        assert [m["subject"] for m in messages] == [
            "Welcome to Acme, Dev!",
            "How is it going, Dev?",
        ]
        again = await dev.cli("track", "dev-1", "ping", "--event-id", "ping-1")
        assert "already tracked" in again
        assert await dev.stop() == 0
        assert len(await dev.outbox()) == 2  # nothing was sent twice
        assert (tmp_path / "data" / "temporal.db").is_file()
    finally:
        dev.kill()


async def _two(dev: DevProcess) -> list[dict[str, str]]:
    messages = await dev.outbox()
    assert len(messages) == 2, messages
    return messages


async def test_python_worker_py_runs_the_worker_alone_against_a_cluster(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    database = Database(database_url)
    publish(database)
    database.dispose()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_DATA_DIR": str(tmp_path),
        "TIDINGS_JOURNEYS_DIR": str(QUICK_JOURNEYS),
        "TIDINGS_SMTP_HOST": smtp.host,
        "TIDINGS_SMTP_PORT": str(smtp.port),
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PACKAGE_DIR / "worker.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        settings = Settings(database_url=database_url, journeys_dir=QUICK_JOURNEYS)
        client = await TidingsClient.connect(settings, temporal=dev_server.client)
        await client.identify(contact_key, jurisdiction="US", emails=["alone@example.com"])
        await client.track(contact_key, "ping")
        messages = await eventually(
            lambda: asyncio.to_thread(
                lambda: len(read_email_outbox(smtp.maildir_path, to="alone@example.com")) == 2
            ),
            timeout=40,
        )
        assert messages
        client.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, output.decode()
    assert "worker stopped" in output.decode()


async def test_a_trigger_seen_by_the_ending_entry_itself_continues_into_a_new_entry(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    """The race made certain: with no worker running, an exit event and a new trigger
    both wait in the history, so the entry sees the trigger while it ends."""
    options = {"data_dir": tmp_path, "smtp": smtp, "journeys_dir": QUICK_JOURNEYS}
    async with running_stack(dev_server, **options) as s:  # type: ignore[arg-type]
        await s.client.identify(contact_key, jurisdiction="US", emails=["same-task@example.com"])
        await s.client.track(contact_key, "ping")
        handle = s.handle("quick", contact_key)
        await eventually(lambda: _waiting(handle))
    now = await dev_server.get_current_time()
    for event_id, name in (("stop-1", "stop"), ("ping-2", "ping")):  # no worker runs now
        event = JourneyEvent(event_id=event_id, name=name, occurred_at=now)
        await handle.signal(naming.EVENT_SIGNAL, event)

    async with running_stack(dev_server, **options) as s:  # type: ignore[arg-type]
        result = await s.result("quick", contact_key, timeout=40)
        runs = sorted(s.journey_runs(contact_key), key=lambda r: r.entry)
        first = await dev_server.client.get_workflow_handle(
            handle.id, run_id=runs[0].run_id
        ).describe()

        assert (result.entry, result.outcome) == (2, "completed")
        assert [(r.entry, r.outcome) for r in runs] == [(1, "exited"), (2, "completed")]
        assert first.status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def _waiting(handle: WorkflowHandle[object, JourneyResult]) -> bool:
    status: JourneyStatus = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
    return status.step_id == "pause"


async def _scrape(port: int, wanted: str) -> str:
    """The worker's /metrics text once it holds `wanted` (empty before)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return text if wanted in text else ""


async def test_the_printed_registration_command_registers_every_search_attribute() -> None:
    """The command the worker prints for a cluster's operators works as printed."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    try:
        client = env.client
        assert set(await missing_search_attributes(client)) == {
            key.name for key in naming.SEARCH_ATTRIBUTES
        }
        (command,) = create_commands(client.namespace)
        address = client.service_client.config.target_host
        process = await asyncio.create_subprocess_exec(
            find_binary("temporal"),
            *shlex.split(command)[1:],
            "--address",
            address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, output.decode()
        assert await missing_search_attributes(client) == []
    finally:
        await env.shutdown()
