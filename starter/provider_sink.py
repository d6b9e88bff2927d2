"""A local stand-in for the SendGrid, SMS, push, chat and webhook vendors (`tidings dev`, tests).

It speaks each vendor's wire format, so the real providers run against it
unchanged with their base URL pointed here:

- Twilio: `POST /2010-04-01/Accounts/{sid}/Messages.json` (form, HTTP Basic auth
  whose user is the account SID), answering 201 with a message resource.
- Vonage: `POST /sms/json` (form or JSON; `to` digits only).
- FCM: `POST /token` (the service-account JWT grant; signatures are checked for
  the keys given to `create_sink_app`) and `POST /v1/projects/{p}/messages:send`
  (a bearer token this sink issued).
- Web Push: a local push service under `/webpush/` (see `push_service`): it
  issues subscriptions, checks VAPID and decrypts what it records.
- Slack: `POST /slack/{name}`; Teams: `POST /teams/{name}`; Standard Webhooks:
  `POST /webhooks/{name}` (signature checked when a secret is given).
- SendGrid: `POST /v3/mail/send` (v3 JSON, `Authorization: Bearer`), answering
  202 with an empty body and an `X-Message-Id` header. A request with several
  personalizations is recorded as one message per personalization, its subject
  and substitutions applied, as SendGrid sends them; Mail Send's limits hold
  (1,000 personalizations, each address once, 10,000 bytes of substitutions per
  personalization: 400; 30 MB: 413).

Every accepted message is appended as one JSON line to the record file:
`channel`, `provider`, `to`, `parts` (what a person would see), `payload` (the
wire body), `received_at`, `provider_id`. `read_records` reads them back.

Magic values make it fail the way the vendor does:

- Twilio `To` (its own test numbers): +15005550001 invalid (21211),
  +15005550002 unreachable (21612), +15005550003 no permission for the
  region (21408), +15005550004 replied STOP (21610), +15005550009 not a
  mobile number (21614).
- Vonage `to`: 15005550001 status 6 (unroutable), 15005550007 status 7
  (barred), 15005550033 status 33 (de-activated), 15005550429 status 1
  (throttled), 15005550500 status 5 (internal error): all HTTP 200, as Vonage does.
- FCM token: `unregistered` (404 UNREGISTERED), `invalid-token` (400
  INVALID_ARGUMENT), `sender-mismatch` (403 SENDER_ID_MISMATCH).
- Slack and Teams name `gone`: 404 (Slack `no_service`); Slack `archived`: 410
  `channel_is_archived`; Teams `legacy-429`: the old connector's 200 whose text
  reports a 429. Webhook name `gone`: 410.
- SendGrid: a bearer key not shaped `SG.…`, 401; a sender whose address starts `unverified@`,
  403 (not a verified Sender Identity); a recipient without `@`, a reserved
  header (To, From, Subject, Reply-To...), or content not led by text/plain:
  400 with SendGrid's `errors` list.
- Any HTTP status NNN, on any route: a base URL ending in `/fail/NNN` (the
  prefix is taken off before routing), `?fail=NNN`, an `X-Sink-Fail: NNN`
  header, an SMS number +15005550NNN (NNN 429 or 5xx), a token or name
  `fail-NNN`, or an email recipient `fail-NNN@...` (any one of a SendGrid
  request's). The answer is the vendor's error for that status; 429 and 503
  come with `Retry-After: 2`. A SendGrid recipient `once-NNN@...` fails its
  request with NNN the first time only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.activities.channels.fcm import GRANT_TYPE, SCOPE
from tidings.activities.channels.webhook import verify_standard_webhook
from tidings.starter.push_service import Subscriptions, web_push_routes

RETRY_AFTER = "2"
TWILIO_NUMBERS: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: {to}, is not currently reachable via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region "
                     "indicated by the 'To' number: {to}."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}  # fmt: skip
VONAGE_NUMBERS: dict[str, tuple[str, str]] = {
    "15005550001": ("6", "Unroutable message - rejected"),
    "15005550007": ("7", "Number barred."),
    "15005550033": ("33", "Number de-activated."),
    "15005550429": ("1", "Throughput Rate Exceeded - please wait [ 1 ] and retry"),
    "15005550500": ("5", "Internal Error"),
}
SENDGRID_RESERVED_HEADERS = frozenset(
    {"to", "from", "subject", "reply-to", "cc", "bcc", "content-type",
     "content-transfer-encoding", "received", "dkim-signature", "x-sg-id", "x-sg-eid"}
)  # fmt: skip
"""Headers the v3 API sets from its own fields, or SendGrid sets itself."""
SENDGRID_MAX_PERSONALIZATIONS = 1000
SENDGRID_SUBSTITUTION_BYTES = 10_000
SENDGRID_MAX_REQUEST_BYTES = 30_000_000
"""Mail Send's limits: personalizations (and recipients) a request, substitutions per
personalization, and the request's size."""
_FAIL_PREFIX = re.compile(r"/fail/(\d{3})(/.*)")
_FAIL_DESTINATION = re.compile(r"fail-(\d{3})|\+?15005550(429|5\d\d)")
_FAIL_ONCE = re.compile(r"once-(\d{3})")


