"""Suppressions: contacts or addresses that must not be sent to, until lifted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, col, select

from tidings.errors import InputError
from tidings.models.policy import Suppression
from tidings.models.tables import SuppressionRecord


def suppress(
    *,
    session: Session,
    reason: str,
    now: datetime,
    contact_key: str | None = None,
    channel: str | None = None,
    address: str | None = None,
    note: str = "",
) -> Suppression:
    if (contact_key is None) == (address is None):
        raise InputError("suppress either a contact (KEY) or an address (--address), not both")
    record = SuppressionRecord(
        contact_key=contact_key,
        channel=channel,
        address=address,
        reason=reason,
        note=note,
        created_at=now,
    )
    session.add(record)
    session.flush()
    return to_suppression(record)


def lift(*, session: Session, suppression_id: int, now: datetime) -> Suppression:
    record = session.get(SuppressionRecord, suppression_id)
    if record is None:
        raise InputError(
            f"there is no suppression {suppression_id}; see `tidings consent show KEY`"
        )
    if record.lifted_at is None:
        record.lifted_at = now
        session.add(record)
    return to_suppression(record)


def active_for(*, session: Session, contact_key: str, addresses: list[str]) -> list[Suppression]:
    """Active suppressions of the contact itself or of any of its addresses."""
    query = select(SuppressionRecord).where(
        col(SuppressionRecord.lifted_at).is_(None),
        or_(
            col(SuppressionRecord.contact_key) == contact_key,
            col(SuppressionRecord.address).in_(addresses),
        ),
    )
    return [to_suppression(row) for row in session.exec(query)]


def to_suppression(record: SuppressionRecord) -> Suppression:
    return Suppression.model_validate(record, from_attributes=True)
