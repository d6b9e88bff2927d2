"""The journey DSL: a YAML journey file is data, validated into these models.

Structural rules (types, names, required keys) are pydantic's job; rules that
span steps (targets exist, every step is reachable, no loop without a wait,
conditions read fields that exist) are in `journey_problems`, so every
problem in a file is reported at once, by step id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from tidings.models.events import PropertySchema
from tidings.models.expressions import (
    STEP_ROOTS,
    TRIGGER_ROOTS,
    ExpressionError,
    FieldRef,
    check_expression,
)
from tidings.models.policy import SendWindow
from tidings.models.primitives import (
    END,
    Duration,
    EventName,
    JourneyName,
    PositiveDuration,
    Purpose,
    RoleName,
    StepId,
    TemplateName,
    TimeOfDay,
    Topic,
    TraitName,
)

StepTarget = StepId
"""A step id, or `end` to finish the journey."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


MAX_DIGEST_ITEMS = 100
"""A digest lists at most this many events (its message and its state stay small)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Spec):
    event: EventName
    where: str | None = None
    properties: PropertySchema = {}


class Reentry(_Spec):
    """Whether a contact may enter the journey again.

    `never`: once per contact, ever. `after_exit`: again once the previous
    entry has ended (and, with a cooldown, that long after it ended). While an
    entry runs, its trigger event reaches the running journey instead.
    """

    policy: Literal["never", "after_exit"] = "never"
    cooldown: PositiveDuration | None = None

    @model_validator(mode="after")
    def _cooldown_needs_reentry(self) -> Reentry:
        if self.cooldown is not None and self.policy == "never":
            raise ValueError("a cooldown only applies with policy after_exit")
        return self


class Goal(_Spec):
    """The event the journey exists to cause; it ends the journey."""

    event: EventName
    within: PositiveDuration


class _Step(_Spec):
    kind: ClassVar[str]
    id: StepId
    next: StepTarget | None = Field(
        default=None, description="Where to go afterwards; defaults to the following step."
    )


class WaitStep(_Step):
    kind: ClassVar[str] = "wait"
    wait: PositiveDuration


class WaitUntil(_Spec):
    """A moment in the contact's time zone.

    `at` alone: the next time the clock shows that time (on one of `weekdays`).
    `trait`: the date (or date-time) in that trait plus `offset`, at `at`
    (default 09:00) local time.
    """

    at: TimeOfDay | None = None
    trait: TraitName | None = None
    offset: Duration = timedelta(0)
    weekdays: list[Weekday] | None = None
    if_past: StepTarget | Literal["continue"] = "continue"
    if_missing: StepTarget = END

    @model_validator(mode="after")
    def _needs_a_moment(self) -> WaitUntil:
        if self.at is None and self.trait is None:
            raise ValueError(
                "wait_until needs `at` (a time of day), `trait` (a date trait), or both"
            )
        if self.trait is None and self.offset:
            raise ValueError("`offset` applies to a trait date; add `trait`")
        if self.weekdays is not None and not self.weekdays:
            raise ValueError("`weekdays` must list at least one day, or be left out")
        return self


class WaitUntilStep(_Step):
    kind: ClassVar[str] = "wait_until"
    wait_until: WaitUntil


class WaitFor(_Spec):
    event: EventName
    timeout: PositiveDuration
    on_timeout: StepTarget
    on_event: StepTarget | None = None
    since: Literal["step", "entry"] = Field(
        default="step",
        description="`step`: only events arriving while waiting count; "
        "`entry`: one received any time since the journey began counts too.",
    )


class WaitForStep(_Step):
    kind: ClassVar[str] = "wait_for"
    wait_for: WaitFor


class BranchCase(_Spec):
    when: str
    goto: StepTarget


class BranchElse(_Spec):
    otherwise: StepTarget = Field(alias="else")


def _case_kind(value: Any) -> str:
    if isinstance(value, BranchElse) or (isinstance(value, dict) and "else" in value):
        return "else"
    return "case"


BranchEntry = Annotated[
    Annotated[BranchCase, Tag("case")] | Annotated[BranchElse, Tag("else")],
    Discriminator(_case_kind),
]


class BranchStep(_Step):
    kind: ClassVar[str] = "branch"
    branch: list[BranchEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _else_last(self) -> BranchStep:
        elses = [i for i, case in enumerate(self.branch) if isinstance(case, BranchElse)]
        if len(elses) > 1 or (elses and elses[0] != len(self.branch) - 1):
            raise ValueError("a branch may have one `else`, and it must come last")
        return self

    @property
    def otherwise(self) -> StepTarget | None:
        last = self.branch[-1]
        return last.otherwise if isinstance(last, BranchElse) else None

    @property
    def cases(self) -> list[BranchCase]:
        return [case for case in self.branch if isinstance(case, BranchCase)]


SendChannel = Literal["email", "sms", "push", "chat", "in_app", "webhook"]


class Send(_Spec):
    channel: SendChannel = "email"
    fallback_channel: SendChannel | None = None
    """Where the message goes when the channel cannot take it for good (SMS to an
    invalid number, a push token that is gone): the same template on this channel."""
    template: TemplateName
    version: int | None = Field(default=None, ge=1)
    """Pin a template version; by default a send uses the newest approved one."""
    purpose: Purpose = "marketing"
    topic: Topic | None = None
    """What the message is about (billing, product-updates): preferences and caps use it.
    Required in journey files (see journey_problems); optional here so journeys that
    started before topics were required still load."""
    rationale: str | None = None
    """Why a transactional or critical message may reach contacts who opted out of marketing."""
    window: SendWindow | None = None
    """Local hours for this send; narrows the journey's and the jurisdiction's."""

    @model_validator(mode="after")
    def _distinct_fallback(self) -> Send:
        if self.fallback_channel == self.channel:
            raise ValueError("fallback_channel must differ from channel")
        return self


class SendStep(_Step):
    kind: ClassVar[str] = "send"
    send: Send


class Digest(_Spec):
    """Collect a contact's events of one kind, then send one message listing them."""

    event: EventName
    window: PositiveDuration
    """How long to collect, from when the step starts."""
    max: int | None = Field(default=None, ge=1, le=MAX_DIGEST_ITEMS)
    """Send as soon as this many have arrived."""
    send: Send
    """The message: its template reads `event.properties.events` (each event's
    properties, oldest first) and `event.properties.count`. Nothing is sent when
    no event came."""


