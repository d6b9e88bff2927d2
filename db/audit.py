"""The audit log: every policy decision with its rule and inputs."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from tidings.models.policy import Decision
from tidings.models.tables import AuditRecord


def record_decision(
    *,
    session: Session,
    contact_key: str,
    decision: Decision,
    at: datetime,
    stage: str,
    journey: str | None = None,
    step_id: str | None = None,
) -> None:
    session.add(
        AuditRecord(
            at=at,
            contact_key=contact_key,
            journey=journey,
            step_id=step_id,
            kind=f"policy:{stage}",
            action=decision.action,
            rule=decision.rule[:200],
            detail=decision.reason[:1000],
            data={
                **decision.inputs,
                "until": decision.until.isoformat() if decision.until else None,
            },
        )
    )


def for_contact(
    *, session: Session, contact_key: str, journey: str | None = None
) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.contact_key == contact_key)
    if journey is not None:
        query = query.where(AuditRecord.journey == journey)
    return list(session.exec(query.order_by(col(AuditRecord.at), col(AuditRecord.id))))
