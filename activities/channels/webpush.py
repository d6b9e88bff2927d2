"""Push to browsers through Web Push: VAPID (RFC 8292), aes128gcm payloads (RFC 8291).

The contact's push address is the browser's subscription (see
`tidings.push_subscriptions`): the push service's endpoint and the browser's keys.
pywebpush encrypts the payload to those keys and py-vapid signs the VAPID JWT; the
request itself goes through `http.post`, so the point of no return and what each
failure means for a retry are the same as for every other provider.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from tidings.activities.channels import (
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.fcm import DEAD_TOKEN_REASON
from tidings.activities.channels.http import classify_response, post, url_allowed, vendor_message
from tidings.errors import TidingsError
from tidings.models.primitives import Purpose
from tidings.push_subscriptions import SubscriptionError, parse_subscription

MAX_BODY = 4096
"""Bytes of encrypted body every push service must take (RFC 8030 section 7.2)."""
JWT_LIFETIME = 12 * 3600
"""Seconds; RFC 8292 allows at most 24 hours."""
URGENCY: dict[Purpose, str] = {
    "critical": "high",
    "transactional": "normal",
    "service": "normal",
    "marketing": "low",
}
"""RFC 8030 section 5.3: a phone on battery saving may hold low-urgency messages back."""
DEFAULT_TTL = 86_400
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEY_SETTING = "TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY"


@dataclass(frozen=True)
class WebPushConfig:
    vapid_private_key: str
    subject: str
    ttl_seconds: Mapping[Purpose, int] = field(default_factory=dict)
    topic_collapse: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 10.0


class WebPush:
    name = "webpush"
    marks_handover = True
    channel = "push"

    def __init__(self, config: WebPushConfig) -> None:
        if not config.subject:
            raise TidingsError(
                f"TIDINGS_WEBPUSH_SUBJECT is required with {KEY_SETTING}: push services "
                "want a contact, a mailto: address or https: URL"
            )
        self.config = config
        # no-strict: the subject was checked by the settings, where py-vapid's own
        # check would also refuse an https: subject with a path.
        self._vapid = Vapid02(load_vapid_key(config.vapid_private_key), conf={"no-strict": True})

    @property
    def public_key(self) -> str:
        """The application server key browsers subscribe with (base64url, uncompressed)."""
        return vapid_public_key(self._vapid.private_key)

    def send(self, message: OutgoingMessage) -> str:
        try:
            subscription = parse_subscription(message.to)
        except SubscriptionError as err:
            raise PermanentSendError(f"webpush: {err}") from None
        endpoint = subscription.endpoint
        if not url_allowed(endpoint, self.config.allowed_hosts):
            host = httpx.URL(endpoint).host
            # No `suppress`: the address is refused by policy, not known to be dead.
            raise PermanentSendError(
                f"webpush: refused the subscription's push service {host!r}: endpoints may "
                f"only go to hosts in TIDINGS_WEBPUSH_ALLOWED_HOSTS; add {host!r} there if it "
                "is a real push service"
            )
        plaintext = json.dumps(_payload(message), separators=(",", ":")).encode()
        body = WebPusher(subscription.as_json()).encode(plaintext, "aes128gcm")["body"]
        if len(body) > MAX_BODY:
            raise PermanentSendError(
                f"webpush: the encrypted payload is {len(body)} bytes, over the {MAX_BODY} "
                "bytes push services must accept; shorten the push title, body or deep_link",
                code="too large",
            )
        response = post(
            self.name,
            endpoint,
            timeout_seconds=self.config.timeout_seconds,
            content=body,
            headers=self._headers(message, endpoint),
        )
        if response.is_success:
            return response.headers.get("location") or message.delivery_id
        raise _classify(response)

    def _headers(self, message: OutgoingMessage, endpoint: str) -> dict[str, str]:
        url = httpx.URL(endpoint)
        audience = f"{url.scheme}://{url.netloc.decode()}"
        claims = {"aud": audience, "sub": self.config.subject, "exp": _expiry()}
        headers = {
            **cast(dict[str, str], self._vapid.sign(claims)),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.config.ttl_seconds.get(message.purpose, DEFAULT_TTL)),
            "Urgency": URGENCY.get(message.purpose, "normal"),
        }
        if self.config.topic_collapse and message.topic:
            headers["Topic"] = _collapse_key(message.topic)
        return headers


def _payload(message: OutgoingMessage) -> dict[str, str]:
    """What the site's service worker reads in its `push` event: it shows title and body,
    and opens `url` on a click; delivery_id ties a click back to the send."""
    parts = message.parts
    payload = {key: parts[key] for key in ("title", "body") if parts.get(key)}
    if parts.get("deep_link"):
        payload["url"] = parts["deep_link"]
    payload["delivery_id"] = message.delivery_id
    return payload


def _collapse_key(topic: str) -> str:
    """RFC 8030's Topic is at most 32 base64url characters: a topic name that is not
    one is replaced by a digest of it (still one key per topic)."""
    if _TOPIC.fullmatch(topic):
        return topic
    digest = hashlib.sha256(topic.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def _expiry() -> int:
    return int(time.time()) + JWT_LIFETIME


def _classify(response: httpx.Response) -> TransientSendError | PermanentSendError:
    """RFC 8030 and 8292's answers; the services agree on these codes."""
    status = response.status_code
    detail = f"webpush: HTTP {status}: {vendor_message(response)}"
    code = f"HTTP {status}"
    if status in (404, 410):
        return PermanentSendError(
            f"{detail} (the subscription expired or the browser unsubscribed)",
            suppress=DEAD_TOKEN_REASON,
            code=code,
        )
    if status == 413:
        return PermanentSendError(
            f"{detail} (the payload is over the {MAX_BODY} bytes push services accept; "
            "shorten the push title, body or deep_link)",
            code=code,
        )
    if status in (400, 401, 403):
        return PermanentSendError(
            f"{detail} (the push service refused the VAPID signature or request: check "
            f"{KEY_SETTING} is the key the browser subscribed with, and TIDINGS_WEBPUSH_SUBJECT)",
            code=code,
        )
    error = classify_response("webpush", response)
    assert error is not None, "only called for unsuccessful answers"
    return error


def load_vapid_key(text: str) -> ec.EllipticCurvePrivateKey:
    """PEM, or the raw private number in base64url; TidingsError naming the setting."""
    value = text.strip().replace("\\n", "\n")
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(value.encode(), None)
        else:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            if len(raw) != 32:
                raise ValueError(f"{len(raw)} bytes, not 32")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError) as err:
        raise TidingsError(
            f"{KEY_SETTING} is not a VAPID private key ({err}); give a P-256 key as PEM or "
            "its raw 32 bytes in base64url (`vapid --gen` makes one)"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TidingsError(f"{KEY_SETTING} must be a P-256 (prime256v1) key: VAPID signs ES256")
    return key


def vapid_public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The uncompressed public point in base64url: a browser's `applicationServerKey`."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_vapid_key() -> str:
    """A new VAPID key as PKCS8 PEM (for `tidings dev`; production keys are made once)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
