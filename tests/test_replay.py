"""Recorded histories of every example journey replay with the current code.

A change to workflow code that would break sleeping journeys (nondeterminism)
fails here. Re-record with `python tests/histories/record.py` only for a
deliberate change, guarded by `workflow.patched` (see README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tidings.worker import sandbox_runner
from tidings.workflows.approval import ApprovalGateWorkflow
from tidings.workflows.escalation import EscalationWorkflow
from tidings.workflows.journey import JourneyWorkflow

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(p for p in HISTORY_DIR.glob("*.json") if p.name != "ids.json")
WORKFLOW_IDS: dict[str, str] = json.loads((HISTORY_DIR / "ids.json").read_text())
"""The workflow id each history ran under (recorded since escalations: a child's id
derives from its parent's); older histories replay under their file name."""


def replayer() -> Replayer:
    return Replayer(
        workflows=[JourneyWorkflow, EscalationWorkflow, ApprovalGateWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )


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
