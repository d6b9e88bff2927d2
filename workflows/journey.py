"""The journey workflow: one long-running workflow per (journey, contact).

Deliberately thin: the Temporal sandbox re-imports this module for every
workflow run, so the interpreter it delegates to is passed through and
compiled once per process (see `workflows/interpreter.py`).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tidings import naming
    from tidings.models.approvals import ApprovalDecision, GateView
    from tidings.models.events import JourneyEvent
    from tidings.models.workflow_io import (
        ContactMergedInput,
        JourneyInput,
        JourneyResult,
        JourneyStatus,
    )
    from tidings.workflows.interpreter import JourneyInterpreter


@workflow.defn(name=naming.JOURNEY_WORKFLOW)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, input: JourneyInput) -> None:
        self._interpreter = JourneyInterpreter(input)

    @workflow.signal(name=naming.EVENT_SIGNAL)
    def event(self, event: JourneyEvent) -> None:
        """An event for this contact that this journey listens to."""
        self._interpreter.receive(event)

    @workflow.signal(name=naming.CONTACT_MERGED_SIGNAL)
    def contact_merged(self, merge: ContactMergedInput) -> None:
        """The contact was merged into another: continue for it, or end if it is in this
        journey too. Sent after the merge commits; a repeat changes nothing."""
        self._interpreter.contact_merged(merge)

    @workflow.signal(name=naming.RECHECK_SIGNAL)
    def recheck(self) -> None:
        """A hold was lifted or a batch approval decided: a held send checks again now.
        Sent to many journeys at once by a server-side batch operation."""
        self._interpreter.recheck()

    @workflow.update(name=naming.DECIDE_UPDATE)
    def decide(self, decision: ApprovalDecision) -> GateView:
        """An approver approves, rejects or asks for changes at the open gate."""
        return self._interpreter.decide(decision)

    @decide.validator
    def check_decision(self, decision: ApprovalDecision) -> None:
        self._interpreter.check_decision(decision)

    @workflow.query(name=naming.STATUS_QUERY)
    def status(self) -> JourneyStatus:
        """Where the journey is and what it waits for."""
        return self._interpreter.status()

    @workflow.run
    async def run(self, input: JourneyInput) -> JourneyResult:
        return await self._interpreter.run(input)
