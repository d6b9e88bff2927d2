"""The audit log: every decision, in the transaction that makes it durable.

Journey entries, refusals and exits; every policy decision with its rule and
inputs; how content was chosen; each send attempt's outcome with a digest of
the message; approvers' votes and gates' outcomes; holds set and lifted.
Records hold keys, names, ids and digests, never addresses or traits. Each goes
through `audit_chain.append`, which seals it into its contact's hash chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime

from sqlmodel import Session, col, select

from tidings.db.audit_chain import Entry, append
from tidings.models.approvals import Vote
from tidings.models.holds import Hold
from tidings.models.policy import Decision
from tidings.models.tables import ApprovalGateRecord, AuditRecord, Delivery, JourneyRun


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
    append(
        session,
        Entry(
            at=at,
            contact_key=contact_key,
            journey=journey,
            step_id=step_id,
            kind=f"policy:{stage}",
            action=decision.action,
            rule=decision.rule,
            detail=decision.reason,
            data={
                **decision.inputs,
                "until": decision.until.isoformat() if decision.until else None,
            },
        ),
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
    append(
        session,
        Entry(
            at=at,
            contact_key=contact_key,
            journey=journey,
            step_id=step_id,
            kind="content",
            action="composed",
            rule=f"{template} v{version} {locale}",
            detail="; ".join(notes),
            data={"template": template, "version": version, "locale": locale, "notes": notes},
        ),
    )


def record_hold(
    *, session: Session, hold: Hold, event: str, by: str, why: str, at: datetime
) -> None:
    """A hold set or lifted (`event`), by whom and why. Holds concern no one contact:
    their records are in the system chain (held sends are policy decisions, per contact)."""
    append(
        session,
        Entry(
            at=at,
            contact_key="",
            kind="hold",
            action=event,
            rule=hold.label(),
            detail=why,
            data={"hold_id": hold.id, "scope": hold.scope, "action": hold.action, "by": by},
        ),
    )


def record_entry(*, session: Session, run: JourneyRun) -> None:
    """A contact admitted into a journey."""
    append(
        session,
        Entry(
            at=run.entered_at,
            contact_key=run.contact_key,
            journey=run.journey,
            kind="journey",
            action="entered",
            rule=f"{run.journey} v{run.version}",
            detail=f"entry {run.entry}",
            data=_run_data(run),
        ),
    )


def record_refusal(
    *, session: Session, journey: str, version: int, contact_key: str, reason: str, at: datetime
) -> None:
    """An entry the journey's reentry policy refused."""
    append(
        session,
        Entry(
            at=at,
            contact_key=contact_key,
            journey=journey,
            kind="journey",
            action="refused",
            rule="reentry",
            detail=reason,
            data={"version": version},
        ),
    )


def record_exit(*, session: Session, run: JourneyRun) -> None:
    """A journey entry's end, with its outcome and reason."""
    assert run.exited_at is not None and run.outcome is not None
    append(
        session,
        Entry(
            at=run.exited_at,
            contact_key=run.contact_key,
            journey=run.journey,
            kind="journey",
            action="exited",
            rule=run.outcome,
            detail=run.reason or "",
            data={**_run_data(run), "outcome": run.outcome},
        ),
    )


def record_send(
    *,
    session: Session,
    delivery: Delivery,
    status: str,
    at: datetime,
    provider: str | None = None,
    content_sha256: str | None = None,
    error_code: str | None = None,
) -> None:
    """One send attempt's outcome. The message itself is not kept (it is personal
    data); `content_sha256` (see `content_digest`) proves which message it was."""
    version = f" v{delivery.template_version}" if delivery.template_version else ""
    append(
        session,
        Entry(
            at=at,
            contact_key=delivery.contact_key,
            journey=delivery.journey,
            step_id=delivery.step_id,
            kind="send",
            action=status,
            rule=f"{delivery.channel} {delivery.template}{version}",
            detail=f"via {provider}" if provider else "",
            data={
                "delivery_id": delivery.id,
                "channel": delivery.channel,
                "provider": provider,
                "template": delivery.template,
                "version": delivery.template_version,
                "locale": delivery.locale,
                "purpose": delivery.purpose,
                "status": status,
                "attempt": delivery.attempts,
                "content_sha256": content_sha256,
                "error_code": error_code,
            },
        ),
    )


def content_digest(parts: Mapping[str, str]) -> str:
    """SHA-256 of a rendered message's parts (subject, text, html...) as canonical
    JSON: whoever holds the message can show it is the one sent."""
    text = json.dumps(dict(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def record_vote(*, session: Session, gate: ApprovalGateRecord, vote: Vote) -> None:
    """An approver's decision on a gate. The comment is kept with the gate; the log
    keeps its digest (it is free text that may name the contact)."""
    comment = hashlib.sha256(vote.comment.encode()).hexdigest() if vote.comment else None
    append(
        session,
        _gate_entry(
            gate,
            kind="approval",
            at=vote.at,
            action=vote.verdict,
            detail=f"{vote.user} as {vote.role}",
            data={"user": vote.user, "role": vote.role, "comment_sha256": comment},
        ),
    )


def record_gate(*, session: Session, gate: ApprovalGateRecord, event: str, at: datetime) -> None:
    """A gate's outcome (approved, rejected, changes_requested, expired), or its
    escalation to other roles."""
    append(
        session,
        _gate_entry(
            gate,
            kind="gate",
            at=at,
            action=event,
            detail=f"roles {', '.join(gate.roles)}, quorum {gate.quorum}",
            data={"roles": list(gate.roles), "quorum": gate.quorum, "votes": len(gate.votes)},
        ),
    )


def for_contact(
    *, session: Session, contact_key: str, journey: str | None = None
) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.contact_key == contact_key)
    if journey is not None:
        query = query.where(AuditRecord.journey == journey)
    return list(session.exec(query.order_by(col(AuditRecord.at), col(AuditRecord.id))))


def between(
    *,
    session: Session,
    since: datetime,
    until: datetime | None = None,
    contact_key: str | None = None,
) -> Iterator[AuditRecord]:
    """Records decided in [since, until), in time order (for investigators' exports)."""
    query = select(AuditRecord).where(col(AuditRecord.at) >= since)
    if until is not None:
        query = query.where(col(AuditRecord.at) < until)
    if contact_key is not None:
        query = query.where(AuditRecord.contact_key == contact_key)
    query = query.order_by(col(AuditRecord.at), col(AuditRecord.id))
    yield from session.exec(query.execution_options(yield_per=1000))


def _run_data(run: JourneyRun) -> dict[str, object]:
    return {
        "entry": run.entry,
        "version": run.version,
        "workflow_id": run.workflow_id,
        "run_id": run.run_id,
    }


def _gate_entry(
    gate: ApprovalGateRecord,
    *,
    kind: str,
    at: datetime,
    action: str,
    detail: str,
    data: dict[str, object],
) -> Entry:
    # A contact's gate is in the contact's chain; a batch gate (every contact at a
    # step) and a template review concern no one contact.
    return Entry(
        at=at,
        contact_key=gate.contact_key if gate.scope == "contact" else "",
        journey=gate.journey or None,
        step_id=gate.step_id or None,
        kind=kind,
        action=action,
        rule=f"gate {gate.id} ({gate.scope})",
        detail=detail,
        data={"gate_id": gate.id, "scope": gate.scope, "template": gate.template, **data},
    )
