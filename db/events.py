"""The event log: what `track` accepted, and whether it has been routed to journeys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from tidings.errors import InputError
from tidings.models.events import JourneyEvent
from tidings.models.tables import EventRecord


@dataclass(frozen=True)
class Recorded:
    event: JourneyEvent
    already_routed: bool


def record_event(
    *, session: Session, contact_key: str, event: JourneyEvent, now: datetime
) -> Recorded:
    """Store an event once; the same id again returns the stored one.

    Reusing an event id for a different event is refused rather than
    silently dropped, since it is almost always a bug in the sender.
    """
    stored = session.get(EventRecord, event.event_id)
    if stored is None:
        session.add(
            EventRecord(
                event_id=event.event_id,
                contact_key=contact_key,
                name=event.name,
                properties=event.properties,
                occurred_at=event.occurred_at,
                received_at=now,
            )
        )
        session.flush()
        return Recorded(event=event, already_routed=False)
    if (stored.contact_key, stored.name, stored.properties) != (
        contact_key,
        event.name,
        event.properties,
    ):
        raise InputError(
            f"event id {event.event_id!r} was already used for a different event "
            f"({stored.name!r} of contact {stored.contact_key!r}); give each event its own id"
        )
    first = JourneyEvent(
        event_id=stored.event_id,
        name=stored.name,
        properties=stored.properties,
        occurred_at=stored.occurred_at,
    )
    return Recorded(event=first, already_routed=stored.routed_at is not None)


def mark_routed(*, session: Session, event_id: str, now: datetime) -> None:
    stored = session.get(EventRecord, event_id)
    if stored is not None and stored.routed_at is None:
        stored.routed_at = now
