"""Approval gates' I/O: open a gate with its preview, keep its copy, remind approvers.

The workflow decides (its Update validator and handler); these activities
render what the approver reads (the exact message, by the same Composer as
the send), store it, and reach approvers by email or chat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from tidings import naming
from tidings.activities.channels import (
    ChannelProvider,
    EmailProvider,
    OutgoingEmail,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.registry import chat_provider_for
from tidings.activities.compose import ComposeError, Composer, ComposeRequest
from tidings.approver_links import approver_link
from tidings.connection import signal_waiting
from tidings.db import approvals, templates
from tidings.db.engine import Database
from tidings.directory import Directory
from tidings.models.approvals import (
    GateState,
    GateUpdate,
    GateWorkflowInput,
    OpenedGate,
    OpenGateInput,
    RemindInput,
    SettledReview,
)
from tidings.models.journey import Approve

log = structlog.get_logger(__name__)


class ApprovalDesk:
    def __init__(
        self,
        *,
        db: Database,
        composer: Composer,
        directory: Directory,
        email: EmailProvider,
        sender: str,
        public_url: str,
        client: Client | None = None,
        secret_key: str = "",
        chat: Sequence[ChannelProvider] = (),
    ) -> None:
        """`secret_key`: the service's; each notice's link then signs its reader in.
        `chat`: the chat providers that reach approvers with a chat webhook."""
        self._chat = list(chat)
        self._client = client
        self._db = db
        self._composer = composer
        self._directory = directory
        self._email = email
        self._sender = sender
        self._public_url = public_url.rstrip("/")
        self._secret_key = secret_key

    @activity.defn(name="open_approval_gate")
    def open_gate(self, opening: OpenGateInput) -> OpenedGate:
        """Render the gated message for this contact, store it with the gate, and say
        who holds each role. Opening twice (a retry) returns the same gate."""
        return self._open(opening)[0]

    @activity.defn(name="open_batch_approval_gate")
    async def open_batch_gate(self, opening: OpenGateInput, spec: Approve) -> OpenedGate:
        """The step's one gate for every contact: the first journey to arrive opens
        it (its contact's message is the sample approvers read) and starts the gate's
        workflow, which takes the decisions; later ones find it."""
        opened, gate = await asyncio.to_thread(self._open, opening)
        assert self._client is not None, "the worker gives the desk a client"
        # Decided and closed already (REJECT_DUPLICATE): the journeys read its outcome.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await self._client.start_workflow(
                naming.APPROVAL_WORKFLOW,
                GateWorkflowInput(gate=gate, spec=spec),
                id=opened.workflow_id,
                task_queue=naming.JOURNEY_TASK_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"Batch approval {opened.gate_id}: {opening.journey} "
                f"v{opening.journey_version}, step {opening.step_id}",
            )
        return opened

    @activity.defn(name="settle_content_review")
    def settle_review(self, settled: SettledReview) -> None:
        """Approve the reviewed version, or send it back to draft with the comments."""
        content = settled.content
        said = [f"{v.role} ({v.user}): {v.comment}" for v in settled.votes if v.comment]
        if settled.status == "expired":
            said.append("no decision by the review deadline")
        with self._db.session() as session:
            templates.settle_review(
                session=session,
                template=content.template,
                number=content.version,
                locale=content.locale,
                approved=settled.status == "approved",
                reviewers=[v.user for v in settled.votes],
                comment="; ".join(said)[:2000],
                now=_now(),
            )

    @activity.defn(name="approval_gate_status")
    def gate_status(self, gate_id: str) -> str:
        with self._db.session() as session:
            return approvals.status_of(session=session, gate_id=gate_id)

    @activity.defn(name="release_approval_waiters")
    async def release_waiters(self, gate_id: str) -> None:
        """A batch gate is decided: wake the journeys waiting on it (one server-side
        batch signal); those it misses look again at their next check."""
        assert self._client is not None, "the worker gives the desk a client"
        await signal_waiting(
            self._client, f"approval:{gate_id}", reason=f"approval gate {gate_id} decided"
        )

    def _open(self, opening: OpenGateInput) -> tuple[OpenedGate, GateState]:
        preview, findings = self._preview(opening)
        roles = [*opening.roles, *opening.extra_roles]
        eligible = {role: self._directory.with_role(role) for role in roles}
        findings += [
            f"no one in the directory holds the role {role}: add them to TIDINGS_DIRECTORY_FILE"
            for role, users in eligible.items()
            if not users
        ]
        with self._db.session() as session:
            record = approvals.open_gate(
                session=session, opening=opening, preview=preview, findings=findings
            )
            opened = OpenedGate(
                gate_id=record.id,
                eligible=eligible,
                deadline=record.deadline,
                workflow_id=record.workflow_id,
            )
            gate = GateState(
                gate_id=record.id,
                step_id=record.step_id,
                roles=list(record.roles),
                quorum=record.quorum,
                order=opening.order,
                eligible=eligible,
                opened_at=record.created_at,
                deadline=record.deadline,
            )
        return opened, gate

    @activity.defn(name="record_approval_gate")
    def record_gate(self, update: GateUpdate) -> None:
        with self._db.session() as session:
            approvals.record_state(session=session, gate=update.gate, now=update.now)

    @activity.defn(name="remind_approvers")
    def remind(self, reminder: RemindInput) -> int:
        """Tell each approver the gate waits for them; once per user and round."""
        with self._db.session() as session:
            gate = approvals.get(session=session, gate_id=reminder.gate_id)
        sent = 0
        for user in reminder.users:
            member = self._directory.users.get(user)
            if member is None or not (member.email or (member.chat and self._chat)):
                log.warning("approver unreachable", gate_id=gate.id, user=user)
                continue
            with self._db.session() as session:
                claimed = approvals.claim_notice(
                    session=session,
                    gate_id=gate.id,
                    user=user,
                    round=reminder.round,
                    now=_now(),
                )
            if not claimed:
                continue
            what = (
                f"template {gate.template} v{gate.journey_version}"
                + (f" ({gate.step_id})" if gate.step_id else "")
                if gate.scope == "content"
                else f"{gate.journey} / {gate.step_id} ({gate.template})"
            )
            subject = f"Approval needed: {what}, due {reminder.due:%Y-%m-%d %H:%M} UTC"
            link = (
                approver_link(self._public_url, self._secret_key, user, gate_id=gate.id)
                if self._secret_key
                else f"{self._public_url}/approvals/{gate.id}"
            )
            text = (
                f"{subject}\n\nRoles deciding now: {', '.join(gate.pending_roles)}.\n"
                f"Review the message and decide: {link}\n"
                f"or: tidings approvals show {gate.id}\n"
            )
            handed_over = False
            try:
                if member.email:
                    self._email.send(
                        OutgoingEmail(
                            sender=self._sender,
                            to=member.email,
                            subject=subject,
                            text=text,
                            message_id=f"<approval-{gate.id}-{user}-{reminder.round}@tidings>",
                        )
                    )
                    handed_over = True
                if member.chat and self._chat:
                    # Through the chat providers, as escalation notices go: Slack's or
                    # Teams' own format, and their allow-list for the person's webhook.
                    chat_provider_for(member.chat, self._chat).send(
                        OutgoingMessage(
                            channel="chat",
                            to=member.chat,
                            contact_key=gate.contact_key,
                            parts={"text": text},
                            delivery_id=f"approval-{gate.id}-{user}-{reminder.round}",
                        )
                    )
            except (TransientSendError, PermanentSendError) as err:
                if handed_over:
                    # The email went out: a retry must not send it again for the chat's sake.
                    log.warning(
                        "approver told by email only", gate_id=gate.id, user=user, error=str(err)
                    )
                else:
                    with self._db.session() as session:
                        approvals.release_notice(
                            session=session, gate_id=gate.id, user=user, round=reminder.round
                        )
                    raise
            sent += 1
        return sent

    def _preview(self, opening: OpenGateInput) -> tuple[dict[str, object], list[str]]:
        message = opening.message
        request = ComposeRequest(
            template=message.template,
            channel=message.channel,
            contact_key=opening.contact_key,
            purpose=message.purpose,
            topic=message.topic,
            pinned=message.version,
            trigger=opening.trigger,
            event=opening.event,
        )
        try:
            with self._db.session() as session:
                composed = self._composer.compose(session, request)
        except ComposeError as err:
            return {"error": str(err)}, [f"the message cannot be sent as it is: {err}"]
        preview: dict[str, object] = {
            "template": composed.template,
            "version": composed.version,
            "locale": composed.locale,
            "channel": composed.channel,
            "parts": composed.parts,
        }
        return preview, [str(w) for w in composed.warnings] + composed.notes


def _now() -> datetime:
    return datetime.now(UTC)