@dataclass
class SinkState:
    """What tests may look at besides the record file."""

    record_path: Path
    service_account_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    webhook_secret: str | None = None
    issued_tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    sendgrid_requests: int = 0
    failed_once: set[str] = field(default_factory=set)
    """Recipients `once-NNN@...` already refused once (see the module docstring)."""

    def record(
        self, channel: str, provider: str, to: str, parts: object, payload: object, sid: str | None
    ) -> None:
        line = {
            "channel": channel,
            "provider": provider,
            "to": to,
            "parts": parts,
            "payload": payload,
            "received_at": datetime.now(UTC).isoformat(),
            "provider_id": sid,
        }
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        with self.record_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")


def read_records(record_path: Path, *, channel: str | None = None) -> list[dict[str, Any]]:
    """Accepted messages in arrival order; `channel` keeps those of one channel."""
    if not record_path.is_file():
        return []
    lines = record_path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if channel is None or r["channel"] == channel]


def create_sink_app(
    record_path: Path,
    *,
    service_account_keys: dict[str, str] | None = None,
    webhook_secret: str | None = None,
) -> FastAPI:
    """`service_account_keys`: client_email to public key PEM, for FCM JWTs to verify."""
    keys = {email: _public_key(pem) for email, pem in (service_account_keys or {}).items()}
    state = SinkState(record_path, keys, webhook_secret)
    app = FastAPI(title="tidings provider sink", openapi_url=None)
    app.state.sink = state
    app.add_middleware(_FailPrefix)
    _twilio_routes(app, state)
    _vonage_routes(app, state)
    _fcm_routes(app, state)
    _chat_routes(app, state)
    _sendgrid_routes(app, state)
    app.state.web_push = Subscriptions(record_path.with_name("webpush-subscriptions.json"))
    web_push_routes(app, state, app.state.web_push, _forced, _retry_headers)
    return app


