"""The journey interpreter: what one journey workflow does, step by step.

Deterministic code only: it runs inside the journey workflow and uses
Temporal's workflow APIs for time, timers, activities and logging. The spec
travels in the input, so an entry keeps the version it started with. Each
step kind is one small method returning the id of the next step; exit and
goal events end the journey at once, even mid-wait. Everything an operator
needs ("where and why") is published as search attributes and current
details; nothing there is personal data.

It lives outside the workflow module, which the sandbox imports afresh for
every workflow run: passed through, it is compiled once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from tidings import naming
from tidings.activities.approvals import ApprovalDesk
from tidings.activities.contacts import UNKNOWN_CONTACT, ContactReader
from tidings.activities.journal import JourneyJournal
from tidings.activities.policy import PolicyGate
from tidings.activities.send import MessageSender
from tidings.models.approvals import (
    ApprovalDecision,
    GatedMessage,
    GateState,
    GateStatus,
    GateView,
    OpenedGate,
    OpenGateInput,
)
from tidings.models.contact import ContactSnapshot
from tidings.models.events import JourneyEvent
from tidings.models.expressions import ExpressionError, evaluate, fields_read, segments_read
from tidings.models.journey import (
    MAX_DIGEST_ITEMS,
    ApproveStep,
    BranchStep,
    DigestStep,
    EndStep,
    EscalateStep,
    GotoStep,
    SendStep,
    Step,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
)
from tidings.models.policy import Decision
from tidings.models.primitives import END, format_duration
from tidings.models.workflow_io import (
    ContactMergedInput,
    EnterJourneyInput,
    ExitJourneyInput,
    JourneyInput,
    JourneyResult,
    JourneyState,
    JourneyStatus,
    LoadContactInput,
    Outcome,
    PolicyCheckInput,
    Resume,
    SeenEvent,
    SendInput,
    SendResult,
)
from tidings.workflows import approval_gate, gatekeeper, schedule
from tidings.workflows.escalation_step import Escalations, result_of


class _GateHost:
    """How a journey keeps its contact's gate: its own waits (exits end them, a long
    history continues as new) and its own "where and why"."""

    def __init__(self, interpreter: JourneyInterpreter, step: ApproveStep) -> None:
        self._interpreter = interpreter
        self._step = step

    def stopped(self) -> bool:
        return self._interpreter._exit is not None

    async def wait(self, done: Callable[[], bool], until: datetime, summary: str) -> None:
        await self._interpreter._until(done, until, f"{self._step.id}: {summary}")

    def show(self, gate: GateState, text: str) -> None:
        self._interpreter._show(self._step, f"approval:{gate.gate_id}", text, gate.deadline)


class _HistoryIsLong(Exception):
    """A wait was cut short to continue as new; the step resumes in the next run."""


LOCAL_ACTIVITY_TIMEOUT = timedelta(seconds=30)
SEND_TIMEOUT = timedelta(minutes=5)
"""One attempt: about eight SMTP round trips, each allowed the SMTP timeout (30 s)."""
SEND_HEARTBEAT = timedelta(seconds=30)
"""A send attempt on a worker that died is retried after this, not after SEND_TIMEOUT."""
SEND_DEADLINE = timedelta(minutes=30)
"""No attempt starts unless it can end by then: a message this late is recorded as
failed (by the activity, see `activities/send.py`) rather than delivered at a
surprising time."""
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=8,
)
CONTACT_POLICY_PATCH = "contact-policy-pre-check"
SEND_PRIORITY_PATCH = "send-priority"
CONTACT_MERGE_PATCH = "contact-merge"
"""Journeys whose contact was merged address the survivor (`contact_merged` signal)."""
SEGMENT_MEMBERSHIP_PATCH = "segment-membership"
"""Branches naming segments load membership with the contact (`contact.in_segment`)."""
SEND_PRIORITY = {"critical": 1, "transactional": 2, "service": 3, "marketing": 4}
"""Temporal task priority by purpose (1 runs first): when a provider's queue is
saturated, a password reset does not wait behind a newsletter."""
BATCH_GATE_CHECK = timedelta(minutes=5)
"""How often a journey at a batch gate looks at it, should the gate's signal miss it."""
APPROVAL = "approval"
"""The kind of a Resume that marks an approval gate waiting."""
DIGEST = "digest"
"""The kind of a Resume that marks a digest step collecting (not a held send)."""
RECENT_EVENT_IDS = 256
"""How many event ids a journey remembers to drop duplicates (the event log keeps all)."""


