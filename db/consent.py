"""The consent ledger: append-only lines; current consent is derived from them."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from tidings.models.policy import ConsentChange, ConsentEntry
from tidings.models.tables import ConsentRecord
from tidings.policy.jurisdictions import packs_for


def record_change(
    *, session: Session, change: ConsentChange, jurisdiction: str | None, now: datetime
) -> ConsentEntry:
    """Append one line; a grant gets the expiry the contact's law sets (CASL implied consent)."""
    effective = change.effective_at or now
    expiries = [change.expires_at] + [
        pack.consent_expiry(change.basis, effective) for pack in packs_for(jurisdiction)
    ]
    known = [e for e in expiries if e is not None]
    record = ConsentRecord(
        contact_key=change.contact_key,
        channel=change.channel,
        purpose=change.purpose,
        topic=change.topic,
        action=change.action,
        basis=change.basis,
        source=change.source,
        proof=change.proof,
        recorded_at=now,
        effective_at=effective,
        expires_at=min(known) if known and change.action == "grant" else None,
    )
    session.add(record)
    session.flush()
    return to_entry(record)


def ledger(*, session: Session, contact_key: str, channel: str | None = None) -> list[ConsentEntry]:
    query = select(ConsentRecord).where(ConsentRecord.contact_key == contact_key)
    if channel is not None:
        query = query.where(ConsentRecord.channel == channel)
    rows = session.exec(query.order_by(col(ConsentRecord.effective_at), col(ConsentRecord.id)))
    return [to_entry(row) for row in rows]


def last_revoked_grants(*, session: Session, contact_key: str, channel: str) -> list[ConsentEntry]:
    """The grants a channel-wide revocation cut off (what an SMS START restores)."""
    entries = ledger(session=session, contact_key=contact_key, channel=channel)
    stop = max(
        (e for e in entries if e.action == "revoke" and e.purpose is None and e.topic is None),
        key=lambda e: (e.effective_at, e.id),
        default=None,
    )
    if stop is None:
        return []
    before = [e for e in entries if (e.effective_at, e.id) < (stop.effective_at, stop.id)]
    latest: dict[tuple[str | None, str | None], ConsentEntry] = {}
    for entry in before:
        latest[(entry.purpose, entry.topic)] = entry
    return [e for e in latest.values() if e.action == "grant"]


def to_entry(record: ConsentRecord) -> ConsentEntry:
    return ConsentEntry.model_validate(record, from_attributes=True)
