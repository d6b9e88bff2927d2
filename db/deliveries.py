"""Deliveries: the record of every message, claimed before the provider is called.

Status moves: claimed -> sending -> sent | deferred | failed | uncertain;
claimed -> deferred | failed (refused before anything was handed over);
deferred -> claimed (a retry). `skipped` and `failed` may also be written
directly when nothing was handed to a provider.

`claimed` turns into `sending` at the provider's point of no return
(`activities/channels/handover.py`), committed before the message can reach
the vendor. A row left in `claimed` by a process that died provably handed
nothing over: the next attempt takes it again. A row left in `sending` is the
one case where nobody knows whether the message left. When the provider has
a record of what it accepted (`activities/channels/relay_record.py`, the
SMTP relay's archive Maildir or mail log), the next attempt asks it: found,
the row turns `sent` (`resolve`); absent once the hand-over is old enough that
its connection is gone, the row turns `deferred` (`resolve`) and is taken
again under a new attempt number, same Message-ID. Without a record, or when
the record cannot answer, the row becomes `uncertain` and is never sent again
automatically; `tidings deliveries reconcile` settles such rows later.

Each attempt takes the row with its own number (`attempts`); an attempt that
was given up for dead and wakes later finds another number there and can
neither hand the message over nor settle the row (`hand_over`, `finish`,
`record` and `resolve` all change a row only as it was read).
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
        taken = _as_read(
            session,
            existing,
            existing.status,
            status=CLAIMED,
            attempts=existing.attempts + 1,
            counted_at=counted_at,
            updated_at=now,
        )
        if taken:
            session.refresh(existing)
            return Claim(existing, "send")
        session.refresh(existing)
    return _earlier(session, existing, now)


def hand_over(
    *, session: Session, delivery: Delivery, now: datetime, provider: str | None = None
) -> bool:
    """Mark the attempt's point of no return; False when another attempt has the row.
    `provider` is recorded with the mark: a later attempt asks that provider's record."""
    values: dict[str, object] = {"status": SENDING, "updated_at": now}
    if provider is not None:
        values["provider"] = provider
    return _as_read(session, delivery, CLAIMED, **values)


def _as_read(session: Session, delivery: Delivery, read_status: str, /, **values: object) -> bool:
    """Set `values` only if the row still has `read_status` and the attempt number it
    was read with; False when another attempt changed it meanwhile."""
    changed = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery.id,
            col(Delivery.status) == read_status,
            col(Delivery.attempts) == delivery.attempts,
        )
        .values(**values)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


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
            # Fenced like `finish`: an attempt that read the row before another one
            # claimed it (and may be handing it over now) must not settle it.
            settled = _as_read(
                session,
                existing,
                existing.status,
                status=status,
                error=error[:1000],
                updated_at=now,
            )
            session.refresh(existing)
            if settled:
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


def resolve(
    *,
    session: Session,
    delivery: Delivery,
    status: str,
    now: datetime,
    error: str | None = None,
    provider_message_id: str | None = None,
) -> bool:
    """Settle a row whose fate the provider's own record answered: `sent` (found
    there), `deferred` (not there: the next claim takes it under a new attempt number)
    or `failed` (not there, and not to be sent again by itself); `uncertain` when the
    record could not answer. Changes the row only
    as it was read (status and attempt number); False when it changed meanwhile."""
    values: dict[str, object] = {"status": status, "updated_at": now, "error": error}
    if status == SENT:
        # It left at its hand-over, which is when the row was last touched.
        values["sent_at"] = delivery.updated_at
        values["provider_message_id"] = provider_message_id
    return _as_read(session, delivery, delivery.status, **values)


def for_contact(*, session: Session, contact_key: str) -> list[Delivery]:
    return list(
        session.exec(
            select(Delivery)
            .where(Delivery.contact_key == contact_key)
            .order_by(col(Delivery.scheduled_at))
        ).all()
    )
