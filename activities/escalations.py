"""Escalations' I/O: keep the database copy, and tell staff a tier needs them.

`notify_staff` runs on the tier's channel queue (tidings-email or
tidings-chat, under the same rate limits as sends). It looks up everyone
holding the tier's role in the directory, renders the tier's template with
the contact's data (the Composer, as a send would) and sends each person one
notice. A notice row is claimed before the provider is called, keyed by
(escalation, tier, user): a retried activity skips whoever was told already.
Addresses are read here and never leave the activity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Literal

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tidings.activities.channels import (
    AmbiguousSendError,
    ChannelProvider,
    EmailProvider,
    OutgoingEmail,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.registry import chat_provider_for
from tidings.activities.compose import Composed, ComposeError, Composer, ComposeRequest
from tidings.db import escalations
from tidings.db.engine import Database
from tidings.directory import Directory, StaffMember
from tidings.models.escalations import NotifyStaffInput, NotifyStaffResult, RecordEscalationInput
from tidings.models.events import JourneyEvent

log = structlog.get_logger(__name__)

ESCALATION_HEADER = "X-Tidings-Escalation"
"""The escalation's short number in every notice email."""
NOTICE_PURPOSE = "service"
NOTICE_TOPIC = "escalations"


class EscalationDesk:
    """Bookkeeping, run as local activities by the escalation workflow."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @activity.defn(name="record_escalation")
    def record_escalation(self, state: RecordEscalationInput) -> int:
        """Write the escalation's state and its tiers; returns its short number."""
        with self._db.session() as session:
            row = escalations.record(session=session, state=state)
            assert row.id is not None
            return row.id


@dataclass(frozen=True)
class _Told:
    verdict: Literal["notified", "unreachable", "retry"]
    problem: str = ""
    """In a few words, for the workflow (histories keep it: never an address)."""
    detail: str = ""
    """The provider's or renderer's own words, for the log and the notice row."""


