"""The audit log: every policy decision with its rule and inputs, how content was chosen,
and every hold set and lifted."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from tidings.models.holds import Hold
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


def record_content(
    *,
    session: Session,
    contact_key: str,
    at: datetime,
    journey: str,
    step_id: str,
    template: str,
    version: int,
    locale: str,
    notes: list[str],
) -> None:
    """How a send's content was chosen, when it was not plainly the approved text:
    a stale translation used or skipped, a fallback, a failed lookup, a lint warning."""
    session.add(
        AuditRecord(
            at=at,
            contact_key=contact_key,
            journey=journey,
            step_id=step_id,
            kind="content",
            action="composed",
            rule=f"{template} v{version} {locale}"[:200],
            detail="; ".join(notes)[:1000],
            data={"template": template, "version": version, "locale": locale, "notes": notes},
        )
    )


def record_hold(
    *, session: Session, hold: Hold, event: str, by: str, why: str, at: datetime
) -> None:
    """A hold set or lifted (`event`), by whom and why. Holds concern no one contact:
    their records have an empty contact key (held sends are policy decisions, per contact)."""
    session.add(
        AuditRecord(
            at=at,
            contact_key="",
            kind="hold",
            action=event,
            rule=hold.label()[:200],
            detail=why[:1000],
            data={"hold_id": hold.id, "scope": hold.scope, "action": hold.action, "by": by},
        )
    )


def for_contact(
    *, session: Session, contact_key: str, journey: str | None = None
) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.contact_key == contact_key)
    if journey is not None:
        query = query.where(AuditRecord.journey == journey)
    return list(session.exec(query.order_by(col(AuditRecord.at), col(AuditRecord.id))))
