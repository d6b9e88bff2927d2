"""Topic preferences per contact and channel: the subscription center."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from tidings.models.policy import Preference
from tidings.models.tables import PreferenceRecord


def set_preference(
    *, session: Session, contact_key: str, channel: str, topic: str, subscribed: bool, now: datetime
) -> Preference:
    record = session.get(PreferenceRecord, (contact_key, channel, topic))
    if record is None:
        record = PreferenceRecord(
            contact_key=contact_key,
            channel=channel,
            topic=topic,
            subscribed=subscribed,
            updated_at=now,
        )
    else:
        record.subscribed, record.updated_at = subscribed, now
    session.add(record)
    return Preference.model_validate(record, from_attributes=True)


def preferences_for(*, session: Session, contact_key: str) -> list[Preference]:
    rows = session.exec(select(PreferenceRecord).where(PreferenceRecord.contact_key == contact_key))
    return [Preference.model_validate(row, from_attributes=True) for row in rows]