class DigestStep(_Step):
    kind: ClassVar[str] = "digest"
    digest: Digest

    @property
    def send(self) -> Send:
        return self.digest.send


class Approve(_Spec):
    """A human sign-off before the send that follows (its `gates` step).

    Every role in `roles` must approve (`quorum` people each); `sequential`
    asks them in the listed order. The first rejection or request for changes
    decides. At the deadline: `send` as if approved, `skip` the gated send,
    `end` the journey, or `escalate` to `escalate_to` for one more deadline
    (then `end`). `scope: batch` opens one gate for every contact reaching
    this step (a campaign's message), `contact` one per contact (a personal
    offer).
    """

    roles: list[RoleName] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1, le=10)
    order: Literal["parallel", "sequential"] = "parallel"
    deadline: PositiveDuration
    remind_every: PositiveDuration | None = None
    on_deadline: Literal["skip", "send", "end", "escalate"] = "end"
    escalate_to: RoleName | None = None
    on_reject: StepTarget = END
    scope: Literal["contact", "batch"] = "contact"
    gates: StepId | None = None
    """The send step the approver signs off; by default the following step."""

    @model_validator(mode="after")
    def _escalation_has_a_role(self) -> Approve:
        if (self.on_deadline == "escalate") != (self.escalate_to is not None):
            raise ValueError("on_deadline: escalate and escalate_to go together")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("a role is listed twice in roles")
        return self


class ApproveStep(_Step):
    kind: ClassVar[str] = "approve"
    approve: Approve


class EscalationTier(_Spec):
    """Who is asked, how, and how long they have to acknowledge."""

    role: RoleName
    channel: Literal["email", "chat"] = "email"
    template: TemplateName
    ack_within: PositiveDuration


class Escalate(_Spec):
    """Hand the contact to people: each tier in turn until someone acknowledges,
    or `resolved_by` arrives (the problem went away: `payment_succeeded`)."""

    tiers: list[EscalationTier] = Field(min_length=1, max_length=10)
    resolved_by: list[EventName] = []
    wait: bool = False
    """Whether the journey waits for the escalation to finish before moving on."""


class EscalateStep(_Step):
    kind: ClassVar[str] = "escalate"
    escalate: Escalate


class GotoStep(_Step):
    kind: ClassVar[str] = "goto"
    goto: StepTarget


