"""Deliveries: the record of every message, claimed before the provider is called.

Status moves: sending -> sent | deferred | failed | uncertain; deferred ->
sending (a retry). `skipped` and `failed` may also be written directly when
nothing was handed to a provider. A row left in `sending` by a process that
died mid-call is the one case where nobody knows whether the message left;
it becomes `uncertain` and is never sent again automatically.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tidings.models.tables import Delivery

SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
SKIPPED = "skipped"
UNCERTAIN = "uncertain"
FINAL = frozenset({SENT, FAILED, SKIPPED, UNCERTAIN})
COUNTED = frozenset({SENDING, SENT, DEFERRED, UNCERTAIN})
"""Deliveries that take a place under frequency caps: handed over, or may still be."""


@dataclass(frozen=True)
class NewDelivery:
    idempotency_key: str
    contact_key: str
    journey: str
    step_id: str
    channel: str
    template: str
    purpose: str
    topic: str | None
    scheduled_at: datetime
    template_version: int | None = None
    locale: str | None = None


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to take a delivery for sending."""

    delivery: Delivery
    verdict: Literal["send", "done"]


def find(*, session: Session, idempotency_key: str) -> Delivery | None:
    return session.exec(select(Delivery).where(Delivery.idempotency_key == idempotency_key)).first()


def claim(
    *, session: Session, new: NewDelivery, to_address: str, now: datetime, counted_at: datetime
) -> Claim:
    """Take the delivery for one attempt, or report the earlier attempt's result.

    Must be committed before the provider is called: the committed `sending`
    row is what stops a second attempt from sending again.
    """
    existing = find(session=session, idempotency_key=new.idempotency_key)
    if existing is None:
        delivery = Delivery(
            id=uuid.uuid4().hex,
            status=SENDING,
            attempts=1,
            to_address=to_address,
            counted_at=counted_at,
            updated_at=now,
            **asdict(new),
        )
        try:
            with session.begin_nested():
                session.add(delivery)
        except IntegrityError:
            existing = find(session=session, idempotency_key=new.idempotency_key)
            assert existing is not None
            return _earlier(session, existing, now)
        return Claim(delivery, "send")
    if existing.status == DEFERRED:
        taken = session.execute(
            update(Delivery)
            .where(col(Delivery.id) == existing.id, col(Delivery.status) == DEFERRED)
            .values(
                status=SENDING,
                attempts=existing.attempts + 1,
                counted_at=counted_at,
                updated_at=now,
            )
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(existing)
            return Claim(existing, "send")
        session.refresh(existing)
    return _earlier(session, existing, now)


def _earlier(session: Session, delivery: Delivery, now: datetime) -> Claim:
    if delivery.status == SENDING:
        # An earlier attempt died between handing the message over and
        # recording the result; sending again could deliver it twice.
        delivery.status = UNCERTAIN
        delivery.error = "an earlier attempt stopped while sending; not sent again"
        delivery.updated_at = now
        session.add(delivery)
    return Claim(delivery, "done")


def record(
    *,
    session: Session,
    new: NewDelivery,
    status: str,
    error: str,
    now: datetime,
) -> Delivery:
    """Record a delivery that will not reach a provider (skipped, or failed before sending).

    An earlier attempt's row is settled too: `deferred` (nothing was handed
    over) takes the new status; `sending` becomes `uncertain`.
    """
    existing = find(session=session, idempotency_key=new.idempotency_key)
    if existing is not None:
        if existing.status == DEFERRED:
            existing.status, existing.error, existing.updated_at = status, error[:1000], now
            session.add(existing)
            return existing
        return _earlier(session, existing, now).delivery
    delivery = Delivery(
        id=uuid.uuid4().hex, status=status, error=error[:1000], updated_at=now, **asdict(new)
    )
    session.add(delivery)
    return delivery


def finish(
    *,
    session: Session,
    delivery_id: str,
    status: str,
    now: datetime,
    provider_message_id: str | None = None,
    provider: str | None = None,
    error: str | None = None,
) -> None:
    """Record an attempt's result.

    Only the attempt in `sending` may settle its row, except that a real
    `sent` replaces an `uncertain` mark a later attempt left meanwhile.
    """
    values: dict[str, object] = {"status": status, "updated_at": now}
    if provider is not None:
        values["provider"] = provider
    if status == SENT:
        values["sent_at"] = now
        values["provider_message_id"] = provider_message_id
        values["error"] = None
    if error is not None:
        values["error"] = error[:1000]
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery_id,
            col(Delivery.status).in_([SENDING, UNCERTAIN] if status == SENT else [SENDING]),
        )
        .values(**values)
    )


def for_contact(*, session: Session, contact_key: str) -> list[Delivery]:
    return list(
        session.exec(
            select(Delivery)
            .where(Delivery.contact_key == contact_key)
            .order_by(col(Delivery.scheduled_at))
        ).all()
    )