class StaffNotifier:
    """Sends a tier's notices; one instance per worker, shared by the email and chat queues."""

    def __init__(
        self,
        *,
        db: Database,
        composer: Composer,
        directory: Directory,
        email: EmailProvider,
        sender: str,
        chat: Sequence[ChannelProvider] = (),
    ) -> None:
        self._db = db
        self._composer = composer
        self._directory = directory
        self._email = email
        self._sender = sender
        self._chat = list(chat)

    @activity.defn(name="notify_staff")
    def notify_staff(self, input: NotifyStaffInput) -> NotifyStaffResult:
        """Tell everyone holding the tier's role, once each.

        A transient provider failure retries the activity (those already told are
        skipped); on the last attempt it counts as unreachable instead, so the
        workflow always learns exactly who was told.
        """
        members = self._directory.with_role(input.role)
        last = _is_last_attempt()
        notified: list[str] = []
        unreachable: list[str] = []
        problems: list[str] = []
        retry: list[str] = []
        for user in members:
            told = self._tell(input, user, self._directory.users[user], last=last)
            if told.detail:
                log.warning(
                    "escalation notice not sent",
                    escalation=input.number,
                    tier=input.tier,
                    user=user,
                    problem=told.problem,
                    detail=told.detail,
                )
            if told.verdict == "notified":
                notified.append(user)
            elif told.verdict == "retry":
                retry.append(f"{user}: {told.problem}")
            else:
                unreachable.append(user)
                problems.append(f"{user}: {told.problem}")
        if retry:
            raise ApplicationError(
                "some notices could not be handed over yet, retrying: " + "; ".join(retry),
                type="TransientSendError",
            )
        if not members:
            problems.append(
                f"no one in the directory holds the role {input.role}; add them to "
                "TIDINGS_DIRECTORY_FILE"
            )
            log.warning("escalation tier has nobody", escalation=input.number, role=input.role)
        return NotifyStaffResult(
            members=members, notified=notified, unreachable=unreachable, problems=problems
        )

    def _tell(
        self, input: NotifyStaffInput, user: str, member: StaffMember, *, last: bool
    ) -> _Told:
        channel, address, note = self._route(input.channel, member)
        if address is None:
            return _Told("unreachable", note)
        key, tier = input.escalation_id, input.tier
        with self._db.session() as session:
            earlier = escalations.find_notice(
                session=session, workflow_id=key, tier=tier, user=user
            )
        if earlier is not None and earlier.status in escalations.SETTLED:
            return _settled(earlier.status, earlier.error)
        composed: Composed | None = None
        problem = ""
        try:
            composed = self._compose(input, user, member, channel)
        except ComposeError as err:
            problem = f"the template {input.template!r} cannot be rendered: {err}"
        with self._db.session() as session:
            claim = escalations.claim_notice(
                session=session, workflow_id=key, tier=tier, user=user, channel=channel, now=_now()
            )
        notice = claim.notice
        if claim.verdict == "done":
            return _settled(notice.status, notice.error)
        if composed is None:
            self._finish(notice.id, escalations.FAILED, error=problem)
            return _Told("unreachable", "the notice cannot be rendered", problem)
        provider = "smtp"
        try:
            if channel == "email":
                provider = self._email.name
                provider_id = self._email.send(self._email_for(input, composed, address, notice.id))
            else:
                chat = chat_provider_for(address, self._chat)
                provider = chat.name
                provider_id = chat.send(
                    OutgoingMessage(
                        channel="chat",
                        to=address,
                        contact_key=input.contact_key,
                        parts=composed.parts,
                        delivery_id=notice.id,
                    )
                )
        except TransientSendError as err:
            status = escalations.FAILED if last else escalations.DEFERRED
            self._finish(notice.id, status, provider=provider, error=str(err))
            verdict: Literal["unreachable", "retry"] = "unreachable" if last else "retry"
            return _Told(verdict, f"{provider} failed for now ({channel})", str(err))
        except PermanentSendError as err:
            self._finish(notice.id, escalations.FAILED, provider=provider, error=str(err))
            return _Told("unreachable", f"{provider} refused the notice ({channel})", str(err))
        except AmbiguousSendError as err:
            # It may have arrived: never sent again; the person counts as told.
            self._finish(notice.id, escalations.UNCERTAIN, provider=provider, error=str(err))
            return _Told("notified", f"{provider} may have it ({channel})", str(err))
        with self._db.session() as session:
            escalations.finish_notice(
                session=session,
                notice_id=notice.id,
                status=escalations.SENT,
                provider=provider,
                provider_message_id=provider_id,
                now=_now(),
            )
        return _Told("notified")

    def _route(
        self, channel: str, member: StaffMember
    ) -> tuple[Literal["email", "chat"], str | None, str]:
        """The channel and address that reach this person: chat tiers fall back to
        email for people without a chat webhook (or with no chat provider set up)."""
        if channel == "chat" and member.chat and self._chat:
            return "chat", member.chat, ""
        if member.email:
            return "email", member.email, ""
        if channel == "chat" and member.chat:
            return "chat", None, "no chat provider is configured and there is no email address"
        return "email", None, "the directory lists no email address (nor a chat webhook)"

    def _compose(
        self, input: NotifyStaffInput, user: str, member: StaffMember, channel: str
    ) -> Composed:
        request = ComposeRequest(
            template=input.template,
            channel=channel,
            contact_key=input.contact_key,
            purpose=NOTICE_PURPOSE,
            topic=NOTICE_TOPIC,
            trigger=input.trigger,
            event=_escalation_event(input, user, member),
            to_contact=False,
        )
        with self._db.session() as session:
            return self._composer.compose(session, request)

    def _email_for(
        self, input: NotifyStaffInput, composed: Composed, to: str, notice_id: str
    ) -> OutgoingEmail:
        return OutgoingEmail(
            sender=self._sender,
            to=to,
            subject=composed.parts["subject"],
            text=composed.parts["text"],
            html=composed.parts.get("html"),
            message_id=_message_id(notice_id, self._sender),
            headers={ESCALATION_HEADER: str(input.number)},
        )

    def _finish(
        self, notice_id: str, status: str, *, error: str, provider: str | None = None
    ) -> None:
        with self._db.session() as session:
            escalations.finish_notice(
                session=session,
                notice_id=notice_id,
                status=status,
                provider=provider,
                error=error,
                now=_now(),
            )


def _escalation_event(input: NotifyStaffInput, user: str, member: StaffMember) -> JourneyEvent:
    """What a notice template reads as `event.properties`: the escalation, the tier and
    the person it is for (their login and name; never an address)."""
    return JourneyEvent(
        event_id=f"{input.escalation_id}/{input.tier}",
        name="escalation",
        properties={
            "number": input.number,
            "escalation_id": input.escalation_id,
            "journey": input.journey,
            "step": input.step_id,
            "tier": input.tier,
            "tiers": input.tiers,
            "role": input.role,
            "ack_within": input.ack_within,
            "due_at": f"{input.due_at:%Y-%m-%d %H:%M} UTC",
            "staff_login": user,
            "staff_name": member.name,
            "ack_command": f"tidings escalations ack {input.number} --as {user}",
        },
        occurred_at=input.now,
    )


def _settled(status: str, error: str | None) -> _Told:
    """What an earlier attempt's notice means now."""
    if status in (escalations.SENT, escalations.UNCERTAIN):
        return _Told("notified")
    return _Told("unreachable", f"an earlier attempt failed ({status})", error or "")


def _message_id(notice_id: str, sender: str) -> str:
    digest = hashlib.sha256(notice_id.encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tidings.invalid"
    return f"<{digest}@{domain}>"


def _is_last_attempt() -> bool:
    policy = activity.info().retry_policy
    return policy is not None and 0 < policy.maximum_attempts <= activity.info().attempt


def _now() -> datetime:
    return datetime.now(UTC)
