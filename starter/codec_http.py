"""The codec server: the Temporal UI and CLI show decoded payloads through it.

Temporal's remote codec protocol, mounted at /codec on the HTTP service:
`POST /codec/decode` and `POST /codec/encode` take and answer
`{"payloads": [...]}` with each payload in proto3 JSON (bytes as base64); the
UI names the namespace in an `X-Namespace` header, logged with each call.

Who may call:

- an operator sending `Authorization: Bearer <token>` with one of
  `TIDINGS_CODEC_TOKENS` (the CLI's `--codec-auth`, or an authenticating
  proxy in front of the UI that adds it);
- with `TIDINGS_CODEC_ALLOW_LOOPBACK_UI` (`tidings dev` only), a browser on
  this machine showing one of the listed UI origins: the dev UI has no login
  to take a token from. It is dev-only because on a server anything on the
  machine (every local user, and every request forwarded by a reverse proxy
  or sidecar) arrives from loopback, and a non-browser caller can claim any
  `Origin` it likes.

Anyone else gets a 401 (a 403 while no token is configured at all, saying
how to configure one; a 503 when payloads are not encrypted). Browsers get
CORS for the origins in `TIDINGS_CODEC_CORS_ORIGINS` only, and on these
routes only: the rest of the service (approvers' session cookies) stays
same-origin.
"""

# No `from __future__ import annotations`: FastAPI reads the routes'
# annotations at run time.
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from tidings.codec import EncryptionCodec, PayloadDecryptionError, PayloadKeyError, key_ring
from tidings.errors import TidingsError
from tidings.settings import Settings

log = structlog.get_logger(__name__)

CODEC_PATH = "/codec"
UI_HEADERS = ["Authorization", "Content-Type", "X-Namespace"]
"""What the Temporal UI's codec client sends (Authorization when it passes the user's token)."""
MIN_TOKEN_LENGTH = 32
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass(frozen=True)
class CodecAccess:
    """The codec server's keys and who it answers."""

    codec: EncryptionCodec | None = None
    """None: payloads are not encrypted, there is nothing to decode."""
    tokens: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    allow_loopback_ui: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "CodecAccess":
        """Raises TidingsError for a weak token or an origin that is not one."""
        ring = key_ring(settings)
        return cls(
            codec=EncryptionCodec(ring) if ring is not None else None,
            tokens=tuple(_checked_token(token) for token in settings.codec_tokens),
            cors_origins=tuple(_checked_origin(origin) for origin in settings.codec_cors_origins),
            allow_loopback_ui=settings.codec_allow_loopback_ui,
        )


def _checked_token(token: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise TidingsError(
            f"TIDINGS_CODEC_TOKENS: a token has {len(token)} characters; each needs at least "
            f"{MIN_TOKEN_LENGTH} (anyone who guesses one reads every payload); make one "
            f"with: {MAKE_TOKEN}"
        )
    return token


def _checked_origin(origin: str) -> str:
    origin = origin.rstrip("/")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise TidingsError(
            f"TIDINGS_CODEC_CORS_ORIGINS: {origin!r} is not an origin; list the Temporal UI's "
            'scheme, host and port, e.g. ["https://temporal.example.com"] (no `*`: any web '
            "page could then read decoded payloads with an operator's credentials)"
        )
    return origin


def codec_app(access: CodecAccess) -> FastAPI:
    """The codec routes as an app of their own, mounted at CODEC_PATH (its own CORS)."""
    app = FastAPI(title="tidings codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(access.cors_origins),
        allow_methods=["POST"],
        allow_headers=UI_HEADERS,
        # The UI's "include cross-origin credentials" sends an auth proxy's cookie.
        allow_credentials=True,
        max_age=600,
    )

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await _convert(request, access, "decode")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await _convert(request, access, "encode")

    return app


Convert = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


async def _convert(request: Request, access: CodecAccess, action: str) -> Response:
    caller = _caller(request, access)
    if access.codec is None:
        raise HTTPException(
            503,
            "payloads are not encrypted here (TIDINGS_PAYLOAD_KEYS is not set), so there is "
            "nothing to decode; set the workers' keys on this service too",
        )
    try:
        payloads = json_format.Parse(await request.body(), Payloads())
    except json_format.ParseError as err:
        raise HTTPException(
            400, f'expected {{"payloads": [...]}} with payloads in proto3 JSON: {err}'
        ) from None
    convert: Convert = access.codec.decode if action == "decode" else access.codec.encode
    try:
        converted = await convert(payloads.payloads)
    except (PayloadKeyError, PayloadDecryptionError) as err:
        raise HTTPException(422, str(err)) from None
    log.info(
        "codec",
        action=action,
        payloads=len(converted),
        namespace=request.headers.get("x-namespace", ""),
        caller=caller,
    )
    return Response(
        json_format.MessageToJson(Payloads(payloads=converted)), media_type="application/json"
    )


def _caller(request: Request, access: CodecAccess) -> str:
    """Who is asking, for the log; raises HTTPException for anyone not allowed."""
    if access.allow_loopback_ui and _from_loopback_ui(request, access):
        return "loopback UI"
    if not access.tokens:
        raise HTTPException(
            403,
            "the codec server decodes for nobody until TIDINGS_CODEC_TOKENS lists operator "
            f"tokens (make one with: {MAKE_TOKEN}); see README: Payload encryption",
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    number = _token_number(token.strip(), access.tokens) if scheme.lower() == "bearer" else None
    if number is None:
        raise HTTPException(
            401,
            "send `Authorization: Bearer <token>` with one of TIDINGS_CODEC_TOKENS",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return f"token #{number}"


def _token_number(token: str, tokens: Sequence[str]) -> int | None:
    """The position of `token` among `tokens` (1-based), in time independent of where or
    whether it matches: digests make every comparison equally long, and all are made."""
    digest = hashlib.sha256(token.encode()).digest()
    matches = [
        hmac.compare_digest(digest, hashlib.sha256(known.encode()).digest()) for known in tokens
    ]
    return matches.index(True) + 1 if any(matches) else None


def _from_loopback_ui(request: Request, access: CodecAccess) -> bool:
    """A browser on this machine showing a listed UI origin (browsers set Origin, so a
    page from anywhere else, a DNS-rebinding one included, is not taken for the UI)."""
    host = request.client.host if request.client is not None else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    return loopback and request.headers.get("origin", "") in access.cors_origins
