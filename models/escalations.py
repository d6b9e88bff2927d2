"""Escalations: what travels between a journey, its escalation workflow, activities and staff.

An `escalate` step starts one escalation workflow. Its tiers are asked in
turn (everyone holding the tier's role) until someone acknowledges (a
workflow Update), the resolving event arrives (a signal from the journey),
or the last tier's time runs out. Histories name staff by login only;
addresses are looked up in the notify activity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from tidings.models.events import JourneyEvent
from tidings.models.journey import Escalate
from tidings.models.primitives import UserName

EscalationStatus = Literal["open", "acknowledged", "resolved", "exhausted"]
Outcome = Literal["acknowledged", "resolved", "exhausted"]
TierOutcomeName = Literal["waiting", "acknowledged", "resolved", "timed_out", "unreachable"]
"""`waiting`: notified, the tier's time runs; `unreachable`: nobody could be notified
(no one holds the role, or every notice failed), so the next tier is asked at once."""
COMMENT_MAX = 2000


class EscalationInput(BaseModel):
    """The escalation workflow's start input: the spec travels with it."""

    journey: str
    version: int
    contact_key: str
    entry: int
    step_id: str
    journey_workflow_id: str
    escalate: Escalate
    trigger: JourneyEvent
    event: JourneyEvent
    """The journey's current event when the step ran."""


class Acknowledgment(BaseModel):
    """What a staff member sends (the `acknowledge` Update)."""

    user: UserName
    comment: str = Field(default="", max_length=COMMENT_MAX)


class Acknowledged(BaseModel):
    """The Update's answer: the escalation is closed, by this person, at this tier."""

    escalation_id: str
    tier: int
    role: str
    user: str
    at: AwareDatetime


class Resolution(BaseModel):
    """The `resolve` signal: the event that made the escalation unnecessary."""

    event: str
    event_id: str = ""


class TierOutcome(BaseModel):
    """One tier as it went: who was asked, and how it ended."""

    tier: int
    """1-based."""
    role: str
    channel: str
    members: list[str] = []
    """Logins holding the role when the tier started: they (and earlier tiers'
    members) may acknowledge."""
    notified: list[str] = []
    unreachable: list[str] = []
    """Members no notice reached (no address, or the provider refused)."""
    notified_at: AwareDatetime
    due_at: AwareDatetime
    outcome: TierOutcomeName = "waiting"
    acknowledged_by: str | None = None
    comment: str | None = None
    settled_at: AwareDatetime | None = None


class EscalationResult(BaseModel):
    escalation_id: str
    outcome: Outcome
    tiers: list[TierOutcome]
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    """The resolving event's name."""


class EscalationView(BaseModel):
    """What the escalation's `status` query answers."""

    escalation_id: str
    number: int
    """The short id (`tidings escalations ack NUMBER`)."""
    status: EscalationStatus
    tier: int
    """The tier asked now (1-based); 0 before the first."""
    tiers: list[TierOutcome]


class RunningEscalation(BaseModel):
    """An escalation a journey started, which its resolving events must reach."""

    workflow_id: str
    resolved_by: list[str]


class NotifyStaffInput(BaseModel):
    """Tell everyone holding a tier's role; once per (escalation, tier, user)."""

    escalation_id: str
    number: int
    journey: str
    step_id: str
    contact_key: str
    tier: int
    tiers: int
    role: str
    channel: Literal["email", "chat"]
    template: str
    ack_within: str
    """Compact duration, e.g. 4h, shown to staff."""
    due_at: AwareDatetime
    trigger: JourneyEvent
    event: JourneyEvent
    now: AwareDatetime


class NotifyStaffResult(BaseModel):
    members: list[str]
    notified: list[str]
    unreachable: list[str]
    problems: list[str] = []
    """Why each unreachable member was not reached (no personal data: logins, reasons)."""


class RecordEscalationInput(BaseModel):
    """The escalation's state for the database copy (listing, the CLI, reports)."""

    escalation_id: str
    journey: str
    contact_key: str
    entry: int
    step_id: str
    resolved_by: list[str]
    status: EscalationStatus
    tier: int
    tier_count: int
    tiers: list[TierOutcome] = []
    acknowledged_by: str | None = None
    comment: str | None = None
    resolved_event: str | None = None
    opened_at: AwareDatetime
    now: AwareDatetime


class TierRow(BaseModel):
    """One tier as the database keeps it (`tidings escalations list`)."""

    tier: int
    role: str
    channel: str
    notified: list[str]
    unreachable: list[str]
    notified_at: AwareDatetime
    due_at: AwareDatetime
    outcome: str
    acknowledged_by: str | None = None
    settled_at: AwareDatetime | None = None


class EscalationRow(BaseModel):
    """An escalation as operators list it."""

    number: int
    workflow_id: str
    journey: str
    contact_key: str
    step_id: str
    status: str
    tier: int
    tier_count: int
    resolved_by: list[str]
    acknowledged_by: str | None = None
    comment: str | None = None
    resolved_event: str | None = None
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None = None
    tiers: list[TierRow] = []
