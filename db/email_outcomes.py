"""What mailbox providers report about email we sent: bounces, complaints, deliveries.

From SendGrid's event webhook or DSNs in a bounce mailbox, each report becomes
a line in the delivery's status history and, when the address is dead for
good, a suppression: a hard bounce or a complaint at once; soft bounces once
the address has soft-bounced SOFT_BOUNCE_LIMIT times within SOFT_BOUNCE_WINDOW.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from tidings.db import delivery_events, suppressions
from tidings.models.tables import Delivery, DeliveryEventRecord

SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_WINDOW = timedelta(days=30)
SOFT = "bounce:soft"


@dataclass(frozen=True)
class EmailOutcome:
    delivery_id: str | None
    provider_message_id: str | None
    status: str
    """One of delivery_events.STATUSES."""
    provider_status: str
    """The provider's word, or `bounce:<class>` for a classified bounce."""
    event_id: str
    code: str | None
    suppress: str | None
    """A suppression reason when the address is dead for good."""
    at: datetime


def record(*, session: Session, outcome: EmailOutcome, provider: str) -> bool:
    """Apply one report; False when its delivery is unknown or it was applied before."""
    delivery = _delivery(session, outcome, provider)
    if delivery is None:
        return False
    event = delivery_events.record(
        session=session,
        delivery=delivery,
        status=outcome.status,
        provider_status=outcome.provider_status,
        provider_event_id=outcome.event_id,
        error_code=outcome.code,
        at=outcome.at,
    )
    if event is None or not delivery.to_address:
        return event is not None
    reason = outcome.suppress
    soft = outcome.provider_status == SOFT
    if (
        reason is None
        and soft
        and _soft_bounces(session, delivery.to_address, outcome.at) >= (SOFT_BOUNCE_LIMIT)
    ):
        reason = "hard_bounce"
    if reason is not None:
        suppressions.suppress(
            session=session,
            reason=reason,
            now=outcome.at,
            channel="email",
            address=delivery.to_address,
            note=f"{provider}: {outcome.provider_status} {outcome.code or ''}".strip(),
        )
    return True


def _delivery(session: Session, outcome: EmailOutcome, provider: str) -> Delivery | None:
    if outcome.delivery_id:
        found = session.get(Delivery, outcome.delivery_id)
        if found is not None:
            return found
    if outcome.provider_message_id:
        return delivery_events.find_delivery(
            session=session, provider=provider, provider_message_id=outcome.provider_message_id
        )
    return None


def _soft_bounces(session: Session, address: str, now: datetime) -> int:
    count = session.exec(
        select(func.count())
        .select_from(DeliveryEventRecord)
        .join(Delivery, col(Delivery.id) == col(DeliveryEventRecord.delivery_id))
        .where(
            Delivery.to_address == address,
            DeliveryEventRecord.provider_status == SOFT,
            col(DeliveryEventRecord.at) >= now - SOFT_BOUNCE_WINDOW,
        )
    ).one()
    return int(count)
