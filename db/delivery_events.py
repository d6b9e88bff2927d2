"""Delivery status history: what providers report after a message was handed over."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tidings.models.tables import Delivery, DeliveryEventRecord

STATUSES = ("queued", "sent", "delivered", "bounced", "failed", "opened", "clicked", "complained")


def find_delivery(*, session: Session, provider: str, provider_message_id: str) -> Delivery | None:
    return session.exec(
        select(Delivery).where(
            Delivery.provider == provider, Delivery.provider_message_id == provider_message_id
        )
    ).first()


def record(
    *,
    session: Session,
    delivery: Delivery,
    status: str,
    provider_status: str,
    provider_event_id: str,
    error_code: str | None,
    at: datetime,
    provider: str | None = None,
) -> DeliveryEventRecord | None:
    """Append one event; a callback the provider repeats is recorded once (None).

    `provider` defaults to the delivery's (a callback names a delivery that
    was handed over); the send itself names the provider it just used.
    """
    event = DeliveryEventRecord(
        delivery_id=delivery.id,
        status=status,
        provider=provider if provider is not None else delivery.provider or "",
        provider_status=provider_status[:64],
        provider_event_id=provider_event_id[:128],
        error_code=error_code,
        at=at,
    )
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return None
    return event


def history(*, session: Session, delivery_id: str) -> list[DeliveryEventRecord]:
    return list(
        session.exec(
            select(DeliveryEventRecord)
            .where(DeliveryEventRecord.delivery_id == delivery_id)
            .order_by(col(DeliveryEventRecord.at), col(DeliveryEventRecord.id))
        ).all()
    )
