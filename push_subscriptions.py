"""Web Push subscriptions as push addresses, told apart from FCM registration tokens.

A browser's subscription (`PushSubscription.toJSON()`) is an endpoint URL at the
browser's push service and two keys: `p256dh`, the browser's P-256 public key the
payload is encrypted to, and `auth`, a 16-byte secret. It is kept as one `push`
identity in a compact form, the endpoint with the keys in its fragment:

    https://updates.push.services.mozilla.com/wpush/v2/gAAA...#p256dh=BNcR...&auth=tBHI...

A fragment never leaves the machine in an HTTP request, so the form is still the URL
to POST to; and an FCM token never contains `://`, so the two kinds cannot be mixed
up. The JSON a browser gives is accepted too, and stored in the compact form.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

MAX_ADDRESS = 1024
"""The longest push address kept. Subscriptions are long: Mozilla's and Microsoft's
endpoints alone run to 300-500 characters, plus 120 for the keys."""
P256DH_BYTES = 65
"""An uncompressed P-256 point (0x04, x, y): what browsers give as `p256dh`."""
AUTH_BYTES = 16
_JSON_EXAMPLE = '{"endpoint": "https://...", "keys": {"p256dh": "B...", "auth": "..."}}'


class SubscriptionError(ValueError):
    """A malformed subscription; the message names the field at fault."""


@dataclass(frozen=True)
class WebPushSubscription:
    endpoint: str
    p256dh: str
    """Unpadded base64url, as browsers give it."""
    auth: str

    @property
    def address(self) -> str:
        """The compact form kept as the contact's push identity."""
        return f"{self.endpoint}#p256dh={self.p256dh}&auth={self.auth}"

    def as_json(self) -> dict[str, object]:
        """The shape a browser's `PushSubscription.toJSON()` has (what pywebpush takes)."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def is_web_push(address: str) -> bool:
    """A Web Push subscription (compact form or JSON) rather than an FCM token."""
    text = address.lstrip()
    return text.startswith("{") or "://" in text


def parse_subscription(value: str) -> WebPushSubscription:
    """From the browser's JSON or the compact form; SubscriptionError naming the field."""
    text = value.strip()
    if text.startswith("{"):
        endpoint, p256dh, auth = _from_json(text)
    else:
        endpoint, _, fragment = text.partition("#")
        keys = parse_qs(fragment, keep_blank_values=True)
        p256dh, auth = (keys.get(name, [""])[0] for name in ("p256dh", "auth"))
        if not fragment:
            raise SubscriptionError(
                "a Web Push subscription needs its keys: give the browser's JSON "
                f"({_JSON_EXAMPLE}) or ENDPOINT#p256dh=...&auth=..."
            )
    subscription = WebPushSubscription(
        endpoint=_check_endpoint(endpoint),
        p256dh=_check_key("keys.p256dh", p256dh, P256DH_BYTES),
        auth=_check_key("keys.auth", auth, AUTH_BYTES),
    )
    _check_on_curve(subscription.p256dh)
    if len(subscription.address) > MAX_ADDRESS:
        raise SubscriptionError(
            f"the Web Push subscription's endpoint is too long: at most {MAX_ADDRESS} "
            "characters with its keys"
        )
    return subscription


def normalize_push_address(value: str) -> str:
    """A push identity as kept: a subscription in its compact form, an FCM token as given."""
    return parse_subscription(value).address if is_web_push(value) else value.strip()


def _from_json(text: str) -> tuple[str, str, str]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise SubscriptionError(
            f"the Web Push subscription is not valid JSON ({err}); expected {_JSON_EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise SubscriptionError(f"the Web Push subscription must be an object: {_JSON_EXAMPLE}")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise SubscriptionError(
            "the Web Push subscription has no keys object; it needs keys.p256dh and keys.auth"
        )
    found: list[str] = []
    for name, value in (
        ("endpoint", data.get("endpoint")),
        ("keys.p256dh", keys.get("p256dh")),
        ("keys.auth", keys.get("auth")),
    ):
        if not isinstance(value, str) or not value:
            raise SubscriptionError(f"the Web Push subscription has no {name} string")
        found.append(value)
    return found[0], found[1], found[2]


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SubscriptionError(
            f"the Web Push subscription's endpoint {endpoint[:60]!r} is not an https URL"
        )
    if any(c.isspace() for c in endpoint):
        raise SubscriptionError("the Web Push subscription's endpoint contains spaces")
    return endpoint


def _check_key(field: str, value: str, size: int) -> str:
    """Unpadded base64url, whatever padding or alphabet it came in."""
    text = value.strip().rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise SubscriptionError(
            f"the Web Push subscription's {field} must be {size} bytes in base64url "
            f"(got {value[:24]!r}); copy it from the browser's PushSubscription.toJSON()"
        )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _check_on_curve(p256dh: str) -> None:
    raw = base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise SubscriptionError(
            "the Web Push subscription's keys.p256dh is not a P-256 public key"
        ) from None
