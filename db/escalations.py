"""Escalations, their tiers and the notices sent to staff.

The escalation workflow decides; `record` keeps the database copy in step
with it (listing, `tidings escalations`, reports). Notices are claimed
before they are sent, as deliveries are: a committed `sending` row stops a
retried activity from telling anyone twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tidings.models.escalations import EscalationRow, RecordEscalationInput, TierRow
from tidings.models.tables import EscalationNotice, EscalationRecord, EscalationTierRecord

SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
UNCERTAIN = "uncertain"
SETTLED = frozenset({SENT, FAILED, UNCERTAIN})


def record(*, session: Session, state: RecordEscalationInput) -> EscalationRecord:
    """Create or update the escalation's row and its tiers' rows (idempotent)."""
    row = by_workflow_id(session=session, workflow_id=state.escalation_id)
    if row is None:
        row = EscalationRecord(
            workflow_id=state.escalation_id,
            journey=state.journey,
            contact_key=state.contact_key,
            entry=state.entry,
            step_id=state.step_id,
            status=state.status,
            tier=state.tier,
            tier_count=state.tier_count,
            resolved_by=list(state.resolved_by),
            opened_at=state.opened_at,
            updated_at=state.now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # a concurrent attempt wrote it first
            row = by_workflow_id(session=session, workflow_id=state.escalation_id)
            assert row is not None
    row.status = state.status
    row.tier = state.tier
    row.acknowledged_by = state.acknowledged_by
    row.comment = state.comment
    row.resolved_event = state.resolved_event
    row.closed_at = state.now if state.status != "open" else None
    row.updated_at = state.now
    session.add(row)
    session.flush()
    assert row.id is not None
    existing = {t.tier: t for t in tiers(session=session, escalation_id=row.id)}
    for outcome in state.tiers:
        tier = existing.get(outcome.tier) or EscalationTierRecord(
            escalation_id=row.id,
            tier=outcome.tier,
            role=outcome.role,
            channel=outcome.channel,
            notified_at=outcome.notified_at,
            due_at=outcome.due_at,
            outcome=outcome.outcome,
        )
        tier.notified = list(outcome.notified)
        tier.unreachable = list(outcome.unreachable)
        tier.outcome = outcome.outcome
        tier.acknowledged_by = outcome.acknowledged_by
        tier.settled_at = outcome.settled_at
        session.add(tier)
    return row


def by_workflow_id(*, session: Session, workflow_id: str) -> EscalationRecord | None:
    return session.exec(
        select(EscalationRecord).where(EscalationRecord.workflow_id == workflow_id)
    ).first()


def find(*, session: Session, reference: str) -> EscalationRecord | None:
    """An escalation by its short number or its workflow id."""
    if reference.isdigit():
        return session.get(EscalationRecord, int(reference))
    return by_workflow_id(session=session, workflow_id=reference)


def listing(*, session: Session, open_only: bool = False) -> list[EscalationRecord]:
    query = select(EscalationRecord).order_by(col(EscalationRecord.opened_at).desc())
    if open_only:
        query = query.where(EscalationRecord.status == "open")
    return list(session.exec(query).all())


def rows(*, session: Session, open_only: bool = False) -> list[EscalationRow]:
    """Escalations with their tiers, newest first."""
    return [
        as_row(session=session, record=record)
        for record in listing(session=session, open_only=open_only)
    ]


def as_row(*, session: Session, record: EscalationRecord) -> EscalationRow:
    assert record.id is not None
    return EscalationRow(
        number=record.id,
        workflow_id=record.workflow_id,
        journey=record.journey,
        contact_key=record.contact_key,
        step_id=record.step_id,
        status=record.status,
        tier=record.tier,
        tier_count=record.tier_count,
        resolved_by=record.resolved_by,
        acknowledged_by=record.acknowledged_by,
        comment=record.comment,
        resolved_event=record.resolved_event,
        opened_at=record.opened_at,
        closed_at=record.closed_at,
        tiers=[
            TierRow.model_validate(tier, from_attributes=True)
            for tier in tiers(session=session, escalation_id=record.id)
        ],
    )


def tiers(*, session: Session, escalation_id: int) -> list[EscalationTierRecord]:
    return list(
        session.exec(
            select(EscalationTierRecord)
            .where(EscalationTierRecord.escalation_id == escalation_id)
            .order_by(col(EscalationTierRecord.tier))
        ).all()
    )


def notices(*, session: Session, workflow_id: str) -> list[EscalationNotice]:
    return list(
        session.exec(
            select(EscalationNotice)
            .where(EscalationNotice.escalation_workflow_id == workflow_id)
            .order_by(col(EscalationNotice.tier), col(EscalationNotice.user))
        ).all()
    )


@dataclass(frozen=True)
class NoticeClaim:
    notice: EscalationNotice
    verdict: Literal["send", "done"]


def find_notice(
    *, session: Session, workflow_id: str, tier: int, user: str
) -> EscalationNotice | None:
    return session.exec(
        select(EscalationNotice).where(
            EscalationNotice.escalation_workflow_id == workflow_id,
            EscalationNotice.tier == tier,
            EscalationNotice.user == user,
        )
    ).first()


def claim_notice(
    *, session: Session, workflow_id: str, tier: int, user: str, channel: str, now: datetime
) -> NoticeClaim:
    """Take the notice for one attempt, or report what an earlier attempt did.

    Must be committed before the provider is called.
    """
    existing = find_notice(session=session, workflow_id=workflow_id, tier=tier, user=user)
    if existing is None:
        notice = EscalationNotice(
            id=uuid.uuid4().hex,
            escalation_workflow_id=workflow_id,
            tier=tier,
            user=user,
            channel=channel,
            status=SENDING,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(notice)
        except IntegrityError:
            existing = find_notice(session=session, workflow_id=workflow_id, tier=tier, user=user)
            assert existing is not None
            return _earlier(session, existing, now)
        return NoticeClaim(notice, "send")
    if existing.status == DEFERRED:
        taken = session.execute(
            update(EscalationNotice)
            .where(
                col(EscalationNotice.id) == existing.id,
                col(EscalationNotice.status) == DEFERRED,
            )
            .values(status=SENDING, attempts=existing.attempts + 1, channel=channel, updated_at=now)
        )
        session.refresh(existing)
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return NoticeClaim(existing, "send")
    return _earlier(session, existing, now)


def _earlier(session: Session, notice: EscalationNotice, now: datetime) -> NoticeClaim:
    if notice.status == SENDING:
        # An earlier attempt stopped between handing the notice over and recording it.
        notice.status = UNCERTAIN
        notice.error = "an earlier attempt stopped while sending; not sent again"
        notice.updated_at = now
        session.add(notice)
    return NoticeClaim(notice, "done")


def finish_notice(
    *,
    session: Session,
    notice_id: str,
    status: str,
    now: datetime,
    provider: str | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> None:
    """Settle the attempt that holds the notice (`sending`); nothing else moves it."""
    values: dict[str, object] = {"status": status, "updated_at": now, "error": error}
    if provider is not None:
        values["provider"] = provider
    if status == SENT:
        values["sent_at"] = now
        values["provider_message_id"] = provider_message_id
    if error is not None:
        values["error"] = error[:1000]
    session.execute(
        update(EscalationNotice)
        .where(col(EscalationNotice.id) == notice_id, col(EscalationNotice.status) == SENDING)
        .values(**values)
    )
