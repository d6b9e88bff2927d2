"""Keeping an approval gate open: wait for decisions, remind, escalate or expire.

Workflow code, shared by the two places a gate lives: a journey (a gate for
one contact) and the batch gate workflow (one gate for every contact reaching
a step). Each supplies how it waits and shows where it is; the decisions
arrive through its Update handler, which changes the same GateState.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

from tidings.activities.approvals import ApprovalDesk
from tidings.models.approvals import GateState, GateUpdate, RemindInput
from tidings.models.journey import Approve
from tidings.workflows import approval_gate

LOCAL_ACTIVITY_TIMEOUT = timedelta(seconds=30)
GATE_TIMEOUT = timedelta(minutes=2)
GATE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
REMIND_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=5)


class GateHost(Protocol):
    def stopped(self) -> bool:
        """The gate's owner is ending (an exit event): stop keeping it."""
        ...

    async def wait(self, done: Callable[[], bool], until: datetime, summary: str) -> None: ...

    def show(self, gate: GateState, text: str) -> None: ...


async def keep(gate: GateState, spec: Approve, host: GateHost) -> None:
    """Until the gate is decided, expired or its host stops. The caller has told
    those deciding first; whoever's turn comes later (the next role of a sequential
    gate, the role it escalates to) is told when it comes."""
    announced = set(approval_gate.pending_roles(gate))
    # What the database was last told by this loop: decisions may have come in while
    # the first notice went out, before the loop began.
    recorded: tuple[int, str] | None = None

    async def save() -> None:
        nonlocal recorded
        recorded = (len(gate.votes), gate.status)
        await record(gate)

    while gate.status == "open" and not host.stopped():
        if turn := set(approval_gate.pending_roles(gate)) - announced:
            announced |= turn
            await notify(gate)
            continue
        reminder = (
            gate.deadline - spec.deadline + spec.remind_every * (gate.reminders + 1)
            if spec.remind_every is not None
            else None
        )
        wake_at = min(gate.deadline, reminder) if reminder is not None else gate.deadline
        roles = ", ".join(approval_gate.pending_roles(gate))
        host.show(
            gate,
            f"Waiting for approval from {roles} (gate {gate.gate_id}) until "
            f"{gate.deadline:%Y-%m-%d %H:%M} UTC; then `{spec.on_deadline}`",
        )
        votes = len(gate.votes)
        await host.wait(_voted_since(gate, votes), wake_at, f"approval {gate.gate_id}")
        if host.stopped() or len(gate.votes) != votes:
            await save()
        elif workflow.now() >= gate.deadline:
            _deadline_passed(spec, gate)
            await save()
        else:
            gate.reminders += 1
            await notify(gate)
    if recorded != (len(gate.votes), gate.status):  # decided while a notice went out
        await save()


def _deadline_passed(spec: Approve, gate: GateState) -> None:
    """Escalate once if the step says so (a new role, a new deadline); else expire."""
    if spec.on_deadline == "escalate" and not gate.escalated:
        assert spec.escalate_to is not None
        gate.escalated = True
        gate.roles, gate.quorum, gate.order = [spec.escalate_to], 1, "parallel"
        gate.deadline = workflow.now() + spec.deadline
        gate.reminders = 0
        return
    gate.status = "expired"


async def record(gate: GateState) -> None:
    """Copy the gate's state to the database, for listing and the approvers' inbox."""
    await workflow.execute_local_activity_method(
        ApprovalDesk.record_gate,
        GateUpdate(gate=gate, now=workflow.now()),
        start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
        summary=f"{gate.step_id}: record gate {gate.gate_id} ({gate.status})",
    )


async def notify(gate: GateState) -> None:
    """Tell whoever may decide now; failing to reach them does not stop the gate."""
    users = approval_gate.waiting_on(gate)
    if not users:
        return
    gate.notices += 1
    try:
        await workflow.execute_activity_method(
            ApprovalDesk.remind,
            RemindInput(gate_id=gate.gate_id, users=users, round=gate.notices, due=gate.deadline),
            start_to_close_timeout=GATE_TIMEOUT,
            retry_policy=REMIND_RETRY,
            summary=f"{gate.step_id}: notify {len(users)} approver(s)",
        )
    except ActivityError as err:
        cause: BaseException = err
        while isinstance(cause, FailureError) and cause.cause is not None:
            cause = cause.cause
        workflow.logger.warning("gate %s: approvers not reached: %s", gate.gate_id, cause)


def _voted_since(gate: GateState, votes: int) -> Callable[[], bool]:
    return lambda: len(gate.votes) != votes
