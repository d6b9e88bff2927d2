"""Outgoing webhooks signed the Standard Webhooks way (standardwebhooks.com).

Each request carries `webhook-id` (the delivery id, the same on every retry,
so the receiver can drop duplicates), `webhook-timestamp` (unix seconds) and
`webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
Receivers verify with any Standard Webhooks library, or `verify_standard_webhook`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tidings.activities.channels import OutgoingMessage, PermanentSendError
from tidings.activities.channels.http import classify_response, post, webhook_destination

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0
"""Seconds a signature stays valid either side of now: replays are refused after it."""


@dataclass(frozen=True)
class WebhookConfig:
    secret: str
    """`whsec_` and base64 (as Standard Webhooks libraries make them), or any other text."""
    default_url: str = ""
    """Where messages whose address is not a URL go."""
    timeout_seconds: float = 10.0
    allowed_hosts: tuple[str, ...] = ()
    """Where a contact's own URL may point (`*.` for subdomains): nowhere until listed,
    as a generic webhook has no vendor host to trust."""


class StandardWebhook:
    name = "webhook"
    marks_handover = True
    channel = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._key = secret_bytes(config.secret)

    def send(self, message: OutgoingMessage) -> str:
        url, own = webhook_destination(
            self.name, message.to, self.config.default_url, self.config.allowed_hosts
        )
        body = webhook_body(message)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message.delivery_id, timestamp, body),
        }
        response = post(
            self.name,
            url,
            timeout_seconds=self.config.timeout_seconds,
            content=body,
            headers=headers,
        )
        error = classify_response(self.name, response)
        if response.status_code == 410:
            # Standard Webhooks: 410 Gone asks the sender to stop calling the endpoint.
            raise PermanentSendError(
                f"{error} (the endpoint is gone)", suppress="hard_bounce" if own else None
            )
        if error is not None:
            raise error
        return message.delivery_id


def webhook_body(message: OutgoingMessage) -> bytes:
    """The rendered `body` part as it is, or the message's parts as JSON."""
    rendered = message.parts.get("body")
    if rendered:
        try:
            json.loads(rendered)
        except ValueError as err:
            raise PermanentSendError(f"the webhook body is not valid JSON: {err}") from err
        return rendered.encode()
    payload = {"type": "message", "contact_key": message.contact_key, "parts": message.parts}
    return json.dumps(payload, separators=(",", ":")).encode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: a `whsec_` secret is base64; any other is used as its UTF-8 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as err:
        raise ValueError(
            f"a {SECRET_PREFIX} webhook secret must be base64 after the prefix"
        ) from err


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_standard_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether a request is signed with `secret` and recent; `body` exactly as received.

    The signature header may hold several space-separated signatures (one per
    secret while a secret is rotated): any one matching is enough.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp = lower.get("webhook-id"), lower.get("webhook-timestamp", "")
    if not msg_id or not (stamp.isascii() and stamp.isdigit()):
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret_bytes(secret), msg_id, int(stamp), raw).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in lower.get("webhook-signature", "").split()
    )
