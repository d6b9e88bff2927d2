"""The contact policy's vocabulary: channels, purposes, consent, windows, caps, decisions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from tidings.models.primitives import (
    ContactKey,
    Duration,
    PositiveDuration,
    Purpose,
    TimeOfDay,
    Topic,
)

Channel = Literal["email", "sms", "voice", "push", "chat", "in_app", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "voice", "push", "chat", "in_app", "webhook")

PRIORITY: dict[str, int] = {"marketing": 1, "service": 2, "transactional": 3, "critical": 4}
"""Higher wins: a cap that applies to a purpose counts only sends of at least its priority."""

ConsentBasis = Literal[
    "express_written",
    "express",
    "implied_purchase",
    "implied_inquiry",
    "contract",
    "legitimate_interest",
]
ConsentAction = Literal["grant", "revoke", "object"]
"""`object`: a GDPR objection to direct marketing; legitimate interest no longer counts."""

SuppressionReason = Literal[
    "hard_bounce", "complaint", "invalid_number", "legal_restriction", "manual"
]
UNDELIVERABLE: frozenset[str] = frozenset({"hard_bounce", "invalid_number"})
"""Suppressions that block every purpose; the others let `critical` messages through."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_JURISDICTION = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")


def check_jurisdiction(value: str) -> str:
    normalized = value.strip().upper()
    if not _JURISDICTION.fullmatch(normalized):
        raise ValueError(
            f"{value!r} is not a jurisdiction; use an ISO 3166 country, optionally with "
            "a region: US-FL, CA-ON, DE"
        )
    return normalized


