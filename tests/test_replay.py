"""Recorded histories of every example journey replay with the current code.

A change to workflow code that would break sleeping journeys (nondeterminism)
fails here. Re-record with `python tests/histories/record.py` only for a
deliberate change, guarded by `workflow.patched` (see README).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import eventually, running_stack
from temporalio import workflow
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

from tidings import naming
from tidings.starter import replay as live
from tidings.starter.cli import app as cli
from tidings.starter.smtp_sink import SmtpSink

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(p for p in HISTORY_DIR.glob("*.json") if p.name != "ids.json")
WORKFLOW_IDS: dict[str, str] = json.loads((HISTORY_DIR / "ids.json").read_text())
"""The workflow id each history ran under (recorded since escalations: a child's id
derives from its parent's); older histories replay under their file name."""


def replayer() -> Replayer:
    return live.replayer(pydantic_data_converter)


def test_every_example_journey_has_recorded_histories() -> None:
    names = {path.name.rsplit("-", 1)[0] for path in HISTORIES}
    journeys = {"onboarding", "cart-abandonment", "renewal", "win-back"}
    # Today's code, journeys started before send priorities and content versions, and
    # journeys started before the contact policy.
    for era in ("", "pre-content-", "pre-policy-"):
        assert all(any(name.startswith(era + j) for name in names) for j in journeys), names
    assert "retention-offer-approved" in names  # an approval gate, with a decision
    assert "payment-failed-escalated" in names  # an escalation, and its own workflow
    assert any("continued-as-new" in name for name in names)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_recorded_history_replays_with_the_current_code(path: Path) -> None:
    history = WorkflowHistory.from_json(WORKFLOW_IDS.get(path.stem, path.stem), path.read_text())
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_a_nondeterministic_change_is_caught() -> None:
    """The check can fail: a history whose send was another activity is refused."""
    path = next(p for p in HISTORIES if p.name.startswith("cart-abandonment"))
    recorded = json.loads(path.read_text())
    scheduled = next(
        e["activityTaskScheduledEventAttributes"]
        for e in recorded["events"]
        if "activityTaskScheduledEventAttributes" in e
    )
    scheduled["activityType"]["name"] = "send_sms"
    history = WorkflowHistory.from_json("tampered", json.dumps(recorded))

    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is not None


@workflow.defn(name=naming.JOURNEY_WORKFLOW)
class _IncompatibleJourney:
    """A Journey as other code would run it: its history cannot replay with tidings'."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(hours=1))


async def test_tidings_replay_checks_live_histories_against_this_code(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    quick = Path(__file__).parent / "fixtures" / "quick-journeys"
    async with running_stack(
        dev_server, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=quick
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=["replay@example.com"])
        await stack.client.track(contact_key, "ping")
        await eventually(lambda: asyncio.to_thread(lambda: len(stack.outbox()) == 1))
    async with Worker(
        dev_server.client,
        task_queue=f"other-{contact_key}",
        workflows=[_IncompatibleJourney],
        workflow_runner=UnsandboxedWorkflowRunner(),  # this test module is no workflow module
    ):
        other = await dev_server.client.start_workflow(
            _IncompatibleJourney.run,
            id=naming.journey_workflow_id("other", contact_key),
            task_queue=f"other-{contact_key}",
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(naming.CONTACT_KEY, contact_key)]
            ),
        )
        await eventually(lambda: _has_started_a_timer(other))
    env = {
        "TIDINGS_DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
    }
    query = f'ContactKey="{contact_key}"'

    async def replay(*args: str) -> Any:
        command = ["replay", "--query", *args]
        return await asyncio.to_thread(CliRunner().invoke, cli, command, env=env)

    # Visibility lags a moment behind the start.
    ours = await eventually(
        lambda: _replayed(replay(query + ' AND Journey="quick"', "--limit", "5"), 1)
    )
    assert ours.exit_code == 0, ours.output
    assert "replayed 1 histories: 1 ok, 0 would fail" in ours.output

    both = await eventually(lambda: _replayed(replay(query, "--limit", "5"), 2))
    assert both.exit_code == 1
    assert f"FAILS  journey/other/{contact_key}" in both.output
    assert "1 ok, 1 would fail with this code" in both.output
    await other.terminate("test over")

    bad = await replay("Journey=", "--limit", "5")
    assert bad.exit_code == 1
    assert "refused the query" in bad.output


async def _has_started_a_timer(handle: WorkflowHandle[Any, Any]) -> bool:
    history = await handle.fetch_history()
    return any(event.HasField("timer_started_event_attributes") for event in history.events)


async def _replayed(invocation: Awaitable[Any], count: int) -> Any:
    result = await invocation
    return result if f"replayed {count} histories" in result.output else None
