"""Inputs, state and results of the journey workflow and its activities.

One model per workflow, signal, query and activity, so fields can be added
later without breaking running journeys or recorded histories.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from tidings.models.approvals import GateState
from tidings.models.escalations import RunningEscalation
from tidings.models.events import JourneyEvent
from tidings.models.journey import Journey, Reentry
from tidings.models.policy import Channel, SendWindow
from tidings.models.primitives import Purpose

Outcome = Literal["completed", "converted", "exited", "not_admitted", "missing_data"]


class SeenEvent(BaseModel):
    seq: int
    event: JourneyEvent


class Resume(BaseModel):
    """Where a waiting step stood, so it can continue after continue-as-new."""

    step_id: str
    wake_at: AwareDatetime
    """When the wait ends (a wait_for's timeout)."""
    after_seq: int = 0
    """wait_for: events numbered after this count."""
    label: str = ""
    since: AwareDatetime | None = None
    """A send held by the policy: when it first had to wait."""
    kind: str = "policy"
    """A send held by the policy: the kind of rule that holds it."""


class JourneyState(BaseModel):
    """Everything a journey must carry across continue-as-new."""

    entry: int = 0
    entered_at: AwareDatetime | None = None
    step_id: str
    visits: dict[str, int] = {}
    event_seq: int = 0
    latest: dict[str, SeenEvent] = {}
    received: dict[str, int] = {}
    recent_event_ids: list[str] = []
    trigger: JourneyEvent
    current_event: JourneyEvent
    sends: int = 0
    continued: int = 0
    resume: Resume | None = None
    digest: list[JourneyEvent] = []
    """Events a digest step has collected so far."""
    gate: GateState | None = None
    """The approval gate open at the current step, if any."""
    escalations: list[RunningEscalation] = []
    """Escalations started by this entry that its resolving events must still reach."""
    merged_into: str | None = None
    """The contact this entry's contact was merged into: every later step addresses it."""


class JourneyInput(BaseModel):
    """Start input: the spec travels with the journey, so an entry keeps its version."""

    journey: Journey
    contact_key: str
    trigger: JourneyEvent
    history_event_limit: int = Field(default=2_000, ge=20)
    state: JourneyState | None = None


class ContactMergedInput(BaseModel):
    """The `contact_merged` signal: the journey's contact is now part of `survivor`."""

    survivor: str
    end: bool = False
    """The survivor is in this journey too: this entry ends (no message twice)."""


class JourneyResult(BaseModel):
    outcome: Outcome
    reason: str
    entry: int
    sends: int


class JourneyStatus(BaseModel):
    """What the `status` query answers: where the journey is and what it waits for."""

    journey: str
    version: int
    contact_key: str
    entry: int
    step_id: str
    step_kind: str
    waiting_for: str
    wake_at: AwareDatetime | None
    details: str
    sends: int
    received: dict[str, int] = {}
    """Events received by name (duplicates of one event id counted once)."""


class EnterJourneyInput(BaseModel):
    journey: str
    version: int
    contact_key: str
    workflow_id: str
    run_id: str
    reentry: Reentry
    now: AwareDatetime


class EnterJourneyResult(BaseModel):
    admitted: bool
    entry: int = 0
    reason: str = ""


class ExitJourneyInput(BaseModel):
    journey: str
    contact_key: str
    entry: int
    outcome: Outcome
    reason: str
    now: AwareDatetime


class LoadContactInput(BaseModel):
    contact_key: str
    traits: list[str] = []
    segments: list[str] = []
    """Segments whose membership the step needs (`contact.in_segment`)."""
    now: AwareDatetime | None = None
    """The workflow's time: segments' event windows end here. Set with `segments`."""


class PolicyCheckInput(BaseModel):
    """The workflow's check before it schedules a send (the send activity checks again)."""

    idempotency_key: str
    """The send's key: a skip is recorded as that send's delivery."""
    contact_key: str
    journey: str
    step_id: str
    channel: Channel
    template: str
    purpose: Purpose
    topic: str
    windows: list[SendWindow] = []
    now: AwareDatetime
    waiting_since: AwareDatetime | None = None


class SendInput(BaseModel):
    """One send of a journey step, on any channel."""

    idempotency_key: str
    journey: str
    version: int
    step_id: str
    contact_key: str
    channel: str = "email"
    template: str
    template_version: int | None = None
    """The version the step pins; None sends the newest approved one."""
    purpose: Purpose
    topic: Annotated[str, BeforeValidator(lambda v: v or "general")] = "general"
    """Before topics were required, sends had none: those count as `general`."""
    windows: list[SendWindow] = []
    trigger: JourneyEvent
    event: JourneyEvent
    scheduled_at: AwareDatetime
    waiting_since: AwareDatetime | None = None


SendStatus = Literal["sent", "failed", "skipped", "uncertain", "deferred"]


class SendResult(BaseModel):
    delivery_id: str
    status: SendStatus
    detail: str = ""
    until: AwareDatetime | None = None
    """For `deferred`: when the policy allows another try."""
    rule: str = ""
    kind: str = "policy"
    """For `deferred`: the kind of rule that holds it (window, cap, blackout...)."""
    permanent: bool = False
    """For `failed`: the address cannot take it (an invalid number, a dead token);
    the step's fallback channel may."""
    end: bool = False
    """For `skipped`: a kill switch covers the message; the journey ends (exited, with
    `detail` as the reason)."""
