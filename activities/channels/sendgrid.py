"""Email through SendGrid's v3 Mail Send API, and its Signed Event Webhook.

SendGrid accepts a message with 202 and an `X-Message-Id`; what happens to
it later (delivered, bounced, opened, reported as spam) arrives in batches
on the Event Webhook. Every message carries its delivery id as a custom
argument, which SendGrid copies into each of its events, so an event finds
its delivery even where the message id does not match.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Literal

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.bounces import (
    DELIVERY_HEADER,
    BounceClass,
    classify_smtp,
    reply_code,
)
from tidings.activities.channels.http import classify_response, post
from tidings.activities.metrics import record_provider_request
from tidings.models.policy import SuppressionReason

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
DELIVERY_ARG = "delivery_id"
"""The custom argument that carries the delivery id out and back on every event."""
_REPLY_TO = "reply-to"
"""Reserved in `headers`: the API takes it as the `reply_to` object instead."""
_CREDENTIALS: dict[int, str] = {
    401: "SendGrid refused the API key: check TIDINGS_SENDGRID_API_KEY",
    403: "the API key needs the Mail Send permission and the sender must be a verified "
    "Sender Identity: check TIDINGS_SENDGRID_API_KEY and the sender address",
}


@dataclass(frozen=True)
class SendGridConfig:
    api_key: str
    base_url: str = "https://api.sendgrid.com"
    """https://api.eu.sendgrid.com for an EU-pinned subuser."""
    timeout_seconds: float = 10.0


class SendGridEmail:
    name = "sendgrid"
    marks_handover = True

    def __init__(self, config: SendGridConfig) -> None:
        self.config = config

    def send(self, email: OutgoingEmail) -> str:
        response = self.post_mail_send(mail_send_body(email), messages=1, delivers=True)
        if not response.is_success:
            raise classify(response)
        return accepted_message_id(response)

    def post_mail_send(
        self, body: dict[str, object], *, messages: int, delivers: bool
    ) -> httpx.Response:
        """One Mail Send request carrying `messages` emails; `delivers=False` when the
        caller has marked the hand-over of each itself (a batch)."""
        config = self.config
        if not config.api_key.strip():
            raise PermanentSendError("sendgrid: no API key: set TIDINGS_SENDGRID_API_KEY")
        response = post(
            self.name,
            f"{config.base_url.rstrip('/')}/v3/mail/send",
            timeout_seconds=config.timeout_seconds,
            json_body=body,
            headers={"Authorization": f"Bearer {config.api_key}"},
            delivers=delivers,
        )
        record_provider_request(self.name, messages)
        return response


def accepted_message_id(response: httpx.Response) -> str:
    """The X-Message-Id of a 2xx answer, which SendGrid's events for the message carry."""
    message_id = str(response.headers.get("x-message-id", "")).strip()
    if not message_id:
        # Not retried (it would go twice), nor counted as sent without an id to
        # match its events by: uncertain, for someone to look at.
        raise AmbiguousSendError(
            f"sendgrid: HTTP {response.status_code} without an X-Message-Id: the message "
            "may have been sent, and its events cannot be matched to it"
        )
    return message_id


def mail_send_body(email: OutgoingEmail) -> dict[str, object]:
    """The v3 JSON for one message to one recipient.

    text/plain comes first: the API refuses any other order. Reply-To is
    reserved as a header, so it moves to `reply_to`.
    """
    headers, reply_to = message_headers(email)
    content = [{"type": "text/plain", "value": email.text}]
    if email.html is not None:
        content.append({"type": "text/html", "value": email.html})
    body: dict[str, object] = {
        "personalizations": [{"to": [{"email": email.to}]}],
        "from": sender_address(email),
        "subject": email.subject,
        "content": content,
        "headers": headers,
    }
    if reply_to is not None:
        body["reply_to"] = reply_to
    if (custom_args := delivery_args(email)) is not None:
        body["custom_args"] = custom_args
    return body


def message_headers(email: OutgoingEmail) -> tuple[dict[str, str], dict[str, str] | None]:
    """The headers the API takes as `headers` (Message-ID first), and the `reply_to` object."""
    headers = {"Message-ID": email.message_id}
    reply_to: dict[str, str] | None = None
    for name, value in email.headers.items():
        if name.lower() == _REPLY_TO:
            reply_to = _address(value, "Reply-To")
        else:
            headers[name] = value
    return headers, reply_to


def delivery_args(email: OutgoingEmail) -> dict[str, str] | None:
    """The custom arguments SendGrid copies into each event of the message: its delivery id."""
    delivery_id = _header(email.headers, DELIVERY_HEADER)
    return None if delivery_id is None else {DELIVERY_ARG: delivery_id}


def sender_address(email: OutgoingEmail) -> dict[str, str]:
    return _address(email.sender, "sender")


def _address(value: str, what: str) -> dict[str, str]:
    name, address = parseaddr(value)
    if "@" not in address:
        raise PermanentSendError(f"sendgrid: the {what} {value!r} has no email address")
    return {"email": address, "name": name} if name else {"email": address}


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def classify(response: httpx.Response) -> TransientSendError | PermanentSendError:
    """The shared HTTP classification, told in SendGrid's own words.

    SendGrid rate limits name the end of the window in X-RateLimit-Reset
    (epoch seconds) rather than Retry-After; either one sets the delay.
    """
    shared = classify_response("sendgrid", response)
    assert shared is not None, "only called for unsuccessful answers"
    status = response.status_code
    detail = f"sendgrid: HTTP {status}: {error_message(response)}"
    if isinstance(shared, TransientSendError):
        wait = shared.retry_after_seconds
        if wait is None and status == 429:
            wait = _rate_limit_reset(response)
        return TransientSendError(detail, retry_after_seconds=wait)
    if status in _CREDENTIALS:
        return PermanentSendError(f"{detail} ({_CREDENTIALS[status]})")
    if 300 <= status < 400:
        return shared
    return PermanentSendError(detail)


