"""What providers report about messages we sent: delivered, bounced, failed, complained.

From Twilio's status callbacks, SendGrid's event webhook or DSNs in a bounce
mailbox, each report becomes a line in the delivery's status history and, when
the address is dead for good, a suppression on the delivery's channel: a hard
bounce, a complaint or a number that does not exist at once; email soft bounces
once the address has soft-bounced SOFT_BOUNCE_LIMIT times within SOFT_BOUNCE_WINDOW.
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
class DeliveryReport:
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


def record(*, session: Session, report: DeliveryReport, provider: str) -> bool:
    """Apply one report; False when its delivery is unknown or it was applied before."""
    delivery = _delivery(session, report, provider)
    if delivery is None:
        return False
    event = delivery_events.record(
        session=session,
        delivery=delivery,
        status=report.status,
        provider_status=report.provider_status,
        provider_event_id=report.event_id,
        error_code=report.code,
        at=report.at,
    )
    if event is None or not delivery.to_address:
        return event is not None
    reason = report.suppress
    if reason is None and report.provider_status == SOFT:
        soft_bounces = _soft_bounces(session, delivery.to_address, report.at)
        reason = "hard_bounce" if soft_bounces >= SOFT_BOUNCE_LIMIT else None
    if reason is not None:
        suppressions.suppress(
            session=session,
            reason=reason,
            now=report.at,
            channel=delivery.channel,
            address=delivery.to_address,
            note=f"{provider}: {report.provider_status} {report.code or ''} on delivery "
            f"{delivery.id}",
        )
    return True


def _delivery(session: Session, report: DeliveryReport, provider: str) -> Delivery | None:
    if report.delivery_id:
        found = session.get(Delivery, report.delivery_id)
        if found is not None:
            return found
    if report.provider_message_id:
        return delivery_events.find_delivery(
            session=session, provider=provider, provider_message_id=report.provider_message_id
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
