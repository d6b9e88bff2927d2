"""The journey's side of an `escalate` step: start the escalation, pass it resolving events.

Deterministic code run by the journey interpreter. The escalation is a child
workflow with parent close policy ABANDON, so it outlives the journey when
the step does not wait. Events named in `resolved_by` reach it as a
`resolve` signal while the journey runs (the journey listens to them, see
`Journey.listens_while_running`); the escalations a journey must still tell
travel in its state across continue-as-new.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, FailureError, WorkflowAlreadyStartedError

from tidings import naming
from tidings.models.escalations import (
    EscalationInput,
    EscalationResult,
    Resolution,
    RunningEscalation,
)
from tidings.models.events import JourneyEvent
from tidings.models.journey import EscalateStep, Journey
from tidings.models.primitives import format_duration
from tidings.models.workflow_io import JourneyState

EscalationHandle = workflow.ChildWorkflowHandle[Any, EscalationResult]


class Escalations:
    """One journey run's escalations: started here, resolved by its events."""

    def __init__(self) -> None:
        self._signals: list[asyncio.Task[None]] = []

    async def start(
        self, journey: Journey, contact_key: str, state: JourneyState, step: EscalateStep
    ) -> EscalationHandle | None:
        """Start the step's escalation; None if one with its id is already running."""
        spec = step.escalate
        escalation_id = naming.escalation_workflow_id(
            workflow.info().workflow_id, state.entry, step.id, state.visits.get(step.id, 1)
        )
        try:
            handle = await workflow.start_child_workflow(
                naming.ESCALATION_WORKFLOW,
                EscalationInput(
                    journey=journey.name,
                    version=journey.version,
                    contact_key=contact_key,
                    entry=state.entry,
                    step_id=step.id,
                    journey_workflow_id=workflow.info().workflow_id,
                    escalate=spec,
                    trigger=state.trigger,
                    event=state.current_event,
                ),
                id=escalation_id,
                task_queue=naming.JOURNEY_TASK_QUEUE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                result_type=EscalationResult,
                static_summary=f"Escalation: {journey.name} v{journey.version}, step {step.id}",
                static_details=_outline(step),
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.warning("step %s: %s is already running", step.id, escalation_id)
            return None
        if spec.resolved_by:
            running = RunningEscalation(workflow_id=escalation_id, resolved_by=spec.resolved_by)
            state.escalations.append(running)
            handle.add_done_callback(lambda _: _forget(state, running))
        return handle

    def resolve(self, state: JourneyState, event: JourneyEvent) -> None:
        """Tell every running escalation this event resolves (a signal each)."""
        for running in state.escalations:
            if event.name in running.resolved_by:
                self._signals.append(asyncio.create_task(_signal(running.workflow_id, event)))

    async def signalled(self) -> None:
        """Wait until the resolve signals sent so far are delivered (before the run ends)."""
        while self._signals:
            pending, self._signals = self._signals, []
            await asyncio.gather(*pending)


def result_of(handle: EscalationHandle, step: EscalateStep) -> EscalationResult | None:
    """The finished escalation's result (None if it failed; that is logged)."""
    try:
        result = handle.result()
    except ChildWorkflowError as err:
        workflow.logger.warning("step %s: escalation %s failed: %s", step.id, handle.id, err)
        return None
    workflow.logger.info("step %s: escalation %s %s", step.id, handle.id, result.outcome)
    return result


async def _signal(workflow_id: str, event: JourneyEvent) -> None:
    try:
        await workflow.get_external_workflow_handle(workflow_id).signal(
            naming.RESOLVE_SIGNAL, Resolution(event=event.name, event_id=event.event_id)
        )
    except FailureError as err:  # it closed meanwhile: nothing left to resolve
        workflow.logger.info("escalation %s not resolved by %s: %s", workflow_id, event.name, err)


def _forget(state: JourneyState, running: RunningEscalation) -> None:
    if running in state.escalations:
        state.escalations.remove(running)


def _outline(step: EscalateStep) -> str:
    """The tiers for the UI's static details (roles and templates; no personal data)."""
    spec = step.escalate
    lines = [
        f"{number}. `{tier.role}` by {tier.channel} (`{tier.template}`), "
        f"acknowledge within {format_duration(tier.ack_within)}"
        for number, tier in enumerate(spec.tiers, 1)
    ]
    if spec.resolved_by:
        lines += ["", "Resolved by: " + ", ".join(f"`{e}`" for e in spec.resolved_by)]
    return "\n".join(lines)
