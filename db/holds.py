"""Legal holds, pauses and kill switches: set, lift, list. Each change is audited
in the same transaction."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from tidings.db import audit
from tidings.errors import InputError
from tidings.models.holds import Hold, HoldAction
from tidings.models.tables import HoldRecord


def set_hold(
    *,
    session: Session,
    scope: str,
    action: HoldAction,
    reason: str,
    set_by: str,
    now: datetime,
) -> Hold:
    """A new active hold; `scope` must already be normalized (see models.holds)."""
    record = HoldRecord(scope=scope, action=action, reason=reason, set_by=set_by, set_at=now)
    session.add(record)
    session.flush()
    hold = _model(record)
    audit.record_hold(session=session, hold=hold, event="set", by=set_by, why=reason, at=now)
    return hold


def lift_hold(
    *, session: Session, hold_id: int, lifted_by: str, reason: str | None, now: datetime
) -> Hold:
    record = session.get(HoldRecord, hold_id, with_for_update=True)
    if record is None:
        raise InputError(f"there is no hold {hold_id}; `tidings hold list` shows the active ones")
    if record.lifted_at is not None:
        raise InputError(
            f"hold {hold_id} ({record.scope}) was already lifted by {record.lifted_by} "
            f"at {record.lifted_at:%Y-%m-%d %H:%M} UTC"
        )
    record.lifted_by = lifted_by
    record.lifted_at = now
    record.lift_reason = reason
    session.add(record)
    session.flush()
    hold = _model(record)
    audit.record_hold(
        session=session, hold=hold, event="lift", by=lifted_by, why=reason or "", at=now
    )
    return hold


def list_holds(*, session: Session, include_lifted: bool = False) -> list[Hold]:
    """Active holds (or every hold ever set), oldest first."""
    query = select(HoldRecord).order_by(col(HoldRecord.id))
    if not include_lifted:
        query = query.where(col(HoldRecord.lifted_at).is_(None))
    return [_model(record) for record in session.exec(query)]


def active(*, session: Session) -> list[Hold]:
    """What the policy reads (`db.policy_facts` reads the same rows in its one query)."""
    return list_holds(session=session)


def get_hold(*, session: Session, hold_id: int) -> Hold | None:
    record = session.get(HoldRecord, hold_id)
    return _model(record) if record is not None else None


def _model(record: HoldRecord) -> Hold:
    return Hold.model_validate(record, from_attributes=True)