def error_message(response: httpx.Response) -> str:
    """`errors[].message` (with the field it names), or the body as text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    messages = [
        f"{error['field']}: {error['message']}" if error.get("field") else str(error["message"])
        for error in errors or []
        if isinstance(error, dict) and error.get("message")
    ]
    if messages:
        return "; ".join(messages)[:500]
    return response.text.strip()[:300] or response.reason_phrase


def _rate_limit_reset(response: httpx.Response) -> float | None:
    value = response.headers.get("x-ratelimit-reset", "")
    try:
        return max(0.0, float(value) - time.time())
    except ValueError:
        return None


# --- Signed Event Webhook ----------------------------------------------------


def verify_event_webhook(
    public_key_b64_der: str,
    payload: bytes,
    signature_b64: str,
    timestamp: str,
    *,
    max_age_seconds: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether an Event Webhook batch came from SendGrid, unaltered.

    SendGrid signs `timestamp + payload` with ECDSA P-256 over SHA-256; the
    verification key from its settings page is a base64 DER public key. The
    payload must be the raw request body: parsed and serialized again, it
    would no longer match. `max_age_seconds` also refuses an old timestamp,
    so a captured batch cannot be replayed later.
    """
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64_der))
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False
    if max_age_seconds is not None:
        try:
            age = (time.time() if now is None else now) - float(timestamp)
        except ValueError:
            return False
        if abs(age) > max_age_seconds:
            return False
    try:
        key.verify(signature, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- Events --------------------------------------------------------------------

EmailEventKind = Literal[
    "queued",
    "delivered",
    "deferred",
    "bounced",
    "dropped",
    "opened",
    "clicked",
    "complained",
    "unsubscribed",
]
_KINDS: dict[str, EmailEventKind] = {
    "processed": "queued",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounced",
    "dropped": "dropped",
    "open": "opened",
    "click": "clicked",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
_DROPPED_SUPPRESSIONS: dict[str, SuppressionReason] = {
    "bounced address": "hard_bounce",
    "invalid": "hard_bounce",
    "spam reporting address": "complaint",
}
"""SendGrid drops mail to addresses on its own lists: ours should hold them too."""


@dataclass(frozen=True)
class EmailEvent:
    """One thing SendGrid reports about one message to one recipient."""

    kind: EmailEventKind
    event: str
    """SendGrid's own name for it: processed, bounce, spamreport..."""
    event_id: str
    """sg_event_id: unique, so a batch SendGrid sends again is recorded once."""
    message_id: str
    """sg_message_id: the X-Message-Id of the send, then a suffix of SendGrid's."""
    delivery_id: str | None
    email: str
    at: datetime
    reason: str = ""
    """Why: the bounce or drop reason, or the receiving server's reply."""
    status: str = ""
    """The enhanced status code (RFC 3463) of a bounce or drop: 5.1.1."""
    bounce_type: str = ""
    """For bounces: `bounce` (the address) or `blocked` (the message or sender)."""
    url: str = ""
    """For clicks."""

    @property
    def send_message_id(self) -> str:
        """The X-Message-Id the send returned, which the delivery stores."""
        return self.message_id.split(".", 1)[0]

    @property
    def bounce_class(self) -> BounceClass | None:
        if self.kind != "bounced":
            return None
        found = classify_smtp(reply_code(self.reason), self.status or None, self.reason)
        # SendGrid has already told an unreachable address from a refused message.
        return "block" if self.bounce_type == "blocked" and found == "hard" else found

    def suppress_reason(self) -> SuppressionReason | None:
        if self.kind == "complained":
            return "complaint"
        if self.kind == "dropped":
            return _DROPPED_SUPPRESSIONS.get(self.reason.strip().lower())
        return "hard_bounce" if self.bounce_class == "hard" else None


def parse_events(payload: bytes | str) -> list[EmailEvent]:
    """An Event Webhook batch (a JSON array), in order.

    Event types this does not know are left out rather than failing the
    batch: SendGrid would send the whole batch again, and again.
    """
    try:
        batch = json.loads(payload)
    except ValueError as err:
        raise ValueError(f"a SendGrid event batch must be JSON: {err}") from err
    if not isinstance(batch, list):
        raise ValueError("a SendGrid event batch must be a JSON array")
    return [event for item in batch if (event := _event(item)) is not None]


def _event(item: object) -> EmailEvent | None:
    if not isinstance(item, dict):
        return None
    kind = _KINDS.get(str(item.get("event", "")))
    if kind is None:
        return None
    delivery_id = item.get(DELIVERY_ARG)
    unique_args = item.get("unique_args")  # older integrations nest custom arguments
    if delivery_id is None and isinstance(unique_args, dict):
        delivery_id = unique_args.get(DELIVERY_ARG)
    return EmailEvent(
        kind=kind,
        event=str(item["event"]),
        event_id=str(item.get("sg_event_id", "")),
        message_id=str(item.get("sg_message_id", "")),
        delivery_id=str(delivery_id) if delivery_id is not None else None,
        email=str(item.get("email", "")),
        at=_timestamp(item.get("timestamp")),
        reason=str(item.get("reason") or item.get("response") or ""),
        status=str(item.get("status") or ""),
        bounce_type=str(item.get("type") or ""),
        url=str(item.get("url") or ""),
    )


def _timestamp(value: object) -> datetime:
    """Unix seconds; SendGrid always sends them, and one event without is not worth a batch."""
    try:
        return datetime.fromtimestamp(float(str(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)
