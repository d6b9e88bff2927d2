"""The blackout calendar: holidays, quiet periods and incidents."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from tidings.errors import InputError
from tidings.models.policy import Blackout
from tidings.models.tables import BlackoutRecord


def add_blackout(
    *,
    session: Session,
    name: str,
    starts_at: datetime,
    ends_at: datetime,
    regions: list[str],
    purposes: list[str],
    action: str,
    now: datetime,
) -> Blackout:
    if ends_at <= starts_at:
        raise InputError(f"blackout {name!r} ends before it starts; check --from and --until")
    record = BlackoutRecord(
        name=name,
        starts_at=starts_at,
        ends_at=ends_at,
        regions=regions,
        purposes=purposes,
        action=action,
        created_at=now,
    )
    session.add(record)
    session.flush()
    return Blackout.model_validate(record, from_attributes=True)


def remove_blackout(*, session: Session, blackout_id: int) -> None:
    record = session.get(BlackoutRecord, blackout_id)
    if record is None:
        raise InputError(f"there is no blackout {blackout_id}; see `tidings blackouts list`")
    session.delete(record)


def blackouts(*, session: Session, active_at: datetime | None = None) -> list[Blackout]:
    query = select(BlackoutRecord).order_by(col(BlackoutRecord.starts_at))
    if active_at is not None:
        query = query.where(
            col(BlackoutRecord.starts_at) <= active_at, col(BlackoutRecord.ends_at) > active_at
        )
    return [Blackout.model_validate(row, from_attributes=True) for row in session.exec(query)]