class _FailPrefix:
    """`/fail/NNN/...` routes as `/...`, answering NNN: a base URL that always fails."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _FAIL_PREFIX.fullmatch(scope.get("path", "")) if scope["type"] == "http" else None
        if match is not None:
            path = match.group(2)
            state = {**scope.get("state", {}), "fail": int(match.group(1))}
            scope = {**scope, "path": path, "raw_path": path.encode(), "state": state}
        await self.app(scope, receive, send)


def _forced(request: Request, destination: str) -> int | None:
    """The failure a test asked for, if any (see the module docstring)."""
    if isinstance(getattr(request.state, "fail", None), int):
        return int(request.state.fail)
    asked = request.query_params.get("fail") or request.headers.get("x-sink-fail")
    if asked and asked.isdigit():
        return int(asked)
    match = _FAIL_DESTINATION.fullmatch(destination)
    return int(match.group(1) or match.group(2)) if match else None


def _retry_headers(status: int) -> dict[str, str]:
    return {"Retry-After": RETRY_AFTER} if status in (429, 503) else {}


def _twilio_routes(app: FastAPI, state: SinkState) -> None:
    def error(status: int, code: int, message: str) -> JSONResponse:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return JSONResponse(body, status_code=status, headers=_retry_headers(status))

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json")
    async def twilio_message(account_sid: str, request: Request) -> JSONResponse:
        if _basic_user(request) != account_sid:
            return error(401, 20003, "Authenticate")
        form = {key: str(value) for key, value in (await request.form()).items()}
        to, sender = form.get("To", ""), form.get("From") or form.get("MessagingServiceSid")
        forced = _forced(request, to)
        if forced == 429:
            return error(429, 20429, "Too Many Requests")
        if forced is not None:
            return error(forced, 20500, "An internal server error has occurred")
        if not to:
            return error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body"):
            return error(400, 21602, "Message body is required.")
        if to in TWILIO_NUMBERS:
            code, message = TWILIO_NUMBERS[to]
            return error(400, code, message.format(to=to))
        sid = "SM" + uuid.uuid4().hex
        state.record("sms", "twilio", to, {"text": form["Body"]}, form, sid)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued",
                "direction": "outbound-api",
                "num_segments": "1",
                "date_created": now,
                "date_updated": now,
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            },
            status_code=201,
        )


def _basic_user(request: Request) -> str | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if password else None


def _vonage_routes(app: FastAPI, state: SinkState) -> None:
    def answer(status: str, text: str = "", **extra: str) -> JSONResponse:
        message = {"status": status, **({"error-text": text} if text else {}), **extra}
        return JSONResponse({"message-count": "1", "messages": [message]})

    @app.post("/sms/json")
    async def vonage_sms(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            params = {key: str(value) for key, value in (await request.json()).items()}
        else:
            params = {key: str(value) for key, value in (await request.form()).items()}
        to = params.get("to", "")
        forced = _forced(request, "") if to not in VONAGE_NUMBERS else None
        if forced is not None:
            return PlainTextResponse("error", status_code=forced, headers=_retry_headers(forced))
        missing = [k for k in ("api_key", "api_secret", "from", "to", "text") if not params.get(k)]
        if missing:
            return answer("2", f"Missing {', '.join(missing)}")
        if not to.isdigit():
            return answer("3", "Invalid to address: use digits only, in international format")
        if to in VONAGE_NUMBERS:
            return answer(*VONAGE_NUMBERS[to])
        message_id = uuid.uuid4().hex[:16].upper()
        state.record("sms", "vonage", to, {"text": params["text"]}, params, message_id)
        return answer("0", **{"to": to, "message-id": message_id, "remaining-balance": "10.0"})


def _fcm_routes(app: FastAPI, state: SinkState) -> None:
    def error(status: int, google_status: str, message: str, code: str | None) -> JSONResponse:
        body: dict[str, Any] = {"code": status, "message": message, "status": google_status}
        if code is not None:
            body["details"] = [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ]
        return JSONResponse({"error": body}, status_code=status, headers=_retry_headers(status))

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        state.token_requests += 1
        forced = _forced(request, "")
        if forced is not None:
            body = {"error": "internal_failure", "error_description": "Backend Error"}
            return JSONResponse(body, status_code=forced, headers=_retry_headers(forced))
        form = await request.form()
        if form.get("grant_type") != GRANT_TYPE:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        problem = _check_assertion(str(form.get("assertion", "")), state.service_account_keys)
        if problem is not None:
            body = {"error": "invalid_grant", "error_description": problem}
            return JSONResponse(body, status_code=400)
        access_token = "ya29.sink-" + uuid.uuid4().hex
        state.issued_tokens.add(access_token)
        return JSONResponse(
            {"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}
        )

    @app.post("/v1/projects/{project}/messages:send")
    async def fcm_send(project: str, request: Request) -> JSONResponse:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in state.issued_tokens:
            text = "Request had invalid authentication credentials."
            return error(401, "UNAUTHENTICATED", text, None)
        message = (await request.json()).get("message", {})
        push_token = str(message.get("token", ""))
        forced = _forced(request, push_token)
        if forced is not None:
            code = "QUOTA_EXCEEDED" if forced == 429 else "UNAVAILABLE"
            return error(forced, "RESOURCE_EXHAUSTED" if forced == 429 else code, code, code)
        if push_token == "unregistered":
            return error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if push_token == "sender-mismatch":
            return error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        if not push_token or push_token == "invalid-token":
            text = "The registration token is not a valid FCM registration token"
            return error(400, "INVALID_ARGUMENT", text, "INVALID_ARGUMENT")
        data = message.get("data", {})
        if not all(isinstance(value, str) for value in data.values()):
            text = "Invalid value at 'message.data': values must be strings"
            return error(400, "INVALID_ARGUMENT", text, "INVALID_ARGUMENT")
        name = f"projects/{project}/messages/0:{time.time_ns()}%{uuid.uuid4().hex[:16]}"
        parts = {**message.get("notification", {}), **data}
        state.record("push", "fcm", push_token, parts, message, name)
        return JSONResponse({"name": name})


def _check_assertion(assertion: str, keys: dict[str, rsa.RSAPublicKey]) -> str | None:
    """What Google would refuse in a service account's JWT, or None."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header, claims = json.loads(_unb64url(header_b64)), json.loads(_unb64url(claims_b64))
    except ValueError:
        return "Invalid JWT: not a compact JWS"
    if header.get("alg") != "RS256":
        return "Invalid JWT: the algorithm must be RS256"
    now = time.time()
    if SCOPE not in str(claims.get("scope", "")).split():
        return f"Invalid JWT: the scope must include {SCOPE}"
    if not str(claims.get("aud", "")).endswith("/token"):
        return "Invalid JWT: aud must be the token URL"
    if not (claims.get("iat", 0) - 300 <= now < claims.get("exp", 0) <= now + 3600 + 300):
        return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
    key = keys.get(str(claims.get("iss")))
    if key is not None:
        try:
            key.verify(
                _unb64url(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return "Invalid JWT Signature."
    return None


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as err:
        raise ValueError(str(err)) from err


def _public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("service account keys are RSA")
    return key


def _chat_routes(app: FastAPI, state: SinkState) -> None:
    @app.post("/slack/{name}")
    async def slack(name: str, request: Request) -> PlainTextResponse:
        forced = _forced(request, name)
        if forced is not None:
            word = "rate_limited" if forced == 429 else "internal_error"
            return PlainTextResponse(word, status_code=forced, headers=_retry_headers(forced))
        if name in ("gone", "archived"):
            status, word = (404, "no_service") if name == "gone" else (410, "channel_is_archived")
            return PlainTextResponse(word, status_code=status)
        payload = await request.json()
        blocks = payload.get("blocks")
        if not payload.get("text") and not blocks:
            return PlainTextResponse("no_text", status_code=400)
        valid = isinstance(blocks, list) and all(
            isinstance(b, dict) and "type" in b for b in blocks
        )
        if blocks is not None and not valid:
            return PlainTextResponse("invalid_blocks", status_code=400)
        parts = {"text": payload.get("text", ""), **({"blocks": blocks} if blocks else {})}
        state.record("chat", "slack", name, parts, payload, None)
        return PlainTextResponse("ok")

    @app.post("/teams/{name}")
    async def teams(name: str, request: Request) -> Response:
        forced = _forced(request, name)
        if forced is not None:
            return PlainTextResponse("error", status_code=forced, headers=_retry_headers(forced))
        if name == "gone":
            return PlainTextResponse("Not Found", status_code=404)
        if name == "legacy-429":
            text = "Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0"
            return PlainTextResponse(text)
        payload = await request.json()
        attachments = payload.get("attachments")
        if payload.get("type") != "message" or not attachments:
            return PlainTextResponse("Bad payload received by generic incoming webhook.", 400)
        texts = [
            block.get("text", "")
            for attachment in attachments
            for block in attachment.get("content", {}).get("body", [])
            if block.get("type") == "TextBlock"
        ]
        state.record("chat", "teams", name, {"text": "\n".join(texts)}, payload, None)
        return Response(status_code=202)

    @app.post("/webhooks/{name}")
    async def webhook(name: str, request: Request) -> Response:
        forced = _forced(request, name)
        if forced is not None:
            return PlainTextResponse("error", status_code=forced, headers=_retry_headers(forced))
        if name == "gone":
            return PlainTextResponse("Gone", status_code=410)
        body = await request.body()
        headers = dict(request.headers)
        if not all(
            headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ):
            return PlainTextResponse("missing Standard Webhooks headers", status_code=400)
        secret = state.webhook_secret
        if secret is not None and not verify_standard_webhook(secret, headers, body):
            return PlainTextResponse("invalid signature", status_code=401)
        payload = json.loads(body)
        parts = payload.get("parts", payload) if isinstance(payload, dict) else payload
        state.record("webhook", "webhook", name, parts, payload, headers["webhook-id"])
        return Response(status_code=204)


def _sendgrid_routes(app: FastAPI, state: SinkState) -> None:
    def error(status: int, message: str, field: str | None = None) -> JSONResponse:
        body = {"errors": [{"message": message, "field": field, "help": None}]}
        return JSONResponse(body, status_code=status, headers=_retry_headers(status))

    @app.post("/v3/mail/send")
    async def sendgrid_send(request: Request) -> Response:
        state.sendgrid_requests += 1
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.startswith("SG."):
            return error(401, "The provided authorization grant is invalid, expired, or revoked")
        raw = await request.body()
        if len(raw) >= SENDGRID_MAX_REQUEST_BYTES:
            return error(413, "The JSON payload you have included in your request is too large.")
        payload = json.loads(raw)
        personalizations = [p for p in payload.get("personalizations") or [] if isinstance(p, dict)]
        recipients = [
            str(to.get("email", ""))
            for personalization in personalizations
            for to in personalization.get("to") or []
        ]
        forced = _sendgrid_forced_status(request, recipients, state)
        if forced is not None:
            return _sendgrid_forced(forced, error)
        problem = _sendgrid_problem(payload, personalizations, recipients)
        if problem is not None:
            return error(*problem)
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # One message per personalization, as SendGrid sends them; each record keeps
        # the request with its own personalization only (a batch's whole body in every
        # record would grow with the square of its size).
        for personalization in personalizations:
            own = (
                payload
                if len(personalizations) == 1
                else {
                    **payload,
                    "personalizations": [personalization],
                }
            )
            to = str(personalization["to"][0]["email"])
            parts = _sendgrid_parts(payload, personalization)
            state.record("email", "sendgrid", to, parts, own, message_id)
        return Response(status_code=202, headers={"X-Message-Id": message_id})


def _sendgrid_forced_status(
    request: Request, recipients: list[str], state: SinkState
) -> int | None:
    """A failure asked for by the request or by any recipient (`fail-NNN@`), or the
    first time the sink sees a recipient `once-NNN@` (answered normally afterwards)."""
    local_parts = [address.partition("@")[0] for address in recipients]
    for local_part in local_parts or [""]:
        forced = _forced(request, local_part)
        if forced is not None:
            return forced
    first_time = [
        (address, match)
        for address, local_part in zip(recipients, local_parts, strict=True)
        if (match := _FAIL_ONCE.fullmatch(local_part)) and address not in state.failed_once
    ]
    if not first_time:
        return None
    state.failed_once.update(address for address, _ in first_time)
    return int(first_time[0][1].group(1))


def _sendgrid_parts(payload: dict[str, Any], personalization: dict[str, Any]) -> dict[str, str]:
    """What the personalization's recipient sees: its subject and the content, with its
    substitutions made (in one pass, as SendGrid makes them)."""
    substitutions = {
        str(k): str(v) for k, v in (personalization.get("substitutions") or {}).items()
    }
    pattern = re.compile(
        "|".join(re.escape(tag) for tag in sorted(substitutions, key=len, reverse=True))
    )

    def filled(text: str) -> str:
        return pattern.sub(lambda m: substitutions[m.group(0)], text) if substitutions else text

    content = {part.get("type"): str(part.get("value", "")) for part in payload["content"]}
    parts = {
        "subject": filled(str(personalization.get("subject") or payload.get("subject", ""))),
        "text": filled(content.get("text/plain", "")),
    }
    if "text/html" in content:
        parts["html"] = filled(content["text/html"])
    return parts


def _sendgrid_forced(status: int, error: Callable[[int, str], JSONResponse]) -> JSONResponse:
    """SendGrid's error for a forced status; its rate limits also name the reset time."""
    if status != 429:
        return error(status, "internal error" if status >= 500 else "forced failure")
    answer = error(429, "too many requests")
    answer.headers.update(
        {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + int(RETRY_AFTER)),
        }
    )
    return answer


def _sendgrid_problem(
    payload: dict[str, Any], personalizations: list[dict[str, Any]], recipients: list[str]
) -> tuple[int, str, str] | None:
    """What SendGrid would refuse with 400 (or 403 for the sender), or None; the words
    are those of its Mail Send error list."""
    sender = payload.get("from") or {}
    if not sender.get("email"):
        return 400, "The from object must be provided for every email send.", "from.email"
    if str(sender["email"]).startswith("unverified@"):
        message = (
            "The from address does not match a verified Sender Identity. Mail cannot be "
            "sent until this error is resolved."
        )
        return 403, message, "from"
    if not personalizations:
        return 400, "The personalizations field is required.", "personalizations"
    if len(personalizations) > SENDGRID_MAX_PERSONALIZATIONS:
        message = (
            f"The personalization block is limited to {SENDGRID_MAX_PERSONALIZATIONS} "
            f"personalizations per API request. You have provided {len(personalizations)} "
            "personalizations. Please consider splitting this into multiple requests and "
            "resending your request."
        )
        return 400, message, "personalizations"
    if len(recipients) > SENDGRID_MAX_PERSONALIZATIONS:
        message = "There is a limit of 1000 total recipients (to + cc + bcc) per request."
        return 400, message, "personalizations"
    seen: set[str] = set()
    for index, personalization in enumerate(personalizations):
        problem = _personalization_problem(payload, personalization, index, seen)
        if problem is not None:
            return problem
    types = [part.get("type") for part in payload.get("content") or []]
    if not types:
        return 400, "The content parameter is required.", "content"
    if "text/plain" in types and types[0] != "text/plain":
        return 400, "The text/plain content type must be first.", "content.0.type"
    return _reserved_header(payload.get("headers"), "headers")


def _personalization_problem(
    payload: dict[str, Any], personalization: dict[str, Any], index: int, seen: set[str]
) -> tuple[int, str, str] | None:
    where = f"personalizations.{index}"
    recipients = personalization.get("to") or []
    if not recipients:
        message = (
            "The to parameter is required for all personalization objects, and must have "
            "at least one email object with a valid email address."
        )
        return 400, message, f"{where}.to"
    for number, recipient in enumerate(recipients):
        address = str(recipient.get("email", ""))
        if "@" not in address:
            return 400, "Does not contain a valid address.", f"{where}.to.{number}.email"
        if address.lower() in seen:
            message = (
                "Each unique email address in the personalizations array should only be "
                f"included once. You have included {address} more than once."
            )
            return 400, message, f"{where}.to.{number}.email"
        seen.add(address.lower())
    if not (personalization.get("subject") or payload.get("subject")):
        return 400, "The subject is required.", "subject"
    substitutions = personalization.get("substitutions") or {}
    if not all(isinstance(value, str) for value in substitutions.values()):
        return 400, "Substitution values must be strings.", f"{where}.substitutions"
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in substitutions.items())
    if size > SENDGRID_SUBSTITUTION_BYTES:
        message = (
            f"The total size of a personalization's substitutions may not exceed "
            f"{SENDGRID_SUBSTITUTION_BYTES} bytes; this one has {size}."
        )
        return 400, message, f"{where}.substitutions"
    return _reserved_header(personalization.get("headers"), f"{where}.headers")


def _reserved_header(headers: object, field: str) -> tuple[int, str, str] | None:
    for name in headers if isinstance(headers, dict) else {}:
        if name.lower() in SENDGRID_RESERVED_HEADERS:
            return 400, f"The header {name} is reserved and cannot be set.", field
    return None