Jurisdiction = Annotated[str, AfterValidator(check_jurisdiction)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SendWindow(_Model):
    """Local hours (and days) in which a message may go out; `end` is exclusive."""

    start: TimeOfDay
    end: TimeOfDay
    weekdays: list[Weekday] | None = Field(default=None, min_length=1)
    """Leave out for every day."""

    def label(self) -> str:
        days = f" on {', '.join(self.weekdays)}" if self.weekdays else ""
        return f"{self.start:%H:%M}-{self.end:%H:%M}{days}"


class Cap(_Model):
    """At most `max` sends per rolling `per`, for messages of `purposes` on `channel`.

    A message of purpose P counts only sends of priority P or higher: higher
    priority traffic takes room from lower, never the other way round.
    """

    name: str
    max: int = Field(ge=0)
    per: PositiveDuration
    purposes: list[Purpose] = ["marketing"]
    channels: list[Channel] = []
    """Empty: across every channel."""
    per_topic: bool = False

    def covers(self, channel: str) -> bool:
        return not self.channels or channel in self.channels


class MinInterval(_Model):
    """No send on `before` within `gap` after a send on `after` (channel fatigue)."""

    name: str
    after: Channel
    before: Channel
    gap: PositiveDuration
    purposes: list[Purpose] = ["marketing"]


DEFAULT_MAX_DEFERRAL: dict[Purpose, timedelta] = {
    "marketing": timedelta(days=3),
    "service": timedelta(days=1),
    "transactional": timedelta(hours=2),
    "critical": timedelta(0),
}


class PolicyConfig(_Model):
    """Organization-wide policy (`policy.yaml`); journeys may only narrow it."""

    caps: list[Cap] = []
    min_intervals: list[MinInterval] = []
    max_deferral: dict[Purpose, Duration] = DEFAULT_MAX_DEFERRAL
    """Per purpose; a purpose left out keeps its default."""
    bypass_quiet_hours: list[Purpose] = ["critical"]
    sector_packs: list[Literal["hipaa"]] = []
    sms_help_text: str = "Reply STOP to opt out, START to opt back in."

    @field_validator("max_deferral", mode="after")
    @classmethod
    def _over_defaults(cls, value: dict[Purpose, timedelta]) -> dict[Purpose, timedelta]:
        return {**DEFAULT_MAX_DEFERRAL, **value}


class ConsentChange(_Model):
    """A new line for the consent ledger: a grant, a revocation or an objection."""

    contact_key: ContactKey
    channel: Channel
    purpose: Purpose | None = "marketing"
    """None: every purpose on the channel."""
    topic: Topic | None = None
    """None: every topic."""
    action: ConsentAction = "grant"
    basis: ConsentBasis | None = None
    source: str = Field(min_length=1, max_length=200)
    """Where it came from: a signup form, a checkout, an inbound SMS, support."""
    proof: dict[str, JsonValue] = {}
    """What the contact saw and did, and where (form text, page, IP, message)."""
    effective_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ConsentChange:
        if self.action == "grant" and self.basis is None:
            raise ValueError("a grant needs a legal basis (--basis), e.g. express_written")
        if self.action != "grant" and self.basis is not None:
            raise ValueError(f"a {self.action} has no legal basis; leave --basis out")
        if self.action == "object" and self.purpose not in ("marketing", None):
            raise ValueError("an objection is to direct marketing; use purpose marketing")
        if self.basis in ("express", "express_written") and not self.proof:
            raise ValueError(
                "express consent needs proof of what the contact saw and did "
                "(e.g. --proof form=signup --proof text='Yes, text me offers')"
            )
        return self


class ConsentEntry(_Model):
    """One line of the append-only consent ledger."""

    id: int
    contact_key: str
    channel: Channel
    purpose: Purpose | None
    """None: every purpose on the channel (an SMS STOP revokes them all)."""
    topic: str | None
    action: ConsentAction
    basis: ConsentBasis | None
    source: str
    proof: dict[str, JsonValue]
    effective_at: AwareDatetime
    expires_at: AwareDatetime | None


class Suppression(_Model):
    id: int
    contact_key: str | None
    channel: Channel | None
    address: str | None
    reason: SuppressionReason
    note: str
    created_at: AwareDatetime
    lifted_at: AwareDatetime | None = None


class Preference(_Model):
    channel: Channel
    topic: str
    subscribed: bool


class Blackout(_Model):
    """A period in which matching sends are deferred to its end, or skipped."""

    id: int
    name: str
    regions: list[str] = []
    """Jurisdictions or countries it covers (US matches US-FL); empty: everywhere."""
    purposes: list[Purpose] = []
    """Empty: every purpose. Critical messages are never held by a blackout."""
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    action: Literal["defer", "skip"] = "defer"


class RecentSend(_Model):
    """A send that counts toward caps: sent, being sent, retrying, or of unknown fate."""

    channel: Channel
    purpose: Purpose
    topic: str | None
    at: AwareDatetime


class Message(_Model):
    """What is about to be sent, as the policy sees it."""

    channel: Channel
    purpose: Purpose
    topic: str
    address: str | None = None
    windows: list[SendWindow] = []
    """The journey's and the step's own windows, narrowing the jurisdiction's."""
    journey: str = ""
    template: str = ""
    """Where it comes from (holds can cover one journey or one template)."""


class ContactFacts(_Model):
    key: str
    jurisdiction: str | None
    timezone: str


Action = Literal["send", "wait", "skip", "end"]
"""`end`: a kill switch covers the message; the journey ends instead of sending it."""
RuleKind = Literal[
    "allowed",
    "hold",
    "suppression",
    "consent",
    "preferences",
    "blackout",
    "window",
    "cap",
    "interval",
    "deferral",
    "contact",
]


class Decision(_Model):
    """What the policy decided, which rule decided it, and the inputs it looked at."""

    action: Action
    kind: RuleKind
    rule: str
    reason: str
    until: AwareDatetime | None = None
    inputs: dict[str, JsonValue] = {}

    @classmethod
    def send(cls, inputs: dict[str, JsonValue]) -> Decision:
        return cls(
            action="send",
            kind="allowed",
            rule="allowed",
            reason="every rule allows it",
            inputs=inputs,
        )
