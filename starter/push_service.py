"""A local Web Push service (RFC 8030) for `tidings dev` and tests, mounted in the provider sink.

It plays the browser's push service: it issues subscriptions (and keeps their
private keys, as a browser would), checks each message's VAPID authorization the
way the real services do (RFC 8292: an ES256 JWT signed by the key `k`, `aud`
the endpoint's origin, `exp` within 24 hours, a `sub`), and decrypts the
aes128gcm body (RFC 8291) to record what the person would see.

- `POST /webpush/subscriptions`, optional JSON `{"applicationServerKey": "..."}`:
  a new subscription, `{endpoint, keys: {p256dh, auth}}`, as the browser's
  `PushSubscription.toJSON()`; with a key, messages signed by another are refused (403).
- `POST /webpush/{id}/expire`: the browser unsubscribed; messages then get 410.
- `POST /webpush/{id}/fail-next/{status}`: the next message gets that status
  (429 and 503 with `Retry-After: 2`), the ones after it are taken as usual.
- `POST /webpush/{id}`: a message; 201 with a `Location`. 400 without TTL or
  aes128gcm, 401 for a missing or invalid VAPID token, 404 for an id never
  issued, 413 over 4096 bytes.

Subscriptions are kept in a JSON file beside the record file, so a restarted
`tidings dev` still delivers to the browsers (or tests) that subscribed before.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tidings.activities.channels.webpush import MAX_BODY

MAX_JWT_LIFETIME = 24 * 3600
"""RFC 8292 section 2: push services refuse a token that expires later than this."""


class Recorder(Protocol):
    def record(
        self, channel: str, provider: str, to: str, parts: object, payload: object, sid: str | None
    ) -> None: ...


@dataclass
class IssuedSubscription:
    private_key: str
    """The browser's side: its P-256 key (PKCS8 PEM), which decrypts."""
    auth: str
    application_server_key: str | None = None
    expired: bool = False
    fail_next: int | None = None


