"""The ingest queue: messages the HTTP event API accepted, until they are routed.

Accepting writes a request's messages in one transaction (all or none), so a
200 means they are on disk; the router reads them back in order, one stream
(sender) at a time, and records what became of each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from tidings.errors import InputError
from tidings.models.tables import IngestMessage

PENDING = "pending"
ROUTED = "routed"
DEAD = "dead"
STATES = (PENDING, ROUTED, DEAD)
MAX_ERROR_LENGTH = 1000
_IN_CHUNK = 500
"""Ids per `IN (...)`: SQLite allows a few thousand bound parameters per statement."""


@dataclass(frozen=True)
class NewMessage:
    message_id: str
    kind: str
    stream: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Ready:
    """A pending message the router may route now."""

    id: int
    stream: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Retry:
    error: str
    next_attempt_at: datetime


def enqueue(
    *, session: Session, write_key: str, messages: Sequence[NewMessage], now: datetime
) -> int:
    """Queue the messages this write key has not sent before; how many were new.

    A messageId seen again (a client's retry, or twice in one batch) is skipped:
    the first one stands.
    """
    wanted: dict[str, NewMessage] = {}
    for message in messages:
        wanted.setdefault(message.message_id, message)
    ids = list(wanted)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        seen = session.exec(
            select(IngestMessage.message_id).where(
                IngestMessage.write_key == write_key, col(IngestMessage.message_id).in_(chunk)
            )
        ).all()
        for message_id in seen:
            del wanted[message_id]
    session.add_all(
        IngestMessage(
            write_key=write_key,
            message_id=message.message_id,
            kind=message.kind,
            stream=message.stream,
            payload=message.payload,
            received_at=now,
            next_attempt_at=now,
        )
        for message in wanted.values()
    )
    return len(wanted)


def ready(*, session: Session, now: datetime, limit: int) -> list[Ready]:
    """Pending messages in the order they were accepted, leaving out every stream whose
    oldest pending message waits for a retry (its later ones must wait behind it)."""
    waiting = select(IngestMessage.stream).where(
        IngestMessage.state == PENDING, IngestMessage.next_attempt_at > now
    )
    rows = session.exec(
        select(IngestMessage)
        .where(IngestMessage.state == PENDING, col(IngestMessage.stream).not_in(waiting))
        .order_by(col(IngestMessage.id))
        .limit(limit)
    ).all()
    return [Ready(row.id or 0, row.stream, row.payload, row.attempts) for row in rows]


def record_outcomes(
    *,
    session: Session,
    routed: Iterable[int],
    dead: dict[int, str],
    retry: dict[int, Retry],
    now: datetime,
) -> None:
    """What one routing pass did, in one transaction."""
    outcomes: dict[int, tuple[str, str | None]] = dict.fromkeys(routed, (ROUTED, None))
    outcomes.update({i: (DEAD, reason) for i, reason in dead.items()})
    ids = list(outcomes) + list(retry)
    for start in range(0, len(ids), _IN_CHUNK):
        rows = session.exec(
            select(IngestMessage).where(col(IngestMessage.id).in_(ids[start : start + _IN_CHUNK]))
        ).all()
        for row in rows:
            assert row.id is not None
            row.attempts += 1
            if row.id in retry:
                row.last_error = retry[row.id].error[:MAX_ERROR_LENGTH]
                row.next_attempt_at = retry[row.id].next_attempt_at
                continue
            row.state, error = outcomes[row.id]
            if error is not None:
                row.last_error = error[:MAX_ERROR_LENGTH]
            if row.state == ROUTED:
                row.routed_at = now


def listing(*, session: Session, state: str | None, limit: int) -> list[IngestMessage]:
    """The newest messages first, of one state or all."""
    if state is not None and state not in STATES:
        raise InputError(f"state {state!r} is not one of {', '.join(STATES)}")
    query = select(IngestMessage).order_by(col(IngestMessage.id).desc()).limit(limit)
    if state is not None:
        query = query.where(IngestMessage.state == state)
    return list(session.exec(query).all())


def counts(*, session: Session) -> dict[str, int]:
    """Messages in each state."""
    rows = session.exec(
        select(IngestMessage.state, func.count()).group_by(IngestMessage.state)
    ).all()
    found = dict.fromkeys(STATES, 0)
    found.update(dict(rows))
    return found


def requeue_dead(*, session: Session, ids: Sequence[int], now: datetime) -> int:
    """Route dead messages again (after the journey or contact that refused them is
    fixed); ids that are not dead are refused, with nothing changed."""
    rows = session.exec(select(IngestMessage).where(col(IngestMessage.id).in_(ids))).all()
    found = {row.id: row for row in rows}
    wrong = [i for i in ids if i not in found or found[i].state != DEAD]
    if wrong:
        which = ", ".join(map(str, wrong))
        raise InputError(
            f"{'messages' if len(wrong) > 1 else 'message'} {which}: not dead, or not in the "
            "queue; `tidings ingest list --state dead` lists the dead ones"
        )
    for row in rows:
        row.state = PENDING
        row.next_attempt_at = now
    return len(rows)
