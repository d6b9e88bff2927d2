"""Content review: a submitted template version goes through the review stages.

With `content_review` in the approver directory, `tidings templates submit`
opens a gate for the version (stages in order, then the regional council of
a translation's language) and starts its workflow; reviewers decide with
`tidings approvals approve|reject|request-changes`, and the workflow approves
the version or sends it back to draft. Authors of the version are not asked
(four eyes).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import yaml
from pydantic import JsonValue
from sqlmodel import Session
from temporalio.client import Client

from tidings import naming
from tidings.db import approvals, templates
from tidings.db.engine import Database
from tidings.directory import ContentReview, Directory
from tidings.errors import InputError
from tidings.models.approvals import ContentRef, GateRow, GateState, GateWorkflowInput
from tidings.models.journey import Approve
from tidings.models.tables import TranslationRecord


async def start_review(
    *,
    client: Client,
    database: Database,
    directory: Directory,
    review: ContentReview,
    template: str,
    number: int | None,
    locale: str | None,
) -> GateRow:
    """Open the review of the version just submitted and start its workflow."""
    now = datetime.now(UTC)
    opened = await asyncio.to_thread(
        _open, database, directory, review, template, number, locale, now
    )
    gate, content, roles = opened
    spec = Approve(
        roles=roles,
        order="sequential",
        deadline=review.deadline,
        remind_every=review.remind_every,
        on_deadline="end",
    )
    try:
        await client.start_workflow(
            naming.APPROVAL_WORKFLOW,
            GateWorkflowInput(gate=gate, spec=spec, content=content),
            id=_workflow_id(content),
            task_queue=naming.JOURNEY_TASK_QUEUE,
            static_summary=f"Review of template {content.template} v{content.version}"
            + (f" ({content.locale})" if content.locale else ""),
        )
    except Exception as err:
        # Nothing half-done: the version goes back to draft and the gate closes.
        await asyncio.to_thread(_undo, database, gate, content, str(err))
        raise InputError(
            f"the review of {template} could not start ({err}); it is a draft again: "
            "submit it once Temporal is reachable"
        ) from err
    return await database.run(lambda session: approvals.get(session=session, gate_id=gate.gate_id))


def _undo(database: Database, gate: GateState, content: ContentRef, why: str) -> None:
    with database.session() as session:
        gate.status = "expired"
        approvals.record_state(session=session, gate=gate, now=datetime.now(UTC))
        templates.settle_review(
            session=session,
            template=content.template,
            number=content.version,
            locale=content.locale,
            approved=False,
            reviewers=[],
            comment=f"the review workflow could not start: {why}"[:2000],
            now=datetime.now(UTC),
        )


def _open(
    database: Database,
    directory: Directory,
    review: ContentReview,
    template: str,
    number: int | None,
    locale: str | None,
    now: datetime,
) -> tuple[GateState, ContentRef, list[str]]:
    with database.session() as session:
        record = templates.in_review(
            session=session, template=template, number=number, locale=locale
        )
        version = record.source_version if isinstance(record, TranslationRecord) else record.version
        content = ContentRef(template=template, version=version, locale=locale)
        roles = review.roles_for(locale)
        authors = templates.authors(session=session, record=record)
        eligible = {r: [u for u in directory.with_role(r) if u not in authors] for r in roles}
        if missing := [r for r, users in eligible.items() if not users]:
            raise InputError(
                f"no reviewer for {', '.join(missing)} besides the authors "
                f"({', '.join(sorted(authors))}); add one to TIDINGS_DIRECTORY_FILE"
            )
        workflow_id = _workflow_id(content)
        record_gate = approvals.open_review_gate(
            session=session,
            gate_key=f"{workflow_id}/{now.isoformat()}",
            workflow_id=workflow_id,
            content=content,
            roles=roles,
            deadline=now + review.deadline,
            preview=_preview(session, record, template, version),
            now=now,
        )
        gate = GateState(
            gate_id=record_gate.id,
            step_id=locale or template,
            roles=roles,
            quorum=1,
            order="sequential",
            eligible=eligible,
            opened_at=now,
            deadline=record_gate.deadline,
        )
    return gate, content, roles


def _preview(
    session: Session, record: templates.Record, template: str, version: int
) -> dict[str, JsonValue]:
    """What reviewers read: the whole text, and the change from the previous version."""
    text = yaml.safe_dump(record.content, allow_unicode=True, sort_keys=False)
    if isinstance(record, TranslationRecord) or version == 1:
        return {"source": text}
    change = templates.diff(session=session, template=template, old=version - 1, new=version)
    return {"source": text, "diff": change}


def _workflow_id(content: ContentRef) -> str:
    locale = f"/{content.locale}" if content.locale else ""
    return f"content-review/{content.template}/v{content.version}{locale}"