class EndStep(_Step):
    kind: ClassVar[str] = "end"
    end: Literal[True]


STEP_KINDS = (
    "wait",
    "wait_until",
    "wait_for",
    "branch",
    "send",
    "digest",
    "approve",
    "escalate",
    "goto",
    "end",
)
WAITING_KINDS = frozenset({"wait", "wait_until", "wait_for", "digest", "approve"})


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        present = [kind for kind in STEP_KINDS if kind in value]
        return present[0] if len(present) == 1 else None
    return getattr(value, "kind", None)


Step = Annotated[
    Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitUntilStep, Tag("wait_until")]
    | Annotated[WaitForStep, Tag("wait_for")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SendStep, Tag("send")]
    | Annotated[DigestStep, Tag("digest")]
    | Annotated[ApproveStep, Tag("approve")]
    | Annotated[EscalateStep, Tag("escalate")]
    | Annotated[GotoStep, Tag("goto")]
    | Annotated[EndStep, Tag("end")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of: " + ", ".join(STEP_KINDS),
    ),
]


class Journey(_Spec):
    """One journey definition, as written in `journeys/<name>.yaml`."""

    name: JourneyName
    version: int = Field(ge=1)
    description: str = ""
    trigger: Trigger
    reentry: Reentry = Reentry()
    exit_on: list[EventName] = []
    goal: Goal | None = None
    send_window: SendWindow | None = None
    """Local hours in which this journey's messages may go out."""
    rationale: str | None = None
    """The legal rationale for this journey's transactional or critical sends."""
    steps: list[Step] = Field(min_length=1)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def following(self, step_id: str) -> str:
        """Where a step goes when it names no target: `next`, else the following step."""
        ids = [step.id for step in self.steps]
        index = ids.index(step_id)
        explicit = self.steps[index].next
        if explicit is not None:
            return explicit
        return ids[index + 1] if index + 1 < len(ids) else END

    def listens_while_running(self) -> set[str]:
        """The events a running entry reacts to: exits, the goal, and what it waits for."""
        events = set(self.exit_on)
        if self.goal:
            events.add(self.goal.event)
        events.update(s.wait_for.event for s in self.steps if isinstance(s, WaitForStep))
        events.update(s.digest.event for s in self.steps if isinstance(s, DigestStep))
        events.update(
            e for s in self.steps if isinstance(s, EscalateStep) for e in s.escalate.resolved_by
        )
        return events

    def check_condition(self, source: str, roots: tuple[str, ...]) -> tuple[FieldRef, ...]:
        """The fields a condition reads; ExpressionError if one cannot exist."""
        return check_expression(
            source,
            roots=roots,
            trigger_event=self.trigger.event,
            trigger_properties=self.trigger.properties,
        )

    def successors(self, step: Step) -> list[str]:
        """Every step a step can lead to (`end` included)."""
        if isinstance(step, GotoStep):
            return [step.goto]
        if isinstance(step, EndStep):
            return []
        if isinstance(step, BranchStep):
            targets = [case.goto for case in step.cases]
            return [*targets, step.otherwise or self.following(step.id)]
        if isinstance(step, WaitForStep):
            return [step.wait_for.on_event or self.following(step.id), step.wait_for.on_timeout]
        if isinstance(step, WaitUntilStep):
            spec = step.wait_until
            extra = [] if spec.if_past == "continue" else [spec.if_past]
            return [self.following(step.id), *extra, spec.if_missing]
        if isinstance(step, ApproveStep):
            gated = self.gated(step)
            past = [self.following(gated)] if gated in {s.id for s in self.steps} else []
            return [gated, *past, step.approve.on_reject, END]
        return [self.following(step.id)]

    def gated(self, step: ApproveStep) -> str:
        """The send step an approval signs off."""
        return step.approve.gates or self.following(step.id)

    def sends(self) -> Iterator[SendStep | DigestStep]:
        for step in self.steps:
            if isinstance(step, SendStep | DigestStep):
                yield step

    def templates(self) -> Iterator[tuple[str, str]]:
        """(step id, template name) for every send."""
        for step in self.sends():
            yield step.id, step.send.template

    def windows_for(self, step: SendStep | DigestStep) -> list[SendWindow]:
        """The journey's window and the step's: a send must fit both."""
        return [w for w in (self.send_window, step.send.window) if w is not None]


