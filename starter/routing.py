"""Which journeys an event starts or wakes: decided from the specs, without scanning workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from tidings.catalog import Catalog
from tidings.db import segments
from tidings.errors import InputError
from tidings.models.contact import ContactView
from tidings.models.events import JourneyEvent, property_problems
from tidings.models.expressions import ExpressionError, evaluate, fields_read, segments_read
from tidings.models.journey import Journey


@dataclass
class RoutePlan:
    trigger: list[Journey] = field(default_factory=list)
    """Journeys to signal-with-start: a new entry, or the running one gets the event."""
    wake: list[Journey] = field(default_factory=list)
    """Journeys whose running entry (if any) listens to the event."""
    skipped: dict[str, str] = field(default_factory=dict)


def check_properties(catalog: Catalog, name: str, properties: dict[str, Any]) -> None:
    """Refuse an event whose properties break a schema declared by a journey it triggers."""
    problems = []
    for journey in catalog.triggered_by(name):
        for problem in property_problems(journey.trigger.properties, properties):
            problems.append(f"{problem} (declared by journey {journey.name!r})")
    if problems:
        raise InputError(f"event {name!r} is malformed: " + "; ".join(problems))


def needs_contact(catalog: Catalog, name: str) -> bool:
    return any(
        ref.root == "contact"
        for journey in catalog.triggered_by(name)
        if journey.trigger.where
        for ref in fields_read(journey.trigger.where)
    )


def trigger_contact(
    *, session: Session, catalog: Catalog, contact: ContactView, event: str, now: datetime
) -> dict[str, Any]:
    """The contact as trigger conditions see it, with its membership (at `now`) in the
    segments those conditions name; the event being routed is not stored yet, so it
    does not count towards them."""
    names = {
        name
        for journey in catalog.triggered_by(event)
        if journey.trigger.where
        for name in segments_read(journey.trigger.where)
    }
    values = contact.model_dump()
    values["segments"] = segments.memberships(
        session=session,
        segments=catalog.segments,
        names=sorted(names),
        contact_key=contact.key,
        now=now,
    )
    return values


def plan_routes(catalog: Catalog, event: JourneyEvent, contact: dict[str, Any] | None) -> RoutePlan:
    plan = RoutePlan(wake=catalog.listening_to(event.name))
    context = {
        "event": event.model_dump(),
        "properties": event.properties,
        "contact": contact or {},
    }
    for journey in catalog.triggered_by(event.name):
        condition = journey.trigger.where
        try:
            matched = condition is None or evaluate(condition, context)
        except ExpressionError as err:
            raise InputError(
                f"journey {journey.name!r}: its trigger condition failed on this event "
                f"({err}); fix the event's properties, or declare them under "
                "trigger.properties so bad events are refused with a precise message"
            ) from err
        if matched:
            plan.trigger.append(journey)
        elif event.name in journey.listens_while_running():
            # Not a new entry, but a running one may be waiting for it.
            plan.wake.append(journey)
        else:
            plan.skipped[journey.name] = f"trigger condition is false: {condition}"
    return plan
