"""Approval gates in the database: opened once per gate key, updated as votes come."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tidings.db import audit
from tidings.errors import InputError
from tidings.models.approvals import ContentRef, GateRow, GateState, OpenGateInput, Vote
from tidings.models.tables import ApprovalGateRecord, ApprovalNotice
from tidings.workflows.approval_gate import pending_roles

OPEN = "open"


class UnknownGateError(InputError):
    def __init__(self, gate_id: str) -> None:
        super().__init__(
            f"there is no approval gate {gate_id!r}; `tidings approvals list` shows open ones"
        )


def open_gate(
    *,
    session: Session,
    opening: OpenGateInput,
    preview: dict[str, Any],
    findings: list[str],
) -> ApprovalGateRecord:
    """The gate for this key, created on the first call (a retried activity finds it)."""
    found = session.exec(
        select(ApprovalGateRecord).where(ApprovalGateRecord.gate_key == opening.gate_key)
    ).first()
    if found is not None:
        return found
    record = ApprovalGateRecord(
        id=uuid.uuid4().hex[:12],
        gate_key=opening.gate_key,
        scope=opening.scope,
        workflow_id=opening.workflow_id,
        journey=opening.journey,
        journey_version=opening.journey_version,
        step_id=opening.step_id,
        gated_step=opening.gated_step,
        contact_key=opening.contact_key,
        template=opening.message.template,
        channel=opening.message.channel,
        roles=list(opening.roles),
        quorum=opening.quorum,
        order=opening.order,
        status=OPEN,
        deadline=opening.deadline,
        created_at=opening.now,
        pending_roles=list(opening.roles if opening.order == "parallel" else opening.roles[:1]),
        preview=preview,
        findings=findings,
    )
    session.add(record)
    session.flush()
    return record


def open_review_gate(
    *,
    session: Session,
    gate_key: str,
    workflow_id: str,
    content: ContentRef,
    roles: list[str],
    deadline: datetime,
    preview: dict[str, Any],
    now: datetime,
) -> ApprovalGateRecord:
    """The gate of a template version's review: its stages decide in order."""
    record = ApprovalGateRecord(
        id=uuid.uuid4().hex[:12],
        gate_key=gate_key,
        scope="content",
        workflow_id=workflow_id,
        journey="",
        journey_version=content.version,
        step_id=content.locale or "",
        gated_step="",
        contact_key="",
        template=content.template,
        channel="",
        roles=roles,
        quorum=1,
        order="sequential",
        status=OPEN,
        deadline=deadline,
        created_at=now,
        pending_roles=roles[:1],
        preview=preview,
        findings=[],
    )
    session.add(record)
    session.flush()
    return record


def open_review_of(*, session: Session, template: str) -> str | None:
    """The open review gate of a template, if one of its versions is in review."""
    return session.exec(
        select(ApprovalGateRecord.id).where(
            ApprovalGateRecord.scope == "content",
            ApprovalGateRecord.template == template,
            ApprovalGateRecord.status == OPEN,
        )
    ).first()


def record_state(*, session: Session, gate: GateState, now: datetime) -> None:
    """Copy the workflow's view of the gate (votes, status, deadline, roles); votes,
    an escalation and the outcome that are new to the copy go in the audit log."""
    record = session.get(ApprovalGateRecord, gate.gate_id)
    if record is None:
        raise UnknownGateError(gate.gate_id)
    votes = [vote.model_dump(mode="json") for vote in gate.votes]
    new_votes = [
        vote for vote, saved in zip(gate.votes, votes, strict=True) if saved not in record.votes
    ]
    escalated = record.status == OPEN and record.roles != gate.roles
    decided = record.status == OPEN and gate.status != OPEN
    record.votes = votes
    record.status = gate.status
    record.roles = list(gate.roles)
    record.deadline = gate.deadline
    record.pending_roles = pending_roles(gate) if gate.status == OPEN else []
    if gate.status != OPEN and record.decided_at is None:
        record.decided_at = now
    session.add(record)
    for vote in new_votes:
        audit.record_vote(session=session, gate=record, vote=vote)
    if escalated:
        audit.record_gate(session=session, gate=record, event="escalated", at=now)
    if decided:
        audit.record_gate(session=session, gate=record, event=gate.status, at=now)


def status_of(*, session: Session, gate_id: str) -> str:
    record = session.get(ApprovalGateRecord, gate_id)
    if record is None:
        raise UnknownGateError(gate_id)
    return record.status


def get(*, session: Session, gate_id: str) -> GateRow:
    record = session.get(ApprovalGateRecord, gate_id)
    if record is None:
        raise UnknownGateError(gate_id)
    return _row(record)


def listing(
    *,
    session: Session,
    status: str | None = OPEN,
    roles: list[str] | None = None,
    limit: int = 200,
) -> list[GateRow]:
    """Gates, soonest deadline first; `roles`: only those waiting on one of them."""
    query = select(ApprovalGateRecord).order_by(col(ApprovalGateRecord.deadline))
    if status is not None:
        query = query.where(ApprovalGateRecord.status == status)
    rows = [_row(r) for r in session.exec(query.limit(limit)).all()]
    if roles is not None:
        rows = [r for r in rows if set(r.pending_roles) & set(roles)]
    return rows


def claim_notice(*, session: Session, gate_id: str, user: str, round: int, now: datetime) -> bool:
    """True the first time this notice is claimed: a retried reminder sends nothing twice."""
    try:
        with session.begin_nested():
            session.add(ApprovalNotice(gate_id=gate_id, user=user, round=round, sent_at=now))
    except IntegrityError:
        return False
    return True


def release_notice(*, session: Session, gate_id: str, user: str, round: int) -> None:
    """The notice could not be sent: let a retry claim it again."""
    for notice in session.exec(
        select(ApprovalNotice).where(
            ApprovalNotice.gate_id == gate_id,
            ApprovalNotice.user == user,
            ApprovalNotice.round == round,
        )
    ):
        session.delete(notice)


def _row(record: ApprovalGateRecord) -> GateRow:
    return GateRow(
        id=record.id,
        workflow_id=record.workflow_id,
        scope=record.scope,
        journey=record.journey,
        journey_version=record.journey_version,
        step_id=record.step_id,
        contact_key=record.contact_key,
        template=record.template,
        channel=record.channel,
        roles=list(record.roles),
        quorum=record.quorum,
        order=record.order,
        status=record.status,
        deadline=record.deadline,
        created_at=record.created_at,
        decided_at=record.decided_at,
        votes=[Vote.model_validate(v) for v in record.votes],
        pending_roles=list(record.pending_roles),
        preview=record.preview,
        findings=list(record.findings),
    )
