"""The send activities: compose, check the policy, claim the delivery, hand over, record.

Idempotent by construction: the delivery row with the step's unique key is
committed before the provider is called, so a retried activity or a replayed
workflow finds it and returns the earlier result instead of sending again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import TypeVar

import structlog
from sqlmodel import Session
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
    handover,
)
from tidings.activities.channels.registry import NoProviderError, providers_for
from tidings.activities.channels.relay_record import HandedOver, ProviderRecord
from tidings.activities.compose import Composed, ComposeError, Composer, ComposeRequest
from tidings.activities.contacts import for_live_contact
from tidings.activities.heartbeat import kept_alive
from tidings.activities.metrics import (
    ErrorClass,
    Outcome,
    record_decision,
    record_lag,
    record_send,
)
from tidings.activities.receipts import Receipt, Receipts
from tidings.db import audit, deliveries, delivery_events, suppressions
from tidings.db.engine import Database
from tidings.db.policy_facts import load_facts
from tidings.errors import UnknownContactError
from tidings.models.policy import Decision, Message, PolicyConfig
from tidings.models.tables import Delivery
from tidings.models.workflow_io import SendInput, SendResult, SendStatus
from tidings.policy.engine import decide
from tidings.policy.holds import KILLED
from tidings.telemetry import tracer

log = structlog.get_logger(__name__)
P = TypeVar("P", EmailProvider, ChannelProvider)

RELAY_FOUND = "confirmed from the relay's record"
RELAY_ABSENT = "not in the relay's record; sending again"
"""Status history entries of sends settled from the provider's record (`_ask_relay`)."""
DELIVERY_HEADER = "X-Tidings-Delivery"
"""An opaque delivery id in every email, to trace a message back to its journey step."""