def journey_problems(journey: Journey) -> list[str]:
    """Rules that span steps; each problem names the step it is about."""
    target_problems = _id_problems(journey) + _target_problems(journey)
    problems = target_problems + _condition_problems(journey) + _event_problems(journey)
    problems += _approval_problems(journey)
    if not target_problems:
        # With a duplicate id or mistyped target the graph is wrong; its errors would be noise.
        problems += _reachability_problems(journey) + _loop_problems(journey)
    return problems


def _id_problems(journey: Journey) -> list[str]:
    problems = []
    seen: set[str] = set()
    for step in journey.steps:
        if step.id == END:
            problems.append(f"step {END!r}: `end` is reserved for finishing; rename the step")
        if step.id in seen:
            problems.append(f"step {step.id!r}: the id is used twice; step ids must be unique")
        seen.add(step.id)
    return problems


def _target_problems(journey: Journey) -> list[str]:
    ids = [step.id for step in journey.steps]
    known = {*ids, END}
    return [
        f"step {step.id!r}: target {target!r} is not a step of this journey "
        f"(steps: {', '.join(ids)}; or `end`)"
        for step in journey.steps
        for target in journey.successors(step)
        if target not in known
    ]


def _condition_problems(journey: Journey) -> list[str]:
    conditions: list[tuple[str, str, tuple[str, ...]]] = (
        [("trigger.where", journey.trigger.where, TRIGGER_ROOTS)] if journey.trigger.where else []
    )
    for step in journey.steps:
        if isinstance(step, BranchStep):
            conditions += [
                (f"step {step.id!r}: when", case.when, STEP_ROOTS) for case in step.cases
            ]
    problems = []
    for where, source, roots in conditions:
        try:
            journey.check_condition(source, roots)
        except ExpressionError as err:
            problems.append(f"{where}: {err}")
    return problems


def _approval_problems(journey: Journey) -> list[str]:
    by_id = {step.id: step for step in journey.steps}
    problems = []
    for step in journey.steps:
        if isinstance(step, ApproveStep):
            gated = journey.gated(step)
            if not isinstance(by_id.get(gated), SendStep | DigestStep):
                problems.append(
                    f"step {step.id!r}: an approval signs off a send, but {gated!r} is not a "
                    "send or digest step; put the send right after it or name it in `gates`"
                )
    return problems


def _event_problems(journey: Journey) -> list[str]:
    problems = [
        f"step {step.id!r}: a send needs a `topic` (billing, product-updates, ...): "
        "preferences and frequency caps go by topic"
        for step in journey.sends()
        if step.send.topic is None
    ]
    ending = set(journey.exit_on) | ({journey.goal.event} if journey.goal else set())
    if journey.trigger.event in ending:
        problems.append(
            f"trigger: {journey.trigger.event!r} is also an exit or goal event, "
            "so every entry would end at once"
        )
    for step in journey.steps:
        waited = (
            step.wait_for.event
            if isinstance(step, WaitForStep)
            else step.digest.event
            if isinstance(step, DigestStep)
            else None
        )
        if waited in ending:
            problems.append(
                f"step {step.id!r}: waits for {waited!r}, but that event "
                "ends the journey (exit_on/goal) before the step could see it"
            )
    return problems


def _reachability_problems(journey: Journey) -> list[str]:
    by_id = {step.id: step for step in journey.steps}
    reached = {journey.steps[0].id}
    frontier = [journey.steps[0]]
    while frontier:
        for target in journey.successors(frontier.pop()):
            if target in by_id and target not in reached:
                reached.add(target)
                frontier.append(by_id[target])
    return [
        f"step {step.id!r}: no step leads here; remove it or point a goto at it"
        for step in journey.steps
        if step.id not in reached
    ]


def _loop_problems(journey: Journey) -> list[str]:
    """A cycle of steps none of which waits would spin (and maybe send) forever."""
    by_id = {step.id: step for step in journey.steps if step.kind not in WAITING_KINDS}
    problems: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(step_id: str, path: list[str]) -> None:
        state[step_id] = 1
        for target in journey.successors(by_id[step_id]):
            if target not in by_id:
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                problems.append(
                    f"step {target!r}: the steps {' -> '.join(cycle)} loop without "
                    "waiting; add a wait, wait_until or wait_for step to the loop"
                )
            elif target not in state:
                visit(target, [*path, target])
        state[step_id] = 2

    for step_id in by_id:
        if step_id not in state:
            visit(step_id, [step_id])
    return problems
