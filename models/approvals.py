"""Approval gates: what travels between the journey workflow, its activities and approvers.

A gate's state lives in the workflow (it decides); the database keeps a copy
for listing and the approver's inbox, and the preview of the gated message
(personal data stays there: the history holds only the gate id).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, JsonValue

from tidings.models.events import JourneyEvent
from tidings.models.journey import Approve
from tidings.models.primitives import Purpose, RoleName, UserName

Verdict = Literal["approve", "reject", "request_changes"]
GateStatus = Literal["open", "approved", "rejected", "changes_requested", "expired"]
COMMENT_MAX = 2000


class ApprovalDecision(BaseModel):
    """What an approver sends (a workflow Update). `role` may be left out when the
    user holds only one of the roles the gate still needs."""

    gate_id: str = Field(min_length=1, max_length=32)
    user: UserName
    verdict: Verdict
    role: RoleName | None = None
    comment: str = Field(default="", max_length=COMMENT_MAX)


class Vote(BaseModel):
    user: str
    role: str
    verdict: Verdict
    comment: str
    at: AwareDatetime


class GateState(BaseModel):
    """One open gate, decided in the workflow; carried across continue-as-new."""

    gate_id: str
    step_id: str
    roles: list[str]
    quorum: int
    order: Literal["parallel", "sequential"]
    eligible: dict[str, list[str]]
    """Who holds each role (logins from the directory when the gate opened)."""
    opened_at: AwareDatetime
    deadline: AwareDatetime
    votes: list[Vote] = []
    escalated: bool = False
    reminders: int = 0
    """Reminders sent since the current deadline was set (they are spaced from it)."""
    notices: int = 0
    """Notices sent in all, the first one included: each one's idempotency round."""
    status: GateStatus = "open"


class GatedMessage(BaseModel):
    """The send an approval signs off, as the journey would make it."""

    template: str
    version: int | None
    channel: str
    purpose: Purpose
    topic: str


class OpenGateInput(BaseModel):
    gate_key: str
    """Stable per journey entry, step and visit (per journey version and step for a
    batch gate): a retried activity, or the next contact, finds the gate it opened."""
    scope: Literal["contact", "batch"] = "contact"
    workflow_id: str
    journey: str
    journey_version: int
    step_id: str
    gated_step: str
    contact_key: str
    message: GatedMessage
    trigger: JourneyEvent
    event: JourneyEvent
    roles: list[str]
    extra_roles: list[str] = []
    """Roles the gate may escalate to: their holders are looked up now too."""
    quorum: int
    order: Literal["parallel", "sequential"]
    deadline: AwareDatetime
    now: AwareDatetime


class OpenedGate(BaseModel):
    gate_id: str
    eligible: dict[str, list[str]]
    deadline: AwareDatetime
    """The gate's own: for a batch gate, set by whichever journey opened it."""
    workflow_id: str
    """Where decisions go: the journey (one contact) or the batch gate's workflow."""


class ContentRef(BaseModel):
    """A template version (or one of its translations) under review."""

    template: str
    version: int
    locale: str | None = None


class GateWorkflowInput(BaseModel):
    """A gate kept by a workflow of its own: a batch gate (every contact at a journey
    step) or a content review (`content`). `spec` holds its deadline and reminders."""

    gate: GateState
    spec: Approve
    content: ContentRef | None = None


class SettledReview(BaseModel):
    content: ContentRef
    status: GateStatus
    votes: list[Vote]


class GateUpdate(BaseModel):
    """The gate's state, copied to the database after each change."""

    gate: GateState
    now: AwareDatetime


class RemindInput(BaseModel):
    gate_id: str
    users: list[str]
    round: int
    """0 for the first notice; each reminder after it counts up (the idempotency key)."""
    due: AwareDatetime


class GateView(BaseModel):
    """What an approver gets back after deciding, and what the CLI shows."""

    gate_id: str
    status: GateStatus
    pending_roles: list[str]
    votes: list[Vote]
    deadline: AwareDatetime


class GateRow(BaseModel):
    """A gate as the database lists it (CLI, web inbox)."""

    id: str
    workflow_id: str
    scope: str
    """contact, batch (every contact at a journey step) or content (a template review)."""
    journey: str
    journey_version: int
    """For a content review, the template version."""
    step_id: str
    """For a content review, the translation's locale ("" for the source)."""
    contact_key: str
    """For a batch gate, the contact the preview was rendered for (a sample)."""
    template: str
    channel: str
    roles: list[str]
    quorum: int
    order: str
    status: str
    deadline: AwareDatetime
    created_at: AwareDatetime
    decided_at: AwareDatetime | None
    votes: list[Vote]
    pending_roles: list[str]
    preview: dict[str, JsonValue]
    findings: list[str]
