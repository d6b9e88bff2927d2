"""Segment membership, evaluated on demand against the contacts and the event log.

Event conditions count rows of the `events` table in SQL, over a window that
ends at the `now` passed in (a workflow's clock, a test's fixed clock), never
at the wall clock; the `where` condition is a safe expression evaluated on the
contact's fields in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from tidings.errors import UnknownContactError
from tidings.models.expressions import ExpressionError, evaluate
from tidings.models.segment import EventCondition, Segment
from tidings.models.tables import Contact, EventRecord

MEMBERS_BATCH = 500
"""Contacts whose `where` condition is checked per query when listing members."""


@dataclass(frozen=True)
class ConditionCheck:
    """One condition of a segment, checked for one contact."""

    condition: str
    passed: bool
    found: str
    """What was found: the counted events, or why a condition could not hold."""


@dataclass(frozen=True)
class Membership:
    """Whether a contact is in a segment, and why (`tidings segments check`)."""

    segment: str
    contact_key: str
    member: bool
    checks: list[ConditionCheck]


@dataclass(frozen=True)
class MembersPage:
    keys: list[str]
    next_after: str | None
    """Pass as `after` for the next page; None when no contact is left to look at (a full
    page may still be the last: the next one is then empty)."""


def is_member(*, session: Session, segment: Segment, contact_key: str, now: datetime) -> bool:
    """Whether the contact is in the segment at `now` (stops at the first failed condition)."""
    contact = _contact(session, contact_key)
    if segment.where is not None and not _where_holds(segment.where, contact):
        return False
    return all(
        _passes(condition, _count(session, condition, contact_key, now))
        for condition in segment.events
    )


def explain(*, session: Session, segment: Segment, contact_key: str, now: datetime) -> Membership:
    """Every condition checked, with what was found, so an operator sees which one failed."""
    contact = _contact(session, contact_key)
    checks = []
    if segment.where is not None:
        passed = _where_holds(segment.where, contact)
        found = "true" if passed else "false (or a trait it reads is missing)"
        checks.append(ConditionCheck(f"where {segment.where}", passed, found))
    for condition in segment.events:
        count = _count(session, condition, contact_key, now)
        checks.append(
            ConditionCheck(
                condition.describe(),
                _passes(condition, count),
                f"{count} {condition.event} event{'s' if count != 1 else ''} between "
                f"{now - condition.within:%Y-%m-%d %H:%M} and {now:%Y-%m-%d %H:%M} UTC",
            )
        )
    return Membership(
        segment=segment.name,
        contact_key=contact_key,
        member=all(check.passed for check in checks),
        checks=checks,
    )


def memberships(
    *,
    session: Session,
    segments: Mapping[str, Segment],
    names: Iterable[str],
    contact_key: str,
    now: datetime,
) -> dict[str, bool]:
    """Membership in each named segment that is defined; callers check the names first
    (journeys naming an unknown segment are refused when loaded)."""
    return {
        name: is_member(session=session, segment=segments[name], contact_key=contact_key, now=now)
        for name in names
        if name in segments
    }


def members(
    *, session: Session, segment: Segment, now: datetime, limit: int, after: str | None = None
) -> MembersPage:
    """The members' keys in key order, `limit` at most, after the key `after`.

    Event conditions filter in SQL (a count per condition, by the events table's
    contact-and-time index); the `where` condition then runs on each candidate.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    query = select(Contact.key, Contact.timezone, Contact.locale, Contact.traits)
    for condition in segment.events:
        for clause in _count_clauses(condition, now):
            query = query.where(clause)
    found: list[str] = []
    cursor = after
    while True:
        page = query.order_by(col(Contact.key)).limit(MEMBERS_BATCH)
        if cursor is not None:
            page = page.where(col(Contact.key) > cursor)
        rows = session.exec(page).all()
        for key, timezone, locale, traits in rows:
            cursor = key
            values = {"key": key, "timezone": timezone, "locale": locale, "traits": traits}
            if segment.where is None or _where_holds(segment.where, values):
                found.append(key)
                if len(found) == limit:
                    return MembersPage(found, next_after=key)
        if len(rows) < MEMBERS_BATCH:
            return MembersPage(found, next_after=None)


def _contact(session: Session, key: str) -> dict[str, Any]:
    contact = session.get(Contact, key)
    if contact is None:
        raise UnknownContactError(key)
    return {
        "key": contact.key,
        "timezone": contact.timezone,
        "locale": contact.locale,
        "traits": dict(contact.traits),
    }


def _where_holds(source: str, contact: Mapping[str, Any]) -> bool:
    """A condition that cannot be evaluated for this contact (a trait of the wrong
    type) does not hold for it, as a missing trait does not."""
    try:
        return evaluate(source, {"contact": contact})
    except ExpressionError:
        return False


def _count(session: Session, condition: EventCondition, contact_key: str, now: datetime) -> int:
    query = (
        select(func.count())
        .select_from(EventRecord)
        .where(col(EventRecord.contact_key) == contact_key, *_window(condition, now))
    )
    return int(session.exec(query).one())


def _window(condition: EventCondition, now: datetime) -> list[ColumnElement[bool]]:
    """The condition's events in (now - within, now]: later ones have not happened yet."""
    return [
        col(EventRecord.name) == condition.event,
        col(EventRecord.occurred_at) > now - condition.within,
        col(EventRecord.occurred_at) <= now,
    ]


def _passes(condition: EventCondition, count: int) -> bool:
    return count >= condition.minimum and (condition.maximum is None or count <= condition.maximum)


def _count_clauses(condition: EventCondition, now: datetime) -> list[ColumnElement[bool]]:
    """`_passes` in SQL, over a count correlated with the outer query's contact."""
    count = (
        select(func.count())
        .select_from(EventRecord)
        .where(col(EventRecord.contact_key) == col(Contact.key), *_window(condition, now))
        .scalar_subquery()
    )
    clauses = [count >= condition.minimum] if condition.minimum > 0 else []
    if condition.maximum is not None:
        clauses.append(count <= condition.maximum)
    return clauses