class Subscriptions:
    """The subscriptions this service issued, by id, kept in a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        loaded = json.loads(path.read_text()) if path.is_file() else {}
        self._issued = {key: IssuedSubscription(**value) for key, value in loaded.items()}

    def issue(self, base_url: str, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription, as a browser's `PushSubscription.toJSON()`."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        auth = _b64url(secrets.token_bytes(16))
        subscription_id = uuid.uuid4().hex
        with self._lock:
            self._issued[subscription_id] = IssuedSubscription(pem, auth, application_server_key)
            self._save()
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{base_url.rstrip('/')}/{subscription_id}",
            "expirationTime": None,
            "keys": {"p256dh": _b64url(public), "auth": auth},
        }

    def get(self, subscription_id: str) -> IssuedSubscription | None:
        with self._lock:
            return self._issued.get(subscription_id)

    def expire(self, subscription_id: str) -> bool:
        return self._change(subscription_id, expired=True)

    def fail_next(self, subscription_id: str, status: int) -> bool:
        return self._change(subscription_id, fail_next=status)

    def take_failure(self, subscription_id: str) -> int | None:
        """The status the next message was asked to get, once."""
        with self._lock:
            issued = self._issued.get(subscription_id)
            if issued is None or issued.fail_next is None:
                return None
            status, issued.fail_next = issued.fail_next, None
            self._save()
            return status

    def _change(self, subscription_id: str, **changes: Any) -> bool:
        with self._lock:
            issued = self._issued.get(subscription_id)
            if issued is None:
                return False
            for name, value in changes.items():
                setattr(issued, name, value)
            self._save()
            return True

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = {key: asdict(value) for key, value in self._issued.items()}
        self._path.write_text(json.dumps(data))


def web_push_routes(
    app: FastAPI,
    recorder: Recorder,
    subscriptions: Subscriptions,
    forced: Callable[[Request, str], int | None],
    retry_headers: Callable[[int], dict[str, str]],
) -> None:
    """The push service's routes; `forced` and `retry_headers` are the sink's failure switches."""

    def refuse(status: int, reason: str) -> JSONResponse:
        body = {"code": status, "errno": status, "error": reason, "message": reason}
        return JSONResponse(body, status_code=status, headers=retry_headers(status))

    @app.post("/webpush/subscriptions", status_code=201)
    async def subscribe(request: Request) -> JSONResponse:
        body = json.loads(await request.body() or b"{}")
        key = body.get("applicationServerKey") if isinstance(body, dict) else None
        url = request.url
        base = f"{url.scheme}://{url.netloc}{url.path.rsplit('/', 1)[0]}"
        return JSONResponse(subscriptions.issue(base, key), status_code=201)

    @app.post("/webpush/{subscription_id}/expire")
    async def expire(subscription_id: str) -> Response:
        found = subscriptions.expire(subscription_id)
        return Response(status_code=204 if found else 404)

    @app.post("/webpush/{subscription_id}/fail-next/{status}")
    async def fail_next(subscription_id: str, status: int) -> Response:
        found = subscriptions.fail_next(subscription_id, status)
        return Response(status_code=204 if found else 404)

    @app.post("/webpush/{subscription_id}")
    async def push(subscription_id: str, request: Request) -> Response:
        status = forced(request, subscription_id) or subscriptions.take_failure(subscription_id)
        if status is not None:
            return refuse(status, "forced failure")
        issued = subscriptions.get(subscription_id)
        if issued is None:
            return refuse(404, "Subscription not found")
        url = request.url
        problem = check_vapid(
            request.headers.get("authorization", ""),
            audience=f"{url.scheme}://{url.netloc}",
            application_server_key=issued.application_server_key,
        )
        if problem is not None:
            return refuse(*problem)
        if issued.expired:
            return refuse(410, "Subscription expired")
        if not request.headers.get("ttl", "").isdigit():
            return refuse(400, "Missing TTL header")
        if request.headers.get("content-encoding", "").lower() != "aes128gcm":
            return refuse(400, "Content-Encoding must be aes128gcm")
        body = await request.body()
        if len(body) > MAX_BODY:
            return refuse(413, f"Payload too large: {len(body)} bytes, limit {MAX_BODY}")
        try:
            plaintext = decrypt(body, issued)
        except Exception as err:  # http_ece raises bare exceptions for a bad record
            return refuse(400, f"Could not decrypt the aes128gcm body: {err!r}")
        try:
            parts = json.loads(plaintext)
        except ValueError:
            parts = {"body": plaintext.decode(errors="replace")}
        headers = {name: request.headers.get(name) for name in ("ttl", "urgency", "topic")}
        message_id = uuid.uuid4().hex
        wire = {"headers": {k: v for k, v in headers.items() if v}, "encrypted_bytes": len(body)}
        recorder.record("push", "webpush", str(url), parts, wire, message_id)
        location = f"{url.scheme}://{url.netloc}{url.path.rsplit('/', 1)[0]}/messages/{message_id}"
        return Response(status_code=201, headers={"Location": location})


def decrypt(body: bytes, issued: IssuedSubscription) -> bytes:
    """The aes128gcm body with the browser's key (the sender's key is in its header)."""
    key = serialization.load_pem_private_key(issued.private_key.encode(), None)
    auth = _unb64url(issued.auth)
    return bytes(http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm"))


def check_vapid(
    authorization: str, *, audience: str, application_server_key: str | None
) -> tuple[int, str] | None:
    """What a push service refuses in an `Authorization: vapid t=..., k=...` header:
    (401, why) for a missing or invalid token, (403, why) for another key than the
    subscription's; None when it is good."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        return 401, "Missing VAPID authorization (Authorization: vapid t=..., k=...)"
    fields: dict[str, str] = {}
    for item in params.split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    token, key = fields.get("t", ""), fields.get("k", "")
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64url(header_b64))
        claims = json.loads(_unb64url(claims_b64))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64url(key))
        signature = _unb64url(signature_b64)
    except ValueError:
        return 401, "Invalid VAPID token: not a JWT with a P-256 key k"
    if header.get("alg") != "ES256" or len(signature) != 64:
        return 401, "Invalid VAPID token: the algorithm must be ES256"
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return 401, "Invalid VAPID token: the signature does not match k"
    if claims.get("aud") != audience:
        return 401, f"Invalid VAPID token: aud must be {audience}"
    expiry, now = claims.get("exp"), time.time()
    if not isinstance(expiry, int) or not now < expiry <= now + MAX_JWT_LIFETIME:
        return 401, "Invalid VAPID token: exp must be in the next 24 hours"
    if not str(claims.get("sub") or ""):
        return 401, "Invalid VAPID token: sub (a mailto: or https: contact) is required"
    if application_server_key is not None and key != application_server_key.rstrip("="):
        return 403, "The VAPID key is not the one the subscription was made with"
    return None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as err:
        raise ValueError(str(err)) from err
