"""The segment DSL: a named set of contacts, defined by traits and recent events.

A segment file (`segments/<name>.yaml`) is data, validated into these models.
Membership is evaluated on demand against the database (`db/segments.py`):
a contact is a member when the `where` condition holds for it and every event
condition holds over its window, counted back from the moment asked about.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from tidings.models.expressions import (
    ExpressionError,
    check_expression,
    segments_read,
)
from tidings.models.journey import BranchStep, Journey
from tidings.models.primitives import EventName, PositiveDuration, format_duration

SEGMENT_ROOTS = ("contact",)
"""A segment's `where` reads the contact only: it has no event of its own."""

_SEGMENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def _check_name(value: str) -> str:
    if not _SEGMENT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid segment name: lowercase letters, digits and -, e.g. at-risk"
        )
    return value


def _check_tag(value: str) -> str:
    if not _TAG.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid tag: lowercase letters, digits, _ and -, e.g. retention"
        )
    return value


SegmentName = Annotated[str, AfterValidator(_check_name)]
Tag = Annotated[str, AfterValidator(_check_tag)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventCondition(_Spec):
    """How often the contact did something lately.

    `performed: login` holds when the contact has at least `at_least` (default 1)
    and at most `at_most` (default: no limit) `login` events in the last
    `within`; `not_performed: login` when it has none.
    """

    performed: EventName | None = None
    not_performed: EventName | None = None
    within: PositiveDuration
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_form(self) -> EventCondition:
        if (self.performed is None) == (self.not_performed is None):
            raise ValueError(
                "an event condition needs exactly one of `performed: EVENT` or "
                "`not_performed: EVENT`"
            )
        if self.not_performed is not None and (
            self.at_least is not None or self.at_most is not None
        ):
            raise ValueError(
                "`not_performed` means no such event at all; `at_least` and `at_most` "
                "go with `performed`"
            )
        if self.at_least == 0 and self.at_most is None:
            raise ValueError(
                "`at_least: 0` with no `at_most` holds for everyone; remove the condition "
                "or add `at_most`"
            )
        if self.at_most is not None and self.minimum > self.at_most:
            raise ValueError(
                f"`at_least` ({self.minimum}) is more than `at_most` ({self.at_most}); "
                "no count can satisfy both"
            )
        return self

    @property
    def event(self) -> str:
        name = self.performed or self.not_performed
        assert name is not None, "checked by _one_form"
        return name

    @property
    def minimum(self) -> int:
        """The fewest matching events a member has."""
        if self.not_performed is not None:
            return 0
        return 1 if self.at_least is None else self.at_least

    @property
    def maximum(self) -> int | None:
        """The most matching events a member has (None: no limit)."""
        return 0 if self.not_performed is not None else self.at_most

    def describe(self) -> str:
        """The condition in words, for `tidings segments show` and `check`."""
        window = f"in the last {format_duration(self.within)}"
        if self.maximum == 0:
            return f"no {self.event} {window}"
        if self.maximum is None:
            return f"{self.event} at least {_times(self.minimum)} {window}"
        if self.minimum == 0:
            return f"{self.event} at most {_times(self.maximum)} {window}"
        return f"{self.event} {self.minimum} to {self.maximum} times {window}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


class Segment(_Spec):
    """One segment definition, as written in `segments/<name>.yaml`."""

    name: SegmentName
    owner: str = Field(min_length=1, max_length=100)
    """Who maintains the definition (a team or a login)."""
    description: str = Field(min_length=1)
    tags: list[Tag] = []
    """Taxonomy: what the segment is for (retention, billing, ...)."""
    where: str | None = None
    """A condition over `contact` (key, timezone, locale, traits), as in journeys."""
    events: list[EventCondition] = []
    """Every one must hold."""

    @field_validator("where")
    @classmethod
    def _safe_condition(cls, source: str | None) -> str | None:
        if source is None:
            return None
        try:
            check_expression(source, roots=SEGMENT_ROOTS, trigger_event="", trigger_properties={})
            if segments_read(source):
                raise ExpressionError(
                    f"{source!r} names a segment; a segment's conditions read the contact "
                    "only (copy the other segment's conditions here instead)"
                )
        except ExpressionError as err:
            raise ValueError(str(err)) from None
        return source

    @model_validator(mode="after")
    def _has_a_condition(self) -> Segment:
        if self.where is None and not self.events:
            raise ValueError(
                "a segment needs `where:` (a condition on the contact), `events:` "
                "(conditions on recent events), or both; without them it holds every contact"
            )
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("a tag is listed twice in tags")
        return self

    def conditions(self) -> list[str]:
        """Each condition in words, in the order they are checked."""
        found = [f"where {self.where}"] if self.where else []
        return found + [condition.describe() for condition in self.events]


def segment_uses(journey: Journey) -> list[tuple[str, str]]:
    """(where, segment name) for every `contact.in_segment(...)` in a journey's conditions.

    Conditions are checked before this is called: it never sees a malformed one.
    """
    conditions = [("trigger.where", journey.trigger.where)] if journey.trigger.where else []
    for step in journey.steps:
        if isinstance(step, BranchStep):
            conditions += [(f"step {step.id!r}: when", case.when) for case in step.cases]
    uses = []
    for where, source in conditions:
        try:
            uses += [(where, name) for name in segments_read(source)]
        except ExpressionError:
            continue  # reported by journey_problems
    return uses


def unknown_segment_problems(journey: Journey, known: Collection[str]) -> list[str]:
    """A journey may name only segments that are defined."""
    listed = ", ".join(sorted(known)) or "none"
    return [
        f"{where}: names segment {name!r}, which is not defined (known segments: {listed}); "
        f"add segments/{name}.yaml or fix the name"
        for where, name in segment_uses(journey)
        if name not in known
    ]
