"""Deliveries: the record of every message, claimed before the provider is called.

Status moves: claimed -> sending -> sent | deferred | failed | uncertain;
claimed -> deferred | failed (refused before anything was handed over);
deferred -> claimed (a retry). `skipped` and `failed` may also be written
directly when nothing was handed to a provider.

`claimed` turns into `sending` at the provider's point of no return
(`activities/channels/handover.py`), committed before the message can reach
the vendor. A row left in `claimed` by a process that died provably handed
nothing over: the next attempt takes it again. A row left in `sending` is the
one case where nobody knows whether the message left; it becomes `uncertain`
and is never sent again automatically.

Each attempt takes the row with its own number (`attempts`); an attempt that
was given up for dead and wakes later finds another number there and can
neither hand the message over nor settle the row.
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

CLAIMED = "claimed"
SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
SKIPPED = "skipped"
UNCERTAIN = "uncertain"
FINAL = frozenset({SENT, FAILED, SKIPPED, UNCERTAIN})
RETAKEN = frozenset({CLAIMED, DEFERRED})
"""Nothing was handed over: another attempt may take the row."""
COUNTED = frozenset({CLAIMED, SENDING, SENT, DEFERRED, UNCERTAIN})
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

    Must be committed before the provider is called; `hand_over` then marks the
    moment the message may leave, which is what stops a second attempt from
    sending it again.
    """
    existing = find(session=session, idempotency_key=new.idempotency_key)
    if existing is None:
        delivery = Delivery(
            id=uuid.uuid4().hex,
            status=CLAIMED,
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
    if existing.status in RETAKEN:
        taken = session.execute(
            update(Delivery)
            .where(
                col(Delivery.id) == existing.id,
                col(Delivery.status) == existing.status,
                col(Delivery.attempts) == existing.attempts,
            )
            .values(
                status=CLAIMED,
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


def hand_over(*, session: Session, delivery: Delivery, now: datetime) -> bool:
    """Mark the attempt's point of no return; False when another attempt has the row."""
    marked = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery.id,
            col(Delivery.status) == CLAIMED,
            col(Delivery.attempts) == delivery.attempts,
        )
        .values(status=SENDING, updated_at=now)
    )
    return bool(marked.rowcount == 1)  # type: ignore[attr-defined]


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

    An earlier attempt's row is settled too: `claimed` or `deferred` (nothing
    was handed over) takes the new status; `sending` becomes `uncertain`.
    """
    existing = find(session=session, idempotency_key=new.idempotency_key)
    if existing is not None:
        if existing.status in RETAKEN:
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
    delivery: Delivery,
    status: str,
    now: datetime,
    provider_message_id: str | None = None,
    provider: str | None = None,
    error: str | None = None,
) -> None:
    """Record an attempt's result.

    Only the attempt that holds the row (`claimed` or `sending` under its
    number) may settle it, except that a real `sent` replaces an `uncertain`
    mark a later attempt left meanwhile.
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
    held = [CLAIMED, SENDING, UNCERTAIN] if status == SENT else [CLAIMED, SENDING]
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery.id,
            col(Delivery.attempts) == delivery.attempts,
            col(Delivery.status).in_(held),
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
