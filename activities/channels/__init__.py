"""Channel providers: one module per provider, behind one protocol per channel."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from tidings.models.policy import SuppressionReason
from tidings.models.primitives import Purpose


class OutgoingEmail(BaseModel):
    """A rendered email, ready for any email provider."""

    sender: str
    to: str
    subject: str
    text: str
    html: str | None = None
    message_id: str
    headers: dict[str, str] = {}
    batchable: bool = False
    """Low-priority mail a provider may send with others in one request (SendGrid
    personalizations), after waiting a moment for them; never set for mail that
    should leave at once."""


class TransientSendError(Exception):
    """The provider did not take the message but may later: retry."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PermanentSendError(Exception):
    """The provider refused the message for good: do not retry.

    `suppress` says what it means for the address, when it means something
    for good: an invalid phone number, a dead push token, an unknown mailbox.
    The send activity records a suppression and may try the step's fallback
    channel. `code` is the vendor's own error code (FCM's `UNREGISTERED`,
    Twilio's 21211, an SMTP reply code), kept in the delivery's history.
    """

    def __init__(
        self, message: str, *, suppress: SuppressionReason | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.suppress = suppress
        self.code = code


class AmbiguousSendError(Exception):
    """The connection failed after the message was handed over: it may have been sent."""


class EmailProvider(Protocol):
    name: str
    marks_handover: bool
    """True when `send` calls `handover.point_of_no_return()` just before anything can
    reach the vendor (or never, when a repeat cannot deliver twice); False makes the
    whole call count as handing over, so a crash during it leaves the message in doubt."""

    def send(self, email: OutgoingEmail) -> str:
        """Hand the email over; return the provider's message id.

        Raises TransientSendError, PermanentSendError or AmbiguousSendError.
        """
        ...


class OutgoingMessage(BaseModel):
    """A rendered message on a channel other than email, ready for any of its providers."""

    channel: str
    """sms, push, chat, in_app or webhook."""
    to: str
    """The address on that channel: an E.164 phone number, a push token, a webhook URL;
    empty where the provider's configuration names the destination (a Slack channel)."""
    contact_key: str
    parts: dict[str, str]
    """Rendered parts: sms text; push title, body, deep_link; chat text, blocks (JSON);
    in_app title, body, action; webhook body (JSON)."""
    delivery_id: str
    """Unique per message: providers that deduplicate (Standard Webhooks' webhook-id,
    FCM message ids) get it, and status callbacks carry it back."""
    status_callback: str | None = None
    """Where the provider should report delivery status, if it can."""
    purpose: Purpose = "marketing"
    """transactional, service, marketing or critical: Web Push sets its Urgency and TTL by it."""
    topic: str | None = None
    """The step's topic; Web Push may send it as a collapse key (TIDINGS_WEBPUSH_TOPIC_COLLAPSE)."""


class ChannelProvider(Protocol):
    name: str
    channel: str
    marks_handover: bool
    """True when `send` calls `handover.point_of_no_return()` just before anything can
    reach the vendor (or never, when a repeat cannot deliver twice); False makes the
    whole call count as handing over, so a crash during it leaves the message in doubt."""

    def send(self, message: OutgoingMessage) -> str:
        """Hand the message over; return the provider's message id.

        Raises TransientSendError (with retry_after_seconds from a 429's
        Retry-After), PermanentSendError (with `suppress` when the address is
        dead for good) or AmbiguousSendError (the request may have arrived).
        """
        ...
