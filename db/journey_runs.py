"""Journey entries and exits: the reentry ledger that outlives Temporal's retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from tidings.db import audit
from tidings.db.identities import person_keys
from tidings.models.journey import Reentry
from tidings.models.primitives import format_duration
from tidings.models.tables import JourneyRun


@dataclass(frozen=True)
class Admission:
    admitted: bool
    entry: int = 0
    reason: str = ""


def latest_entry(*, session: Session, journey: str, contact_key: str) -> JourneyRun | None:
    return session.exec(
        select(JourneyRun)
        .where(JourneyRun.journey == journey, JourneyRun.contact_key == contact_key)
        .order_by(col(JourneyRun.entry).desc())
    ).first()


def latest_of_person(*, session: Session, journey: str, contact_key: str) -> JourneyRun | None:
    """The contact's latest entry or that of a contact merged into it: one person's
    history, which the reentry policy is about (a merge must not reopen a `never`)."""
    return session.exec(
        select(JourneyRun)
        .where(
            JourneyRun.journey == journey,
            col(JourneyRun.contact_key).in_(person_keys(session=session, key=contact_key)),
        )
        .order_by(col(JourneyRun.entered_at).desc(), col(JourneyRun.entry).desc())
    ).first()


def reentry_refusal(*, previous: JourneyRun | None, reentry: Reentry, now: datetime) -> str | None:
    """Why a new entry is refused, or None if it is allowed."""
    if previous is None:
        return None
    if reentry.policy == "never":
        return (
            f"the contact entered {previous.journey!r} before "
            f"({previous.entered_at:%Y-%m-%d}) and its reentry policy is `never`"
        )
    if reentry.cooldown is None:
        return None
    ended = previous.exited_at or previous.entered_at
    if now - ended < reentry.cooldown:
        return (
            f"the previous entry ended {ended:%Y-%m-%d %H:%M} UTC; the cooldown of "
            f"{format_duration(reentry.cooldown)} lasts until "
            f"{ended + reentry.cooldown:%Y-%m-%d %H:%M} UTC"
        )
    return None


def admit(
    *,
    session: Session,
    journey: str,
    version: int,
    contact_key: str,
    workflow_id: str,
    run_id: str,
    reentry: Reentry,
    now: datetime,
) -> Admission:
    """Record a new entry if the reentry policy allows it; idempotent per run id.
    Entries, refusals and the closing of an entry left open go in the audit log."""
    same_run = session.exec(select(JourneyRun).where(JourneyRun.run_id == run_id)).first()
    if same_run is not None:
        return Admission(True, same_run.entry)
    previous = latest_entry(session=session, journey=journey, contact_key=contact_key)
    refusal = reentry_refusal(
        previous=latest_of_person(session=session, journey=journey, contact_key=contact_key),
        reentry=reentry,
        now=now,
    )
    if refusal is not None:
        audit.record_refusal(
            session=session,
            journey=journey,
            version=version,
            contact_key=contact_key,
            reason=refusal,
            at=now,
        )
        return Admission(False, reason=refusal)
    if previous is not None and previous.exited_at is None:
        # Temporal runs one workflow per id, so the earlier entry is over even
        # though it never said so (terminated by an operator, for instance).
        previous.exited_at = now
        previous.outcome = "abandoned"
        previous.reason = "closed without recording an exit"
        session.add(previous)
        audit.record_exit(session=session, run=previous)
    entry = (previous.entry + 1) if previous else 1
    run = JourneyRun(
        journey=journey,
        contact_key=contact_key,
        entry=entry,
        version=version,
        workflow_id=workflow_id,
        run_id=run_id,
        entered_at=now,
    )
    session.add(run)
    audit.record_entry(session=session, run=run)
    return Admission(True, entry)


def record_exit(
    *,
    session: Session,
    journey: str,
    contact_key: str,
    entry: int,
    outcome: str,
    reason: str,
    now: datetime,
) -> None:
    run = session.exec(
        select(JourneyRun).where(
            JourneyRun.journey == journey,
            JourneyRun.contact_key == contact_key,
            JourneyRun.entry == entry,
        )
    ).first()
    if run is not None and run.exited_at is None:
        run.exited_at = now
        run.outcome = outcome
        run.reason = reason[:500]
        session.add(run)
        audit.record_exit(session=session, run=run)


def active_runs(*, session: Session, contact_key: str) -> list[JourneyRun]:
    return list(
        session.exec(
            select(JourneyRun)
            .where(JourneyRun.contact_key == contact_key, col(JourneyRun.exited_at).is_(None))
            .order_by(col(JourneyRun.entered_at))
        ).all()
    )


def runs_for(*, session: Session, contact_key: str) -> list[JourneyRun]:
    return list(
        session.exec(
            select(JourneyRun)
            .where(JourneyRun.contact_key == contact_key)
            .order_by(col(JourneyRun.entered_at))
        ).all()
    )