class JourneyInterpreter:
    """One journey entry's state and steps; the workflow class delegates to it."""

    def __init__(self, input: JourneyInput) -> None:
        self._journey = input.journey
        self._contact_key = input.contact_key
        self._history_event_limit = input.history_event_limit
        self._exit: tuple[Outcome, str] | None = None
        self._ending: tuple[Outcome, str] | None = None
        self._shown: tuple[str, str] | None = None
        self._leaving = False
        self._recheck = False
        self._reentry_trigger: JourneyEvent | None = None
        self._escalations = Escalations()
        self._status: tuple[str, str, datetime | None, str] = (
            "starting",
            "",
            None,
            "Entering the journey",
        )
        if input.state is not None:
            self._state = input.state
            self._contact_key = input.state.merged_into or input.contact_key
        else:
            first = input.journey.steps[0].id
            self._state = JourneyState(
                step_id=first, trigger=input.trigger, current_event=input.trigger
            )
            self._remember(input.trigger)

    def receive(self, event: JourneyEvent) -> None:
        """An event for this contact that this journey listens to."""
        if not self._remember(event):
            return
        self._escalations.resolve(self._state, event)
        if self._exit is not None or self._leaving:
            if event.name == self._journey.trigger.event:
                # Meant for a new entry but delivered to this ending one; see run().
                self._reentry_trigger = event
            return
        goal = self._journey.goal
        if event.name in self._journey.exit_on:
            self._exit = ("exited", f"received {event.name}")
        elif goal is not None and event.name == goal.event:
            entered = self._state.entered_at or workflow.now()
            if workflow.now() - entered <= goal.within:
                self._exit = ("converted", f"{event.name} within {format_duration(goal.within)}")
            else:
                self._exit = ("exited", f"{event.name} after the goal window")

    def contact_merged(self, merge: ContactMergedInput) -> None:
        """Address the survivor from now on (its key also becomes the searchable one);
        end if the survivor is in this journey too. The entry stays recorded under the
        key it started with: that is its workflow id."""
        if not workflow.patched(CONTACT_MERGE_PATCH) or self._state.merged_into == merge.survivor:
            return
        self._state.merged_into = self._contact_key = merge.survivor
        workflow.upsert_search_attributes([naming.CONTACT_KEY.value_set(merge.survivor)])
        if merge.end and self._exit is None and not self._leaving:
            self._exit = ("exited", f"merged into {merge.survivor}, already in this journey")

    def recheck(self) -> None:
        """Something a held send waits on changed (a hold lifted, a batch gate decided):
        look again now rather than at the hold's next timer."""
        self._recheck = True

    def status(self) -> JourneyStatus:
        kind, waiting_for, wake_at, details = self._status
        return JourneyStatus(
            journey=self._journey.name,
            version=self._journey.version,
            contact_key=self._contact_key,
            entry=self._state.entry,
            step_id=self._state.step_id,
            step_kind=kind,
            waiting_for=waiting_for,
            wake_at=wake_at,
            details=details,
            sends=self._state.sends,
            received=dict(self._state.received),
        )

    async def run(self, input: JourneyInput) -> JourneyResult:
        state = self._state
        if state.entry == 0:
            admission = await workflow.execute_local_activity_method(
                JourneyJournal.enter_journey,
                EnterJourneyInput(
                    journey=self._journey.name,
                    version=self._journey.version,
                    contact_key=self._contact_key,
                    workflow_id=workflow.info().workflow_id,
                    run_id=workflow.info().run_id,
                    reentry=self._journey.reentry,
                    now=workflow.now(),
                ),
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
                summary=f"enter {self._journey.name} v{self._journey.version}",
            )
            if not admission.admitted:
                workflow.set_current_details(f"Not admitted: {admission.reason}")
                return JourneyResult(
                    outcome="not_admitted", reason=admission.reason, entry=0, sends=0
                )
            state.entry = admission.entry
            state.entered_at = workflow.now()

        while self._exit is None and state.step_id != END:
            step = self._journey.step(state.step_id)
            resuming = state.resume is not None and state.resume.step_id == step.id
            if not resuming:
                if self._history_is_long():
                    await self._continue_as_new(input.model_copy(update={"state": state}))
                state.visits[step.id] = state.visits.get(step.id, 0) + 1
            try:
                next_step = await self._run_step(step)
            except _HistoryIsLong:
                await self._continue_as_new(input.model_copy(update={"state": state}))
            state.resume = None
            state.step_id = next_step

        self._leaving = True
        outcome, reason = self._exit or self._ending or ("completed", "reached the end")
        self._finish(outcome, reason)
        await workflow.execute_local_activity_method(
            JourneyJournal.exit_journey,
            ExitJourneyInput(
                journey=self._journey.name,
                contact_key=input.contact_key,
                entry=state.entry,
                outcome=outcome,
                reason=reason,
                now=workflow.now(),
            ),
            start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
            summary=f"exit: {outcome}",
        )
        if self._reentry_trigger is not None:
            # The trigger came while this entry ended: the client saw a running
            # workflow and signalled it. Start the entry it asked for (the
            # reentry policy is checked as for any entry).
            await self._continue_as_new(
                JourneyInput(
                    journey=input.journey,
                    contact_key=self._contact_key,
                    trigger=self._reentry_trigger,
                    history_event_limit=input.history_event_limit,
                )
            )
        await self._escalations.signalled()
        return JourneyResult(outcome=outcome, reason=reason, entry=state.entry, sends=state.sends)

    async def _continue_as_new(self, next_input: JourneyInput) -> NoReturn:
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._escalations.signalled()
        if next_input.state is not None:
            next_input.state.continued += 1
        workflow.continue_as_new(next_input)

    async def _run_step(self, step: Step) -> str:
        if isinstance(step, WaitStep):
            return await self._wait(step)
        if isinstance(step, WaitUntilStep):
            return await self._wait_until(step)
        if isinstance(step, WaitForStep):
            return await self._wait_for(step)
        if isinstance(step, BranchStep):
            return await self._branch(step)
        if isinstance(step, SendStep):
            return await self._send(step)
        if isinstance(step, DigestStep):
            return await self._digest(step)
        if isinstance(step, ApproveStep):
            return await self._approve(step)
        if isinstance(step, EscalateStep):
            return await self._escalate(step)
        if isinstance(step, GotoStep):
            return step.goto
        assert isinstance(step, EndStep)
        return END

    async def _wait(self, step: WaitStep) -> str:
        resume = self._resume(step)
        wake_at = resume.wake_at if resume else workflow.now() + step.wait
        self._state.resume = Resume(step_id=step.id, wake_at=wake_at)
        self._show(
            step,
            "timer",
            f"Waiting {format_duration(step.wait)}, until {wake_at:%Y-%m-%d %H:%M} UTC",
            wake_at,
        )
        await self._sleep_until(wake_at, f"{step.id}: wait {format_duration(step.wait)}")
        return self._journey.following(step.id)

    async def _wait_until(self, step: WaitUntilStep) -> str:
        resume = self._resume(step)
        if resume is None:
            moment = await self._moment(step)
            if isinstance(moment, str):
                return moment
            resume = self._state.resume = Resume(
                step_id=step.id, wake_at=moment[0], label=moment[1]
            )
        wake_at, label = resume.wake_at, resume.label
        self._show(step, "timer", f"Waiting until {label} ({wake_at:%Y-%m-%d %H:%M} UTC)", wake_at)
        await self._sleep_until(wake_at, f"{step.id}: until {label}")
        return self._journey.following(step.id)

    async def _moment(self, step: WaitUntilStep) -> tuple[datetime, str] | str:
        """When a wait_until ends (and how it reads locally), or the step to go to now."""
        spec = step.wait_until
        contact = await self._load_contact([spec.trait] if spec.trait else [])
        if contact is None:
            return END
        weekdays = schedule.weekday_numbers(spec.weekdays)
        now = workflow.now()
        if spec.trait is not None:
            wake_at = schedule.trait_moment(
                contact.traits.get(spec.trait),
                offset=spec.offset,
                at=spec.at,
                tz=contact.timezone,
                weekdays=weekdays,
            )
            if wake_at is None:
                return self._go(
                    spec.if_missing, "missing_data", f"trait {spec.trait} is not a date"
                )
            if wake_at <= now:
                return (
                    self._journey.following(step.id) if spec.if_past == "continue" else spec.if_past
                )
        else:
            assert spec.at is not None
            wake_at = schedule.next_time_of_day(now, contact.timezone, spec.at, weekdays)
        return wake_at, schedule.local_label(wake_at, contact.timezone)

    async def _wait_for(self, step: WaitForStep) -> str:
        spec = step.wait_for
        resume = self._resume(step)
        if resume is None:
            after = 0 if spec.since == "entry" else self._state.event_seq
            resume = Resume(step_id=step.id, wake_at=workflow.now() + spec.timeout, after_seq=after)
            self._state.resume = resume
        after, deadline = resume.after_seq, resume.wake_at

        def arrived() -> SeenEvent | None:
            seen = self._state.latest.get(spec.event)
            return seen if seen is not None and seen.seq > after else None

        if arrived() is None:
            self._show(
                step,
                f"event:{spec.event}",
                f"Waiting for `{spec.event}` until {deadline:%Y-%m-%d %H:%M} UTC; "
                f"then `{spec.on_timeout}`",
                deadline,
            )
            summary = f"{step.id}: wait for {spec.event}"
            if not await self._until(lambda: arrived() is not None, deadline, summary):
                return spec.on_timeout
        seen = arrived()
        if seen is None:  # woken by an exit
            return END
        self._state.current_event = seen.event
        return spec.on_event or self._journey.following(step.id)

    async def _digest(self, step: DigestStep) -> str:
        """Collect events until the window ends (or `max` came), then send them as one."""
        spec = step.digest
        state = self._state
        resume = self._resume(step)
        if resume is not None and resume.kind != DIGEST:
            return await self._send(step)  # the digest was collected; its send was held
        if resume is None:
            state.digest = []
            resume = Resume(
                step_id=step.id, wake_at=workflow.now() + spec.window, label="digest", kind=DIGEST
            )
            state.resume = resume

        def full() -> bool:
            return spec.max is not None and len(state.digest) >= spec.max

        if not full():
            self._show(
                step,
                f"digest:{spec.event}",
                f"Collecting `{spec.event}` until {resume.wake_at:%Y-%m-%d %H:%M} UTC "
                f"({len(state.digest)} so far)",
                resume.wake_at,
            )
            await self._until(full, resume.wake_at, f"{step.id}: collect {spec.event}")
        items, state.digest = state.digest, []
        state.resume = None
        if self._exit is not None or not items:
            return self._journey.following(step.id)
        state.current_event = JourneyEvent(
            event_id=f"digest/{step.id}/{state.visits[step.id]}",
            name=spec.event,
            properties={"events": [e.properties for e in items], "count": len(items)},
            occurred_at=workflow.now(),
        )
        return await self._send(step)

    def _collect(self, event: JourneyEvent) -> None:
        """Keep an event for the digest step the journey is collecting in, if any."""
        state = self._state
        resume = state.resume
        if resume is None or resume.kind != DIGEST or resume.step_id != state.step_id:
            return
        step = self._journey.step(state.step_id)
        if (
            isinstance(step, DigestStep)
            and step.digest.event == event.name
            and len(state.digest) < (step.digest.max or MAX_DIGEST_ITEMS)
        ):
            state.digest.append(event)

    async def _approve(self, step: ApproveStep) -> str:
        """Hold the gated send until approvers decide (Updates: `decide`), then go
        where the outcome says."""
        gated = self._journey.gated(step)
        if step.approve.scope == "batch":
            status = await self._await_batch_gate(step, gated)
        else:
            status = await self._keep_gate(step, gated)
        return self._after_gate(step, status, gated)

    async def _keep_gate(self, step: ApproveStep, gated: str) -> GateStatus:
        """A gate for this contact alone, kept in this workflow."""
        state = self._state
        gate = state.gate if self._resume(step) is not None else None
        if gate is None:
            opened = await self._open_gate(step, gated, workflow.info().workflow_id)
            gate = state.gate = GateState(
                gate_id=opened.gate_id,
                step_id=step.id,
                roles=list(step.approve.roles),
                quorum=step.approve.quorum,
                order=step.approve.order,
                eligible=opened.eligible,
                opened_at=workflow.now(),
                deadline=opened.deadline,
            )
            await gatekeeper.notify(gate)  # approvers may decide from here on
        state.resume = Resume(step_id=step.id, wake_at=gate.deadline, kind=APPROVAL)
        await gatekeeper.keep(gate, step.approve, _GateHost(self, step))
        state.gate = None
        return gate.status

    async def _await_batch_gate(self, step: ApproveStep, gated: str) -> GateStatus:
        """The step's one gate for every contact: wait for its workflow's decision,
        woken by its batch signal (or, failing that, by a timer every few minutes)."""
        resume = self._resume(step)
        if resume is None:
            gate_workflow = naming.batch_gate_workflow_id(
                self._journey.name, self._journey.version, step.id
            )
            opened = await self._open_gate(step, gated, gate_workflow)
            resume = Resume(
                step_id=step.id, wake_at=opened.deadline, kind=APPROVAL, label=opened.gate_id
            )
        self._state.resume = resume
        gate_id = resume.label
        while self._exit is None:
            self._recheck = False  # before looking: a signal during the look counts
            status = await workflow.execute_local_activity_method(
                ApprovalDesk.gate_status,
                gate_id,
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
                summary=f"{step.id}: is batch gate {gate_id} decided?",
            )
            if status != "open":
                return cast(GateStatus, status)
            self._show(
                step,
                f"approval:{gate_id}",
                f"Waiting for batch approval {gate_id} (one decision for every contact "
                f"here), due {resume.wake_at:%Y-%m-%d %H:%M} UTC",
                resume.wake_at,
            )
            await self._until(
                lambda: self._recheck,
                workflow.now() + BATCH_GATE_CHECK,
                f"{step.id}: batch approval {gate_id}",
            )
        return "open"

    async def _open_gate(self, step: ApproveStep, gated: str, decided_by: str) -> OpenedGate:
        spec = step.approve
        state = self._state
        send = self._journey.step(gated)
        assert isinstance(send, SendStep | DigestStep), "journey_problems checks it"
        batch = spec.scope == "batch"
        key = (
            decided_by if batch else f"{decided_by}/{state.entry}/{step.id}/{state.visits[step.id]}"
        )
        opening = OpenGateInput(
            gate_key=key,
            scope=spec.scope,
            workflow_id=decided_by,
            journey=self._journey.name,
            journey_version=self._journey.version,
            step_id=step.id,
            gated_step=gated,
            contact_key=self._contact_key,
            message=GatedMessage(
                template=send.send.template,
                version=send.send.version,
                channel=send.send.channel,
                purpose=send.send.purpose,
                topic=send.send.topic or "general",
            ),
            trigger=state.trigger,
            event=state.current_event,
            roles=list(spec.roles),
            extra_roles=[spec.escalate_to] if spec.escalate_to else [],
            quorum=spec.quorum,
            order=spec.order,
            deadline=workflow.now() + spec.deadline,
            now=workflow.now(),
        )
        if batch:
            return await workflow.execute_activity_method(
                ApprovalDesk.open_batch_gate,
                args=[opening, spec],
                start_to_close_timeout=gatekeeper.GATE_TIMEOUT,
                retry_policy=gatekeeper.GATE_RETRY,
                summary=f"{step.id}: open or join the batch approval gate",
            )
        return await workflow.execute_activity_method(
            ApprovalDesk.open_gate,
            opening,
            start_to_close_timeout=gatekeeper.GATE_TIMEOUT,
            retry_policy=gatekeeper.GATE_RETRY,
            summary=f"{step.id}: open approval gate",
        )

    def _after_gate(self, step: ApproveStep, status: GateStatus, gated: str) -> str:
        spec = step.approve
        if self._exit is not None:
            return END
        if status == "approved":
            return gated
        if status in ("rejected", "changes_requested"):
            return self._go(spec.on_reject, "exited", f"{step.id}: {status.replace('_', ' ')}")
        if spec.on_deadline == "send":
            return gated
        if spec.on_deadline == "skip":
            return self._journey.following(gated)
        return self._go(END, "exited", f"{step.id}: no approval by the deadline")

    def check_decision(self, decision: ApprovalDecision) -> None:
        """The Update validator: a refused decision never enters the history."""
        gate = self._state.gate
        if gate is None or self._exit is not None or self._leaving:
            raise ValueError(
                f"journey {self._journey.name} for this contact has no open approval gate; "
                "`tidings approvals list` shows the open ones"
            )
        if why := approval_gate.refusal(gate, decision, workflow.now()):
            raise ValueError(why)

    def decide(self, decision: ApprovalDecision) -> GateView:
        gate = self._state.gate
        assert gate is not None, "the validator checked it"
        approval_gate.apply(gate, decision, workflow.now())
        return approval_gate.view(gate)

    async def _escalate(self, step: EscalateStep) -> str:
        """Start the step's escalation (a child workflow that outlives the journey);
        with `wait`, wait until it closes or the journey ends."""
        handle = await self._escalations.start(self._journey, self._contact_key, self._state, step)
        if handle is None or not step.escalate.wait:
            return self._journey.following(step.id)
        self._show(step, "escalation", f"Waiting for escalation `{handle.id}` to close")
        await workflow.wait_condition(lambda: handle.done() or self._exit is not None)
        if handle.done():
            result_of(handle, step)
        return self._journey.following(step.id)

    async def _branch(self, step: BranchStep) -> str:
        traits: set[str] = set()
        needs_contact = False
        for case in step.cases:
            for ref in fields_read(case.when):
                if ref.root == "contact":
                    needs_contact = True
                    if len(ref.path) >= 2 and ref.path[0] == "traits":
                        traits.add(ref.path[1])
        segments = sorted({name for case in step.cases for name in segments_read(case.when)})
        # Specs name segments only since segments exist, so no earlier history gets
        # here; guarded all the same, as is every change to what a step schedules.
        if segments and not workflow.patched(SEGMENT_MEMBERSHIP_PATCH):
            segments = []
        contact = await self._load_contact(sorted(traits), segments) if needs_contact else None
        if needs_contact and contact is None:
            return END
        context = self._expression_context(contact)
        for case in step.cases:
            try:
                if evaluate(case.when, context):
                    return case.goto
            except ExpressionError as err:
                workflow.logger.warning("branch %s: %s; treated as false", step.id, err)
        return step.otherwise or self._journey.following(step.id)

    async def _send(self, step: SendStep | DigestStep) -> str:
        """Check the policy, wait as long as it says, then send; the activity checks again."""
        state = self._state
        key = f"{workflow.info().workflow_id}/{state.entry}/{step.id}/{state.visits[step.id]}"
        resume = self._resume(step)
        since = resume.since if resume else None
        if resume is not None:
            await self._hold(step, resume.wake_at, resume.label, resume.since, resume.kind)
        while self._exit is None:
            # Cleared before the check, not after it: a recheck signal that arrives
            # while the policy is read (a hold lifted meanwhile) wakes the next hold.
            self._recheck = False
            # Journeys that started before the contact policy existed replay without
            # the pre-check; the send activity checks the policy for them anyway.
            if workflow.patched(CONTACT_POLICY_PATCH):
                decision = await self._check_policy(step, key, since)
            else:
                decision = Decision.send({})
            if decision is None or decision.action == "skip":
                return self._journey.following(step.id)
            if decision.action == "end":  # a kill switch
                self._exit = ("exited", decision.reason)
                return END
            if decision.action == "wait":
                assert decision.until is not None
                since = since or workflow.now()
                await self._hold(step, decision.until, decision.reason, since, decision.kind)
                continue
            result = await self._send_now(step, key, since, step.send.channel)
            fallback = step.send.fallback_channel
            if result.status == "failed" and result.permanent and fallback is not None:
                # A new send on the fallback channel, with a key of its own; only journey
                # specs that name a fallback channel reach this, so old histories replay.
                workflow.logger.info("step %s: %s; trying %s", step.id, result.detail, fallback)
                result = await self._send_now(step, f"{key}/{fallback}", since, fallback)
            if result.end:  # a kill switch, found at send time
                self._exit = ("exited", result.detail)
                return END
            if result.status == "deferred" and result.until is not None:
                since = since or workflow.now()
                await self._hold(step, result.until, result.detail, since, result.kind)
                continue
            if result.status == "sent":
                state.sends += 1
            else:
                workflow.logger.warning("step %s: %s %s", step.id, result.status, result.detail)
            break
        return self._journey.following(step.id)

    async def _check_policy(
        self, step: SendStep | DigestStep, key: str, since: datetime | None
    ) -> Decision | None:
        spec = step.send
        try:
            return await workflow.execute_local_activity_method(
                PolicyGate.check_policy,
                PolicyCheckInput(
                    idempotency_key=key,
                    contact_key=self._contact_key,
                    journey=self._journey.name,
                    step_id=step.id,
                    channel=spec.channel,
                    template=spec.template,
                    template_version=spec.version,
                    purpose=spec.purpose,
                    topic=spec.topic or "general",
                    windows=self._journey.windows_for(step),
                    now=workflow.now(),
                    waiting_since=since,
                ),
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
                summary=f"{step.id}: policy check, {spec.channel} {spec.purpose}",
            )
        except ActivityError as err:
            if _is_unknown_contact(err):
                self._exit = ("exited", "the contact no longer exists")
                return None
            raise

    async def _hold(
        self,
        step: SendStep | DigestStep,
        until: datetime,
        why: str,
        since: datetime | None,
        kind: str = "policy",
    ) -> None:
        """Wait where the policy says, with one timer; the step resumes here after a restart."""
        self._state.resume = Resume(
            step_id=step.id, wake_at=until, label=why, since=since, kind=kind
        )
        self._show(step, f"policy:{kind}", f"Held: {why}", until)
        await self._until(
            lambda: self._recheck, until, f"{step.id}: held until {until:%Y-%m-%d %H:%M} UTC"
        )

    async def _send_now(
        self, step: SendStep | DigestStep, key: str, since: datetime | None, channel: str
    ) -> SendResult:
        state = self._state
        spec = step.send
        self._show(
            step,
            f"send:{channel}",
            f"Sending {channel} `{spec.template}`",
            searchable=False,
        )
        send = SendInput(
            idempotency_key=key,
            journey=self._journey.name,
            version=self._journey.version,
            step_id=step.id,
            contact_key=self._contact_key,
            template=spec.template,
            template_version=spec.version,
            purpose=spec.purpose,
            topic=spec.topic or "general",
            windows=self._journey.windows_for(step),
            trigger=state.trigger,
            event=state.current_event,
            scheduled_at=workflow.now(),
            waiting_since=since,
        )
        # Email keeps its own activity (recorded histories name it); every other
        # channel shares one activity, on a task queue of its own.
        activity = MessageSender.send_email
        if channel != "email":
            activity = MessageSender.send_message
            send = send.model_copy(update={"channel": channel})
        # Journeys whose sends were scheduled without a priority replay without one.
        priority = (
            Priority(priority_key=SEND_PRIORITY[spec.purpose])
            if workflow.patched(SEND_PRIORITY_PATCH)
            else Priority.default
        )
        try:
            return await workflow.execute_activity_method(
                activity,
                send,
                task_queue=naming.send_task_queue(channel),
                priority=priority,
                start_to_close_timeout=SEND_TIMEOUT,
                heartbeat_timeout=SEND_HEARTBEAT,
                schedule_to_close_timeout=SEND_DEADLINE,
                retry_policy=SEND_RETRY,
                summary=f"{step.id}: {channel} {spec.template}",
            )
        except ActivityError as err:
            return SendResult(delivery_id="", status="failed", detail=_cause(err))

    async def _load_contact(
        self, traits: list[str], segments: list[str] | None = None
    ) -> ContactSnapshot | None:
        """The contact's time zone, locale, the named traits, and (at this moment)
        its membership in the named segments."""
        load = LoadContactInput(contact_key=self._contact_key, traits=traits)
        summary = f"load contact: {', '.join(traits) or 'no traits'}"
        if segments:
            load = load.model_copy(update={"segments": segments, "now": workflow.now()})
            summary += f"; segments {', '.join(segments)}"
        try:
            return await workflow.execute_local_activity_method(
                ContactReader.load_contact,
                load,
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
                summary=summary,
            )
        except ActivityError as err:
            if _is_unknown_contact(err):
                self._exit = ("exited", "the contact no longer exists")
                return None
            raise

    def _expression_context(self, contact: ContactSnapshot | None) -> dict[str, Any]:
        state = self._state
        return {
            "contact": contact.model_dump() if contact else {},
            "trigger": state.trigger.model_dump(),
            "event": state.current_event.model_dump(),
            "properties": state.current_event.properties,
            "received": dict(state.received),
        }

    def _go(self, target: str, outcome: Outcome, reason: str) -> str:
        """Follow a fallback target; if it ends the journey, say why."""
        if target == END:
            self._ending = (outcome, reason)
        return target

    async def _sleep_until(self, wake_at: datetime, summary: str) -> None:
        await self._until(lambda: False, wake_at, summary)

    async def _until(self, done: Callable[[], bool], deadline: datetime, summary: str) -> bool:
        """Wait, with one durable timer, until `done()`, an exit, or the deadline.

        True if woken before the deadline. Raises _HistoryIsLong when events
        arriving during the wait have made the history long: the step then
        continues in a new run, from the Resume it left in the state.
        """
        delay = deadline - workflow.now()
        if delay > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: done() or self._exit is not None or self._history_is_long(),
                    timeout=delay,
                    timeout_summary=summary,
                )
            except TimeoutError:
                return False
        woke = done() or self._exit is not None
        if delay > timedelta(0) and not woke:
            raise _HistoryIsLong
        return woke

    def _resume(self, step: Step) -> Resume | None:
        """The saved position of this step, when it continues from a previous run."""
        resume = self._state.resume
        return resume if resume is not None and resume.step_id == step.id else None

    def _remember(self, event: JourneyEvent) -> bool:
        """Record an event once; False for a duplicate delivery of the same event id."""
        state = self._state
        if event.event_id in state.recent_event_ids:
            return False
        state.recent_event_ids = [
            *state.recent_event_ids[-(RECENT_EVENT_IDS - 1) :],
            event.event_id,
        ]
        state.event_seq += 1
        state.latest[event.name] = SeenEvent(seq=state.event_seq, event=event)
        state.received[event.name] = state.received.get(event.name, 0) + 1
        self._collect(event)
        return True

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._history_event_limit
        )

    def _show(
        self,
        step: Step,
        waiting_for: str,
        details: str,
        wake_at: datetime | None = None,
        *,
        searchable: bool = True,
    ) -> None:
        """Publish where the journey is and why, for the UI and the status query.

        Search attributes (one history event per change) name where a journey
        waits; a send in flight shows in the UI as its pending activity instead.
        """
        self._status = (step.kind, waiting_for, wake_at, details)
        if searchable and self._shown != (step.id, waiting_for):
            self._shown = (step.id, waiting_for)
            workflow.upsert_search_attributes(
                [naming.STEP.value_set(step.id), naming.WAITING_FOR.value_set(waiting_for)]
            )
        workflow.set_current_details(
            f"**{self._journey.name}** v{self._journey.version}, step `{step.id}` "
            f"({step.kind})\n\n{details}"
        )

    def _finish(self, outcome: Outcome, reason: str) -> None:
        self._status = ("finished", "", None, f"Finished: {outcome} ({reason})")
        workflow.upsert_search_attributes([naming.WAITING_FOR.value_unset()])
        workflow.set_current_details(f"Finished: **{outcome}** ({reason})")


def _is_unknown_contact(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type == UNKNOWN_CONTACT


def _cause(err: ActivityError) -> str:
    """The innermost failure message (the provider's or renderer's words)."""
    cause: BaseException = err
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    return str(cause)