class MessageSender:
    """Holds what the send activities need; one instance per worker.

    Each channel has its providers in order of preference. An attempt uses
    the first provider until it has failed transiently `attempts_per_provider`
    times, then the next one: a vendor outage costs a few retries, not the
    message.
    """

    def __init__(
        self,
        *,
        db: Database,
        composer: Composer,
        provider: EmailProvider,
        sender: str,
        default_timezone: str,
        policy: PolicyConfig,
        providers: Mapping[str, Sequence[ChannelProvider]] | None = None,
        email_fallbacks: Sequence[EmailProvider] = (),
        attempts_per_provider: int = 3,
        status_callbacks: Mapping[str, str] | None = None,
        receipts: Receipts | None = None,
        records: Mapping[str, ProviderRecord] | None = None,
        batchable_purposes: Collection[str] = (),
    ) -> None:
        self._db = db
        self._composer = composer
        self._email_providers = [provider, *email_fallbacks]
        self._sender = sender
        self._default_timezone = default_timezone
        self._policy = policy
        self._providers = dict(providers or {})
        self._attempts_per_provider = attempts_per_provider
        self._status_callbacks = dict(status_callbacks or {})
        self._receipts = receipts
        self._records = dict(records or {})
        """Provider name -> its record of what it accepted (relay_record.py)."""
        self._batchable_purposes = frozenset(batchable_purposes)
        """Purposes whose emails may wait a moment to share a request (sendgrid_batch.py)."""

    @activity.defn(name="send_email")
    def send_email(self, input: SendInput) -> SendResult:
        with kept_alive():
            return self._send(input.model_copy(update={"channel": "email"}))

    @activity.defn(name="send_message")
    def send_message(self, input: SendInput) -> SendResult:
        """SMS, push, chat, in-app and webhook sends (email has its own queue and activity)."""
        with kept_alive():
            return self._send(input)

    def _send(self, input: SendInput) -> SendResult:
        recovered = self._recover(input.idempotency_key) or self._ask_relay(input.idempotency_key)
        if recovered is not None:
            return recovered
        with self._db.session() as session:
            input = for_live_contact(session, input)
            channel = input.channel
            new = deliveries.NewDelivery(
                idempotency_key=input.idempotency_key,
                contact_key=input.contact_key,
                journey=input.journey,
                step_id=input.step_id,
                channel=channel,
                template=input.template,
                purpose=input.purpose,
                topic=input.topic,
                scheduled_at=input.scheduled_at,
            )
            request = ComposeRequest(
                template=input.template,
                channel=channel,
                contact_key=input.contact_key,
                purpose=input.purpose,
                topic=input.topic,
                pinned=input.template_version,
                trigger=input.trigger,
                event=input.event,
            )
            earlier = deliveries.find(session=session, idempotency_key=new.idempotency_key)
            if earlier is not None and earlier.status in deliveries.FINAL:
                return _result(earlier)
            late = _too_late(_now())
            if late:
                return self._settle(session, new, deliveries.FAILED, late)
            if channel != "email" and not self._providers.get(channel):
                return self._settle(
                    session,
                    new,
                    deliveries.FAILED,
                    f"no {channel} provider is configured; set one up (see the README's "
                    "channel settings) or send this step on another channel",
                )
            try:
                prepared = self._composer.prepare(session, request)
                # Which of the channel's providers can deliver to this address (push:
                # FCM tokens and Web Push subscriptions); none is the setup's fault.
                fitting = providers_for(
                    channel, prepared.to or "", self._providers.get(channel, [])
                )
            except ComposeError as err:
                return self._settle(session, new, err.status, str(err))
            except NoProviderError as err:
                return self._settle(session, new, deliveries.FAILED, str(err))
        # Lookups and rendering happen outside any transaction: a slow catalog
        # service must not hold the contact's row lock.
        try:
            composed = self._composer.finish(prepared, request)
        except ComposeError as err:
            with self._db.session() as session:
                return self._settle(session, new, err.status, str(err))
        with self._db.session() as session:
            # The policy again, at send time (consent may have changed while the
            # journey slept), in the same transaction as the claim, with the
            # contact's row locked: caps cannot be overshot by concurrent sends.
            clock = _policy_clock()
            decision = self._check(session, input, clock)
            if decision.action in ("skip", "end"):  # end: a kill switch (see _result)
                return self._settle(session, new, deliveries.SKIPPED, decision.reason)
            if decision.action == "wait":
                return SendResult(
                    delivery_id="",
                    status="deferred",
                    until=decision.until,
                    rule=decision.rule,
                    kind=decision.kind,
                    detail=decision.reason,
                )
            claim = deliveries.claim(
                session=session,
                new=dataclasses.replace(
                    new, template_version=composed.version, locale=composed.locale
                ),
                to_address=composed.to or "",
                now=_now(),
                counted_at=clock,
            )
            if claim.verdict == "send" and composed.audit_notes():
                audit.record_content(
                    session=session,
                    contact_key=input.contact_key,
                    at=clock,
                    journey=input.journey,
                    step_id=input.step_id,
                    template=composed.template,
                    version=composed.version,
                    locale=composed.locale,
                    notes=composed.audit_notes(),
                )
        if claim.verdict == "done":
            return _result(claim.delivery)
        evidence = audit.content_digest(composed.parts)
        if channel == "email":
            email = self._email(composed, claim.delivery, input.idempotency_key)
            mailer, switching = self._pick(self._email_providers)
            return self._hand_over(
                claim.delivery,
                mailer,
                lambda: mailer.send(email),
                switching=switching,
                evidence=evidence,
            )
        provider, switching = self._pick(fitting)
        message = OutgoingMessage(
            channel=channel,
            to=composed.to or "",
            contact_key=input.contact_key,
            parts=composed.parts,
            delivery_id=claim.delivery.id,
            status_callback=self._status_callbacks.get(provider.name),
            purpose=input.purpose,
            topic=input.topic,
        )
        return self._hand_over(
            claim.delivery,
            provider,
            lambda: provider.send(message),
            switching=switching,
            evidence=evidence,
        )

    def _recover(self, idempotency_key: str) -> SendResult | None:
        """An earlier attempt's send the provider accepted and the database never
        heard of (the worker died in between): recorded from its receipt."""
        if self._receipts is None:
            return None
        receipt = self._receipts.find(idempotency_key)
        if receipt is None:
            return None
        with self._db.session() as session:
            delivery = deliveries.find(session=session, idempotency_key=idempotency_key)
        if delivery is not None and delivery.status in (deliveries.SENDING, deliveries.UNCERTAIN):
            self._finish(
                delivery,
                deliveries.SENT,
                None,
                receipt.provider,
                receipt.content_sha256,
                reported=("accepted", None),
                provider_message_id=receipt.provider_message_id,
            )
            log.info("send recorded from its receipt", delivery_id=delivery.id)
            with self._db.session() as session:
                delivery = deliveries.find(session=session, idempotency_key=idempotency_key)
        self._receipts.discard(idempotency_key)
        if delivery is None or delivery.status not in deliveries.FINAL:
            return None
        return _result(delivery)

    def _ask_relay(self, idempotency_key: str) -> SendResult | None:
        """An earlier attempt's send cut short after its hand-over, settled from the
        provider's own record of what it accepted (relay_record.py): found, it was
        sent; absent, the row is freed for this attempt to send again (None). No
        record, or one that cannot answer: `uncertain`, as `deliveries.claim` leaves it.

        Absent is trusted only once the hand-over is older than the provider's
        timeout plus a margin: the attempt that marked it has by then sent the final
        dot or given up, and a relay discards a message whose dot never came. Until
        then this attempt fails with a retry timed for that moment. What this cannot
        cover is an attempt frozen (not dead: a paused VM, a stopped process) between
        its mark and the final dot for longer than that, over a connection the relay
        still holds open (Postfix waits `smtpd_timeout`, 300 s by default): it could
        deliver after its absent answer. The attempts fence keeps it from settling
        the row (its `finish` names an attempt number the row no longer has), not
        from writing to its socket."""
        if not self._records:
            return None  # nothing to ask: no transaction on every send's path
        with self._db.session() as session:
            delivery = deliveries.find(session=session, idempotency_key=idempotency_key)
        if delivery is None or delivery.status != deliveries.SENDING:
            return None
        provider = delivery.provider or ""
        known = self._records.get(provider)
        if known is None:
            return None
        message_id = email_message_id(idempotency_key, self._sender)
        asked = HandedOver(message_id, delivery.to_address or "", delivery.updated_at)
        answer = known.record.look_up(asked)
        bound = log.bind(delivery_id=delivery.id, provider=provider, record=known.record.where)
        now = _now()
        if answer.verdict == "absent":
            wait = delivery.updated_at + known.absent_after - now
            if wait > timedelta(0) and _is_last_attempt():
                answer = dataclasses.replace(
                    answer,
                    verdict="unknown",
                    detail=f"{answer.detail}, too soon after the hand-over to trust, and "
                    "no attempt is left to ask again; `tidings deliveries reconcile` can",
                )
            elif wait > timedelta(0):
                bound.info(
                    "relay record: not there yet; asking again later", seconds=wait.total_seconds()
                )
                raise ApplicationError(
                    f"{provider}: the send an earlier attempt cut short is not in "
                    f"{known.record.where}; asking again once its connection is surely gone",
                    type="RelayRecordPending",
                    next_retry_delay=wait,
                )
        with self._db.session() as session:
            if answer.verdict == "found":
                status, error = deliveries.SENT, None
            elif answer.verdict == "absent":
                status, error = deliveries.DEFERRED, f"{answer.detail}; sending again"
            else:
                status = deliveries.UNCERTAIN
                error = f"an earlier attempt stopped while sending; not sent again: {answer.detail}"
            settled = deliveries.resolve(
                session=session,
                delivery=delivery,
                status=status,
                now=now,
                error=error,
                provider_message_id=message_id,
            )
            if settled and status != deliveries.UNCERTAIN:
                relayed = status == deliveries.SENT
                delivery_events.record(
                    session=session,
                    delivery=delivery,
                    provider=provider,
                    status="sent" if relayed else "queued",
                    provider_status=RELAY_FOUND if relayed else RELAY_ABSENT,
                    provider_event_id=f"{delivery.id}:relay-record:{delivery.attempts}",
                    error_code=None,
                    at=now,
                )
                audit.record_send(
                    session=session, delivery=delivery, status=status, at=now, provider=provider
                )
            current = deliveries.find(session=session, idempotency_key=idempotency_key)
        bound.info("relay record answered", verdict=answer.verdict, relay_id=answer.relay_id)
        if current is None or current.status not in deliveries.FINAL:
            return None
        return _result(current)

    def _pick(self, providers: Sequence[P]) -> tuple[P, bool]:
        """This attempt's provider, and whether the next attempt moves to another one."""
        attempt = activity.info().attempt
        index = min((attempt - 1) // self._attempts_per_provider, len(providers) - 1)
        switching = index < len(providers) - 1 and attempt % self._attempts_per_provider == 0
        return providers[index], switching

    def _email(self, composed: Composed, delivery: Delivery, idempotency_key: str) -> OutgoingEmail:
        assert composed.to is not None
        return OutgoingEmail(
            sender=self._sender,
            to=composed.to,
            subject=composed.parts["subject"],
            text=composed.parts["text"],
            html=composed.parts.get("html"),
            message_id=email_message_id(idempotency_key, self._sender),
            headers={**composed.headers, DELIVERY_HEADER: delivery.id},
            batchable=delivery.purpose in self._batchable_purposes,
        )

    def _check(self, session: Session, input: SendInput, clock: datetime) -> Decision:
        message = Message(
            channel=input.channel,
            purpose=input.purpose,
            topic=input.topic,
            windows=input.windows,
            journey=input.journey,
            template=input.template,
        )
        try:
            facts = load_facts(
                session=session,
                contact_key=input.contact_key,
                message=message,
                now=clock,
                config=self._policy,
                default_timezone=self._default_timezone,
                waiting_since=input.waiting_since,
                lock=True,
                idempotency_key=input.idempotency_key,
            )
        except UnknownContactError:
            return Decision(
                action="skip",
                kind="contact",
                rule="unknown contact",
                reason="the contact no longer exists",
            )
        decision = decide(facts)
        record_decision("send", decision.action, decision.kind, input.channel)
        audit.record_decision(
            session=session,
            contact_key=input.contact_key,
            decision=decision,
            at=clock,
            stage="send",
            journey=input.journey,
            step_id=input.step_id,
        )
        return decision

    @staticmethod
    def _settle(session: Session, new: deliveries.NewDelivery, status: str, why: str) -> SendResult:
        now = _now()
        delivery = deliveries.record(session=session, new=new, status=status, error=why, now=now)
        audit.record_send(session=session, delivery=delivery, status=delivery.status, at=now)
        return _result(delivery)

    def _hand_over(
        self,
        delivery: Delivery,
        chosen: EmailProvider | ChannelProvider,
        send: Callable[[], str],
        *,
        switching: bool = False,
        evidence: str,
    ) -> SendResult:
        """Call the provider and settle the delivery; `evidence` is the message's
        digest for the audit log (`audit.content_digest`)."""
        provider = chosen.name
        bound = log.bind(
            delivery_id=delivery.id,
            journey=delivery.journey,
            step=delivery.step_id,
            channel=delivery.channel,
            provider=provider,
        )
        started = time.monotonic()

        def measured(outcome: Outcome, error_class: ErrorClass | None = None) -> None:
            seconds = time.monotonic() - started
            record_send(
                delivery.channel, provider, outcome, seconds, error_class, purpose=delivery.purpose
            )

        def mark() -> None:
            with self._db.session() as session:
                marked = deliveries.hand_over(
                    session=session, delivery=delivery, now=_now(), provider=provider
                )
                if not marked:
                    raise handover.Superseded(delivery.id)

        try:
            with (
                tracer(__name__).start_as_current_span(
                    "tidings.provider.send",
                    attributes={
                        "tidings.channel": delivery.channel,
                        "tidings.provider": provider,
                        "tidings.delivery_id": delivery.id,
                    },
                ),
                handover.marking(mark),
            ):
                if not chosen.marks_handover:
                    handover.point_of_no_return()
                provider_id = send()
        except handover.Superseded:
            # This attempt was given up for dead and another took the delivery:
            # nothing left here, and the result is the other attempt's to give.
            bound.warning("send superseded by a later attempt")
            with self._db.session() as session:
                current = deliveries.find(session=session, idempotency_key=delivery.idempotency_key)
            return _result(current or delivery)
        except TransientSendError as err:
            last = _is_last_attempt()
            measured("failed" if last else "deferred", "transient")
            self._finish(
                delivery,
                deliveries.FAILED if last else deliveries.DEFERRED,
                str(err),
                provider,
                evidence,
                reported=("gave up", None) if last else None,
            )
            bound.warning("send deferred", error=str(err), last_attempt=last, switching=switching)
            if last:
                return SendResult(delivery_id=delivery.id, status="failed", detail=str(err))
            # Moving to the next provider need not wait out this one's Retry-After.
            delay = timedelta(seconds=1) if switching else _seconds(err.retry_after_seconds)
            raise ApplicationError(
                f"{provider}: {err}", type="TransientSendError", next_retry_delay=delay
            ) from err
        except PermanentSendError as err:
            measured("failed", "permanent")
            self._finish(
                delivery,
                deliveries.FAILED,
                f"{provider}: {err}",
                provider,
                evidence,
                reported=(err.code or "rejected", err.code),
            )
            if err.suppress is not None and delivery.to_address:
                self._suppress(delivery, err.suppress, f"{provider}: {err}")
            bound.warning("send failed", error=str(err), suppressed=err.suppress)
            return SendResult(
                delivery_id=delivery.id,
                status="failed",
                detail=f"{provider}: {err}",
                permanent=True,
            )
        except AmbiguousSendError as err:
            measured("uncertain", "ambiguous")
            self._finish(delivery, deliveries.UNCERTAIN, str(err), provider, evidence)
            bound.error("send uncertain", error=str(err))
            return SendResult(delivery_id=delivery.id, status="uncertain", detail=str(err))
        if self._receipts is not None:
            self._receipts.keep(
                delivery.idempotency_key,
                Receipt(provider, provider_id, evidence, accepted_at=_now()),
            )
        measured("sent")
        due = delivery.scheduled_at
        record_lag(delivery.channel, delivery.purpose, (_now() - due).total_seconds())
        self._finish(
            delivery,
            deliveries.SENT,
            None,
            provider,
            evidence,
            reported=("accepted", None),
            provider_message_id=provider_id,
        )
        if self._receipts is not None:
            self._receipts.discard(delivery.idempotency_key)
        bound.info("sent")
        return SendResult(delivery_id=delivery.id, status="sent")

    def _suppress(self, delivery: Delivery, reason: str, note: str) -> None:
        """The address is dead for good: no journey should try it again."""
        with self._db.session() as session:
            suppressions.suppress(
                session=session,
                reason=reason,
                now=_now(),
                channel=delivery.channel,
                address=delivery.to_address,
                note=note[:500],
            )

    def _finish(
        self,
        delivery: Delivery,
        status: str,
        error: str | None,
        provider: str,
        evidence: str,
        *,
        reported: tuple[str, str | None] | None = None,
        provider_message_id: str | None = None,
    ) -> None:
        """Settle the attempt; `reported` (the vendor's word and code) goes in its history.
        The audit log gets the outcome and the vendor's code, not its words (a bounce
        message may quote the address)."""
        now = _now()
        with self._db.session() as session:
            deliveries.finish(
                session=session,
                delivery=delivery,
                status=status,
                error=error,
                provider=provider,
                provider_message_id=provider_message_id,
                now=now,
            )
            if reported is not None:
                outcome = "sent" if status == deliveries.SENT else "failed"
                _report(session, delivery, provider, outcome, *reported)
            audit.record_send(
                session=session,
                delivery=delivery,
                status=status,
                at=now,
                provider=provider,
                content_sha256=evidence,
                error_code=reported[1] if reported is not None else None,
            )


def _report(
    session: Session,
    delivery: Delivery,
    provider: str,
    status: str,
    provider_status: str,
    code: str | None,
) -> None:
    """The send's own answer, first in the delivery's status history (FCM and
    Vonage report errors only there). Keyed by delivery, so a retried activity
    that settles the same outcome records it once."""
    delivery_events.record(
        session=session,
        delivery=delivery,
        provider=provider,
        status=status,
        provider_status=provider_status,
        provider_event_id=f"{delivery.id}:{status}",
        error_code=code[:32] if code else None,
        at=_now(),
    )


_RESULT_STATUS: dict[str, SendStatus] = {
    deliveries.SENT: "sent",
    deliveries.FAILED: "failed",
    deliveries.SKIPPED: "skipped",
}


def _result(delivery: Delivery) -> SendResult:
    """What an earlier attempt did; anything unfinished counts as uncertain. A delivery
    a kill switch skipped ends the journey, on a retried attempt too."""
    status = _RESULT_STATUS.get(delivery.status, "uncertain")
    detail = delivery.error or ""
    end = status == "skipped" and detail.startswith(KILLED)
    return SendResult(delivery_id=delivery.id, status=status, detail=detail, end=end)


def email_message_id(idempotency_key: str, sender: str) -> str:
    """Stable per delivery, so a message can be traced and recipients can dedupe."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tidings.invalid"
    return f"<{digest}@{domain}>"


def _policy_clock() -> datetime:
    """The server's clock when this attempt started (a test server's may run ahead)."""
    return activity.info().started_time


def _deadline() -> datetime | None:
    """The last moment an attempt may start and still finish before the send's deadline."""
    info = activity.info()
    if not info.schedule_to_close_timeout:
        return None
    attempt = info.start_to_close_timeout or timedelta(0)
    return info.scheduled_time + info.schedule_to_close_timeout - attempt


def _too_late(now: datetime) -> str | None:
    deadline = _deadline()
    if deadline is not None and now > deadline:
        return (
            "not sent: too late to start an attempt that ends before the send deadline "
            f"({deadline:%Y-%m-%d %H:%M:%S} UTC)"
        )
    return None


def _is_last_attempt() -> bool:
    """No retry will follow: attempts are used up, or the next would start too late."""
    info = activity.info()
    policy = info.retry_policy
    if policy is None:
        return False
    if 0 < policy.maximum_attempts <= info.attempt:
        return True
    delay = policy.initial_interval * policy.backoff_coefficient ** (info.attempt - 1)
    if policy.maximum_interval is not None:
        delay = min(delay, policy.maximum_interval)
    deadline = _deadline()
    return deadline is not None and _now() + delay > deadline


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def _now() -> datetime:
    return datetime.now(UTC)
