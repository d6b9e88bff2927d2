"""Gates kept by a workflow of their own: batch gates and content reviews.

A batch gate: a campaign's message is approved once, not once per contact.
The first journey at the step opens the gate and starts this workflow;
every journey at the step waits on the gate's status, and is woken by one
batch signal when it is decided.

A content review: a template version submitted for review goes through the
review stages (legal, then compliance, then PR, and a regional council for a
translation); approval approves the version, anything else sends it back to
draft with the reviewers' comments.

Decisions are Updates with the same rules as a contact's gate. Nothing here
names a contact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tidings import naming
    from tidings.activities.approvals import ApprovalDesk
    from tidings.models.approvals import (
        ApprovalDecision,
        GateState,
        GateView,
        GateWorkflowInput,
        SettledReview,
    )
    from tidings.workflows import approval_gate, gatekeeper

RELEASE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=5)


@workflow.defn(name=naming.APPROVAL_WORKFLOW)
class ApprovalGateWorkflow:
    @workflow.init
    def __init__(self, input: GateWorkflowInput) -> None:
        self._gate = input.gate

    @workflow.update(name=naming.DECIDE_UPDATE)
    def decide(self, decision: ApprovalDecision) -> GateView:
        approval_gate.apply(self._gate, decision, workflow.now())
        return approval_gate.view(self._gate)

    @decide.validator
    def check_decision(self, decision: ApprovalDecision) -> None:
        if why := approval_gate.refusal(self._gate, decision, workflow.now()):
            raise ValueError(why)

    @workflow.query(name=naming.STATUS_QUERY)
    def status(self) -> GateView:
        return approval_gate.view(self._gate)

    @workflow.run
    async def run(self, input: GateWorkflowInput) -> GateView:
        gate = self._gate
        await gatekeeper.notify(gate)
        await gatekeeper.keep(gate, input.spec, _Host())
        if input.content is not None:
            # The version's fate is the point of the review: retried until it lands.
            await workflow.execute_activity_method(
                ApprovalDesk.settle_review,
                SettledReview(content=input.content, status=gate.status, votes=gate.votes),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=gatekeeper.GATE_RETRY,
                summary=f"{gate.status}: {input.content.template} v{input.content.version}",
            )
        else:
            try:
                await workflow.execute_activity_method(
                    ApprovalDesk.release_waiters,
                    gate.gate_id,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=RELEASE_RETRY,
                    summary=f"wake the journeys waiting on gate {gate.gate_id}",
                )
            except ActivityError as err:  # the journeys' own checks still find the outcome
                workflow.logger.warning("gate %s: waiters not woken: %s", gate.gate_id, err)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return approval_gate.view(gate)


class _Host:
    """A batch gate never stops early; it waits on its own timers."""

    def stopped(self) -> bool:
        return False

    async def wait(self, done: Callable[[], bool], until: datetime, summary: str) -> None:
        delay = until - workflow.now()
        if delay > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(done, timeout=delay, timeout_summary=summary)

    def show(self, gate: GateState, text: str) -> None:
        workflow.set_current_details(text)
