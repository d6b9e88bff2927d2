"""Legal holds, pauses and kill switches: what they cover and what they do.

A hold is a row in the `holds` table, read by the contact policy before
every send (in the workflow's pre-check and again at send time), so it takes
effect for every running journey without signalling any of them.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from tidings.models.policy import CHANNELS, check_jurisdiction
from tidings.models.primitives import Purpose

HoldAction = Literal["hold", "kill"]
"""`hold`: journeys wait at their next send and resume when it lifts (a pause, a
legal hold). `kill`: journeys reaching a send end (outcome exited)."""

ScopeKind = Literal["all", "journey", "template", "channel", "jurisdiction", "purpose"]

SCOPE_FORMS = (
    "all, journey:NAME, template:NAME, channel:NAME, jurisdiction:CODE (US covers US-FL), "
    "purpose:NAME"
)
"""The accepted scope forms, as error messages name them."""

_PURPOSES: tuple[str, ...] = get_args(Purpose)


def parse_scope(value: str) -> tuple[ScopeKind, str]:
    """`journey:onboarding` -> ("journey", "onboarding"); `all` -> ("all", "").

    Raises ValueError naming the accepted forms. Values are normalized:
    jurisdictions upper case, everything else lower case."""
    text = value.strip()
    if text.lower() == "all":
        return "all", ""
    kind, sep, name = text.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in ("journey", "template", "channel", "jurisdiction", "purpose"):
        raise ValueError(f"{value!r} is not a hold scope; use one of: {SCOPE_FORMS}")
    if not name:
        raise ValueError(f"{value!r} names no {kind}; write it as {kind}:{_EXAMPLE[kind]}")
    if kind == "jurisdiction":
        return "jurisdiction", check_jurisdiction(name)
    name = name.lower()
    if kind == "channel" and name not in CHANNELS:
        raise ValueError(
            f"{value!r}: there is no channel {name!r}; use one of {', '.join(CHANNELS)}"
        )
    if kind == "purpose" and name not in _PURPOSES:
        raise ValueError(
            f"{value!r}: there is no purpose {name!r}; use one of {', '.join(_PURPOSES)}"
        )
    return cast(ScopeKind, kind), name


_EXAMPLE = {
    "journey": "onboarding",
    "template": "welcome",
    "channel": "sms",
    "jurisdiction": "US-FL",
    "purpose": "marketing",
}


def normalize_scope(value: str) -> str:
    """The scope as it is stored and shown: `all` or `kind:value`."""
    kind, name = parse_scope(value)
    return "all" if kind == "all" else f"{kind}:{name}"


HoldScope = Annotated[str, AfterValidator(normalize_scope)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hold(_Model):
    """One hold; active until lifted."""

    id: int
    scope: HoldScope
    action: HoldAction = "hold"
    reason: str = Field(min_length=1, max_length=1000)
    set_by: str
    set_at: AwareDatetime
    lifted_by: str | None = None
    lifted_at: AwareDatetime | None = None
    lift_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def label(self) -> str:
        """How decisions and the audit log name it: `hold 3 (journey:onboarding)`."""
        what = "kill switch" if self.action == "kill" else "hold"
        return f"{what} {self.id} ({self.scope})"
