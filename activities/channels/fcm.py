"""Push through Firebase Cloud Messaging's HTTP v1 API, as a Google service account.

The service account signs a short JWT (RS256) and trades it at Google's
token endpoint for an access token, kept until shortly before it expires:
one token request an hour, not one per message. FCM's own `errorCode`
tells a token the app no longer holds (suppress it) from anything else.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.http import (
    classify_response,
    json_object,
    post,
    vendor_message,
)
from tidings.errors import TidingsError
from tidings.models.policy import SuppressionReason

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600
"""Seconds; Google's longest for a self-signed assertion."""
EXPIRY_MARGIN = 60.0
"""Fetch a new access token this many seconds before the old one runs out."""
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
"""The app was uninstalled or the token rotated, or it belongs to another
Firebase project: this token will never work for this sender again."""
DEAD_TOKEN_REASON: SuppressionReason = "hard_bounce"
"""Suppressions are per address, so this suppresses the one token on the push
channel; like an email hard bounce, the address no longer exists."""


@dataclass(frozen=True)
class FcmConfig:
    project_id: str
    client_email: str
    private_key_pem: str
    token_url: str = "https://oauth2.googleapis.com/token"
    base_url: str = "https://fcm.googleapis.com"
    timeout_seconds: float = 10.0

    @classmethod
    def from_service_account(cls, info: Mapping[str, object]) -> FcmConfig:
        """From the JSON key file the Firebase console downloads."""
        return cls(
            project_id=str(info["project_id"]),
            client_email=str(info["client_email"]),
            private_key_pem=str(info["private_key"]),
            token_url=str(info.get("token_uri") or cls.token_url),
        )


class FcmPush:
    name = "fcm"
    marks_handover = True
    channel = "push"

    def __init__(self, config: FcmConfig) -> None:
        self.config = config
        self._tokens = AccessTokens(config, load_private_key(config.private_key_pem))

    def send(self, message: OutgoingMessage) -> str:
        config = self.config
        token = self._tokens.get()
        response = post(
            self.name,
            f"{config.base_url.rstrip('/')}/v1/projects/{config.project_id}/messages:send",
            timeout_seconds=config.timeout_seconds,
            json_body={"message": _payload(message)},
            headers={"Authorization": f"Bearer {token}"},
        )
        if not response.is_success:
            if response.status_code == 401 and _error_code(response) is None:
                # Revoked or expired early: the retry fetches a fresh one.
                self._tokens.forget(token)
            raise _classify(response)
        name = json_object(self.name, response).get("name")
        if not isinstance(name, str):
            raise AmbiguousSendError(f"fcm: HTTP {response.status_code} without a message name")
        return name


def _payload(message: OutgoingMessage) -> dict[str, object]:
    """FCM's `data` values must all be strings; the app reads deep_link from it."""
    parts = message.parts
    notification = {key: parts[key] for key in ("title", "body") if parts.get(key)}
    data = {"delivery_id": message.delivery_id}
    if parts.get("deep_link"):
        data["deep_link"] = parts["deep_link"]
    return {"token": message.to, "notification": notification, "data": data}


def _classify(response: httpx.Response) -> TransientSendError | PermanentSendError:
    """FCM's errorCode first (a dead token), then what the HTTP status means here."""
    code, status = _error_code(response), response.status_code
    detail = f"fcm: HTTP {status}{' ' + code if code else ''}: {vendor_message(response)}"
    vendor_code = code or f"HTTP {status}"
    if code in DEAD_TOKEN_CODES or (code == "INVALID_ARGUMENT" and _about_token(response)):
        return PermanentSendError(
            f"{detail} (the push token is no longer registered)",
            suppress=DEAD_TOKEN_REASON,
            code=vendor_code,
        )
    if code == "THIRD_PARTY_AUTH_ERROR":
        return PermanentSendError(
            f"{detail} (Apple or the web push service refused Firebase's credentials: "
            "check the APNs key in the Firebase console)",
            code=vendor_code,
        )
    if status == 401:
        return TransientSendError(
            f"{detail} (the access token was refused; a retry gets a new one)"
        )
    if status == 403:
        return PermanentSendError(
            f"{detail} (give TIDINGS_FCM_CLIENT_EMAIL the Firebase Cloud Messaging API Admin "
            "role, and enable the API in TIDINGS_FCM_PROJECT_ID)",
            code=vendor_code,
        )
    if status == 404:
        return PermanentSendError(f"{detail} (check TIDINGS_FCM_PROJECT_ID)", code=vendor_code)
    error = classify_response("fcm", response)
    assert error is not None, "only called for unsuccessful answers"
    if isinstance(error, PermanentSendError):
        error.code = vendor_code
    return error


def _error_body(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_code(response: httpx.Response) -> str | None:
    """FCM's own error code, from `details[].errorCode` of a google.rpc.Status."""
    details = _error_body(response).get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    return None


def _about_token(response: httpx.Response) -> bool:
    return "registration token" in str(_error_body(response).get("message", "")).lower()


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The service account's key; a key pasted through an env var often has literal \\n."""
    try:
        key = serialization.load_pem_private_key(pem.replace("\\n", "\n").encode(), None)
    except (ValueError, TypeError) as err:
        raise TidingsError(
            f"TIDINGS_FCM_PRIVATE_KEY is not a PEM private key ({err}); use the "
            "private_key of the service account's JSON key file"
        ) from err
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TidingsError("TIDINGS_FCM_PRIVATE_KEY must be an RSA key (Google signs RS256)")
    return key


def signed_jwt(claims: Mapping[str, object], key: rsa.RSAPrivateKey) -> str:
    """A compact JWS, RS256: what Google's token endpoint takes as `assertion`."""
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AccessTokens:
    """One access token at a time, shared by the worker's threads.

    The lock is held while fetching, so a burst of sends after expiry makes
    one token request, not one each.
    """

    def __init__(self, config: FcmConfig, key: rsa.RSAPrivateKey) -> None:
        self._config = config
        self._key = key
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at - EXPIRY_MARGIN:
                self._token, lifetime = self._fetch()
                self._expires_at = time.monotonic() + lifetime
            return self._token

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        """Nothing reaches a device here, so every failure but a refusal is retryable."""
        config = self._config
        now = int(time.time())
        claims = {
            "iss": config.client_email,
            "scope": SCOPE,
            "aud": config.token_url,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        form = {"grant_type": GRANT_TYPE, "assertion": signed_jwt(claims, self._key)}
        try:
            response = post(
                "fcm token",
                config.token_url,
                timeout_seconds=config.timeout_seconds,
                data=form,
                delivers=False,
            )
        except AmbiguousSendError as err:
            raise TransientSendError(
                f"fcm token: {config.token_url} gave no answer ({err.__cause__!r}); "
                "no message was sent"
            ) from err
        error = classify_response("fcm token", response)
        if isinstance(error, PermanentSendError):
            raise PermanentSendError(
                f"{error} (Google refused the service account: check TIDINGS_FCM_CLIENT_EMAIL "
                "and TIDINGS_FCM_PRIVATE_KEY, and that the key was not deleted)"
            )
        if error is not None:
            raise error
        body = json_object("fcm token", response)
        token, lifetime = body.get("access_token"), body.get("expires_in", TOKEN_LIFETIME)
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise TransientSendError(f"fcm token: an answer without an access_token: {body}")
        return token, float(lifetime)
