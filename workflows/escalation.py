"""The escalation workflow: ask each tier in turn until someone acknowledges.

Started by a journey's `escalate` step as a child workflow that outlives the
journey (parent close policy ABANDON). For each tier it notifies everyone
holding the tier's role (the `notify_staff` activity, on the tier's channel
queue), then waits up to the tier's `ack_within`. It stops at the first
acknowledgment (the `acknowledge` Update, whose validator refuses anyone who
was not asked and anything after it closed: refused Updates never enter the
history), at the resolving event (the `resolve` signal, sent by the journey),
or when the last tier's time is up. Each tier's outcome is kept in the
database (`escalations`, `escalation_tiers`) and returned.

Histories hold staff logins only; addresses stay in the notify activity.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from tidings import naming
    from tidings.activities.escalations import EscalationDesk, StaffNotifier
    from tidings.models.escalations import (
        Acknowledged,
        Acknowledgment,
        EscalationInput,
        EscalationResult,
        EscalationStatus,
        EscalationView,
        NotifyStaffInput,
        NotifyStaffResult,
        Outcome,
        RecordEscalationInput,
        Resolution,
        TierOutcome,
    )
    from tidings.models.journey import EscalationTier
    from tidings.models.primitives import format_duration

RECORD_TIMEOUT = timedelta(seconds=30)
NOTIFY_TIMEOUT = timedelta(minutes=2)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
)
REFUSED = "AcknowledgmentRefused"
"""The error type of a refused acknowledgment (the validator's)."""


def refusal(view: EscalationView, closing: str, user: str) -> str | None:
    """Why `user` cannot acknowledge now, in words for them; None if they can.

    Anyone holding the role of a tier asked so far may acknowledge: the current
    tier's people, and earlier tiers' who were asked first.
    """
    if view.status != "open":
        return f"escalation {view.number} is closed: {closing}; nothing to acknowledge"
    if not view.tiers:
        return f"escalation {view.number} has not asked anyone yet; try again in a moment"
    if not any(user in tier.members for tier in view.tiers):
        roles = ", ".join(dict.fromkeys(tier.role for tier in view.tiers))
        return (
            f"{user} may not acknowledge escalation {view.number}: only people holding the "
            f"role of the current tier or an earlier one may ({roles})"
        )
    return None


@workflow.defn(name=naming.ESCALATION_WORKFLOW)
class EscalationWorkflow:
    @workflow.init
    def __init__(self, input: EscalationInput) -> None:
        self._input = input
        self._id = workflow.info().workflow_id
        self._number = 0
        self._opened_at: datetime | None = None
        self._current = 0
        self._tiers: list[TierOutcome] = []
        self._status: EscalationStatus = "open"
        self._acknowledged: Acknowledged | None = None
        self._comment: str | None = None
        self._resolved_by: str | None = None

    @workflow.signal(name=naming.RESOLVE_SIGNAL)
    def resolve(self, resolution: Resolution) -> None:
        """The resolving event arrived (`payment_succeeded`): stop asking."""
        if self._status == "open":
            self._status = "resolved"
            self._resolved_by = resolution.event

    @workflow.update(name=naming.ACKNOWLEDGE_UPDATE)
    def acknowledge(self, ack: Acknowledgment) -> Acknowledged:
        """Someone asked takes it: the escalation stops, no further tier is notified."""
        role = next(t.role for t in reversed(self._tiers) if ack.user in t.members)
        self._status = "acknowledged"
        self._comment = ack.comment or None
        self._acknowledged = Acknowledged(
            escalation_id=self._id,
            tier=self._current,
            role=role,
            user=ack.user,
            at=workflow.now(),
        )
        return self._acknowledged

    @acknowledge.validator
    def check_acknowledgment(self, ack: Acknowledgment) -> None:
        problem = refusal(self.status(), self._closing(), ack.user)
        if problem is not None:
            raise ApplicationError(problem, type=REFUSED, non_retryable=True)

    @workflow.query(name=naming.STATUS_QUERY)
    def status(self) -> EscalationView:
        return EscalationView(
            escalation_id=self._id,
            number=self._number,
            status=self._status,
            tier=self._current,
            tiers=list(self._tiers),
        )

    @workflow.run
    async def run(self, input: EscalationInput) -> EscalationResult:
        self._opened_at = workflow.now()
        self._number = await self._record()
        for number, tier in enumerate(input.escalate.tiers, 1):
            if self._status != "open":
                break
            await self._ask(number, tier)
        if self._status == "open":
            self._status = "exhausted"
        workflow.set_current_details(f"Closed: {self._closing()}")
        await self._record()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return EscalationResult(
            escalation_id=self._id,
            outcome=self._outcome(),
            tiers=self._tiers,
            acknowledged_by=self._acknowledged.user if self._acknowledged else None,
            resolved_by=self._resolved_by,
        )

    async def _ask(self, number: int, tier: EscalationTier) -> None:
        """Notify the tier, then wait for an acknowledgment until its time is up."""
        self._current = number
        tiers = len(self._input.escalate.tiers)
        due_estimate = workflow.now() + tier.ack_within
        workflow.set_current_details(
            f"Tier {number} of {tiers} ({tier.role}, {tier.channel}): notifying"
        )
        told = await self._notify(number, tier, due_estimate)
        now = workflow.now()
        outcome = TierOutcome(
            tier=number,
            role=tier.role,
            channel=tier.channel,
            members=told.members,
            notified=told.notified,
            unreachable=told.unreachable,
            notified_at=now,
            due_at=now + tier.ack_within,
        )
        self._tiers.append(outcome)
        if self._status == "open" and not told.notified:
            # Nobody to wait for: ask the next tier at once.
            outcome.outcome, outcome.settled_at = "unreachable", now
            await self._record()
            return
        if self._status == "open":
            await self._record()
            workflow.set_current_details(
                f"Tier {number} of {tiers} ({tier.role}, {tier.channel}): waiting for an "
                f"acknowledgment until {outcome.due_at:%Y-%m-%d %H:%M} UTC; "
                f"notified {', '.join(told.notified)}"
            )
            with contextlib.suppress(TimeoutError):  # the tier's time is up
                await workflow.wait_condition(
                    lambda: self._status != "open",
                    timeout=tier.ack_within,
                    timeout_summary=f"tier {number}: {tier.role} acknowledges within "
                    f"{format_duration(tier.ack_within)}",
                )
        self._settle(outcome)
        if self._status == "open" and number < tiers:
            await self._record()

    async def _notify(self, number: int, tier: EscalationTier, due: datetime) -> NotifyStaffResult:
        input = self._input
        try:
            return await workflow.execute_activity_method(
                StaffNotifier.notify_staff,
                NotifyStaffInput(
                    escalation_id=self._id,
                    number=self._number,
                    journey=input.journey,
                    step_id=input.step_id,
                    contact_key=input.contact_key,
                    tier=number,
                    tiers=len(input.escalate.tiers),
                    role=tier.role,
                    channel=tier.channel,
                    template=tier.template,
                    ack_within=format_duration(tier.ack_within),
                    due_at=due,
                    trigger=input.trigger,
                    event=input.event,
                    now=workflow.now(),
                ),
                task_queue=naming.send_task_queue(tier.channel),
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary=f"tier {number}: notify {tier.role} ({tier.channel} {tier.template})",
            )
        except ActivityError as err:
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
            workflow.logger.warning("escalation %s tier %s: %s", self._id, number, cause)
            return NotifyStaffResult(members=[], notified=[], unreachable=[], problems=[cause])

    def _settle(self, outcome: TierOutcome) -> None:
        if self._status == "acknowledged" and self._acknowledged is not None:
            outcome.outcome = "acknowledged"
            outcome.acknowledged_by = self._acknowledged.user
            outcome.comment = self._comment
        elif self._status == "resolved":
            outcome.outcome = "resolved"
        else:
            outcome.outcome = "timed_out"
        outcome.settled_at = workflow.now()

    def _outcome(self) -> Outcome:
        if self._status == "acknowledged":
            return "acknowledged"
        return "resolved" if self._status == "resolved" else "exhausted"

    def _closing(self) -> str:
        """How it ended, in words (empty while open)."""
        if self._acknowledged is not None:
            return f"acknowledged by {self._acknowledged.user} at tier {self._acknowledged.tier}"
        if self._status == "resolved":
            return f"resolved by {self._resolved_by}"
        if self._status == "exhausted":
            return "no tier acknowledged in time"
        return ""

    async def _record(self) -> int:
        input = self._input
        assert self._opened_at is not None
        return await workflow.execute_local_activity_method(
            EscalationDesk.record_escalation,
            RecordEscalationInput(
                escalation_id=self._id,
                journey=input.journey,
                contact_key=input.contact_key,
                entry=input.entry,
                step_id=input.step_id,
                resolved_by=list(input.escalate.resolved_by),
                status=self._status,
                tier=self._current,
                tier_count=len(input.escalate.tiers),
                tiers=self._tiers,
                acknowledged_by=self._acknowledged.user if self._acknowledged else None,
                comment=self._comment,
                resolved_event=self._resolved_by,
                opened_at=self._opened_at,
                now=workflow.now(),
            ),
            start_to_close_timeout=RECORD_TIMEOUT,
            summary=f"record escalation: {self._status}, tier {self._current}",
        )
