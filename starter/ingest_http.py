"""The HTTP event API: Segment's tracking API (`POST /v1/batch`, `/v1/identify`,
`/v1/track`, `/v1/alias`, `/v1/page`, `/v1/screen`, `/v1/group`) over the ingest queue.

Each request is checked whole (write key, size, JSON, every field of every
message) before anything is written; then its messages are written to the
ingest queue in one transaction and the answer is 200. Routing them into
journeys happens afterwards (`starter/ingest_router.py`), so the API keeps
accepting while Temporal is unreachable. Errors are Segment-shaped JSON
(`{"success": false, "code": ..., "message": ...}`), the message naming the
field, e.g. `batch[3].properties: ...`.
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from tidings.db import ingest_queue
from tidings.db.engine import Database
from tidings.models.contact import phone_context
from tidings.models.ingest import MESSAGE_TYPES, Batch, stream_of, to_queued
from tidings.settings import Settings
from tidings.starter.write_keys import (
    RateLimits,
    WriteKey,
    WriteKeys,
    basic_auth_user,
    parse_write_keys,
)

log = structlog.get_logger(__name__)

INGEST_PATH = "/v1"
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
"""Segment's own limits, so a client tuned for Segment never meets a surprise here."""
MAX_LISTED_PROBLEMS = 10


class ApiError(BaseModel):
    """Every refusal, shaped like Segment's (its libraries read `code` and `message`)."""

    success: bool = False
    code: str
    message: str
    errors: list[dict[str, str]] = []
    """Each invalid field and what is wrong with it (400 only)."""


class Accepted(BaseModel):
    success: bool = True


class Refused(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = ApiError(code=code, message=message, errors=errors or [])


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class IngestApi:
    """What the endpoints need: the queue, the keys, the limits, and whom to wake."""

    database: Database
    keys: WriteKeys
    limits: RateLimits = field(default_factory=RateLimits)
    on_accepted: Callable[[], None] = lambda: None
    """Called after each accepted request (wakes the router in this process)."""
    clock: Callable[[], datetime] = _now
    phone_region: str = ""
    """Where phone numbers written without + are read (TIDINGS_DEFAULT_PHONE_REGION)."""

    @classmethod
    def from_settings(cls, settings: Settings, database: Database) -> IngestApi:
        keys = parse_write_keys(settings.write_keys, default_rate=settings.ingest_rate_limit)
        return cls(
            database=database, keys=WriteKeys(keys), phone_region=settings.default_phone_region
        )

    async def accept(self, request: Request, kind: str | None) -> int:
        """Queue the request's messages (`kind` None: a batch); how many were new."""
        key = self._authenticate(request)
        limit = MAX_BATCH_BYTES if kind is None else MAX_MESSAGE_BYTES
        data = _parse(await _read_body(request, limit))
        messages, sent_at = _validate(data, kind, phone_context(self.phone_region))
        wait = self.limits.take(key, len(messages))
        if wait > 0:
            raise Refused(
                429,
                "rate_limited",
                f"write key {key.name!r} is limited to {key.rate:g} messages per second; "
                "retry after the Retry-After header's seconds",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        now = self.clock()
        new = []
        for message in messages:
            message_id = message.message_id or uuid.uuid4().hex
            queued = to_queued(
                message,
                key_name=key.name,
                message_id=message_id,
                received_at=now,
                sent_at=sent_at,
            )
            new.append(
                ingest_queue.NewMessage(
                    message_id=message_id,
                    kind=queued.kind,
                    stream=stream_of(queued),
                    payload=queued.model_dump(mode="json"),
                )
            )
        added = await self.database.run(
            lambda session: ingest_queue.enqueue(
                session=session, write_key=key.name, messages=new, now=now
            )
        )
        if added:
            self.on_accepted()
        return added

    def _authenticate(self, request: Request) -> WriteKey:
        presented = basic_auth_user(request.headers.get("authorization"))
        challenge = {"WWW-Authenticate": 'Basic realm="tidings events"'}
        if not self.keys.keys:
            raise Refused(
                401,
                "unauthorized",
                "the HTTP event API has no write keys; set TIDINGS_WRITE_KEYS=name:key "
                "(tidings dev makes one and prints it)",
                headers=challenge,
            )
        if presented is None:
            raise Refused(
                401,
                "unauthorized",
                "no write key: send it as the username of HTTP Basic auth with an empty "
                "password (curl -u KEY:), as Segment's libraries do",
                headers=challenge,
            )
        key = self.keys.find(presented)
        if key is None:
            raise Refused(
                401,
                "unauthorized",
                "this write key is not valid; use one configured in TIDINGS_WRITE_KEYS",
                headers=challenge,
            )
        return key


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is over `limit` (also once gunzipped)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return bytes(body)
    if encoding != "gzip":
        raise Refused(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send gzip or none"
        )
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflate.decompress(bytes(body), limit + 1)
    except zlib.error as err:
        raise Refused(400, "invalid_request", f"the body is not valid gzip ({err})") from None
    if len(data) > limit or inflate.unconsumed_tail:
        raise _too_large(limit)
    return data


def _too_large(limit: int) -> Refused:
    if limit == MAX_MESSAGE_BYTES:
        return Refused(
            413,
            "request_too_large",
            f"the message is over {limit // 1024} KB, the limit per message; send ids and "
            "look details up in templates instead of whole documents",
        )
    return Refused(
        413,
        "request_too_large",
        f"the batch is over {limit // 1024} KB, the limit per request; send fewer "
        "messages per batch",
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise Refused(
            400,
            "invalid_json",
            f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}",
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(400, "invalid_json", f"malformed JSON: {err}") from None


def _validate(
    data: Any, kind: str | None, context: dict[str, str]
) -> tuple[list[Any], datetime | None]:
    """The request's messages and its sentAt, or one 400 listing every invalid field."""
    if not isinstance(data, dict):
        raise Refused(400, "invalid_request", "the body must be a JSON object")
    if kind is None:
        _check_message_sizes(data)
        try:
            batch = Batch.model_validate(data, context=context)
        except ValidationError as err:
            raise _invalid(err, kind) from None
        return list(batch.batch), batch.sent_at
    stated = data.setdefault("type", kind)
    if stated != kind:
        raise Refused(
            400,
            "invalid_request",
            f"type: {stated!r} sent to /v1/{kind}; send {kind} messages here, or any "
            "kind in a batch to /v1/batch",
            errors=[{"field": "type", "message": f"must be {kind!r}"}],
        )
    try:
        message = MESSAGE_TYPES[kind].model_validate(data, context=context)
    except ValidationError as err:
        raise _invalid(err, kind) from None
    return [message], message.sent_at


def _check_message_sizes(data: dict[str, Any]) -> None:
    messages = data.get("batch")
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_MESSAGE_BYTES:
            raise Refused(
                413,
                "request_too_large",
                f"batch[{index}] is {size} bytes; the limit per message is "
                f"{MAX_MESSAGE_BYTES // 1024} KB. Send ids and look details up in templates "
                "instead of whole documents",
            )


def _invalid(err: ValidationError, kind: str | None) -> Refused:
    problems = [_problem(error, kind) for error in err.errors()]
    listed = [f"{p['field']}: {p['message']}" for p in problems[:MAX_LISTED_PROBLEMS]]
    more = len(problems) - len(listed)
    message = "; ".join(listed) + (f"; and {more} more" if more > 0 else "")
    return Refused(400, "invalid_request", message, errors=problems)


def _problem(error: Any, kind: str | None) -> dict[str, str]:
    path = ""
    model = "batch" if kind is None else kind
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in MESSAGE_TYPES and path.endswith("]"):
            model = str(part)  # the union's tag, not a field
        else:
            path += f".{part}" if path else str(part)
    return {"field": path or "body", "message": _explain(error, model)}


def _explain(error: Any, model: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        fields = (Batch if model == "batch" else MESSAGE_TYPES[model]).model_fields
        names = sorted(info.alias or name for name, info in fields.items())
        return f"unknown field; a {model} takes {', '.join(names)}"
    if kind == "missing":
        return "required"
    if kind == "union_tag_invalid":
        return f"type {error['input'].get('type')!r} is not one of {', '.join(MESSAGE_TYPES)}"
    if kind == "union_tag_not_found":
        return f"type is required: one of {', '.join(MESSAGE_TYPES)}"
    if kind == "timezone_aware":
        return "needs a time zone, like 2026-01-31T09:00:00Z or +01:00"
    return str(error["msg"]).removeprefix("Value error, ")


def _endpoint(api: IngestApi, kind: str | None) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> JSONResponse:
        try:
            await api.accept(request, kind)
        except Refused as refused:
            log.info("ingest refused", status=refused.status, code=refused.body.code)
            return JSONResponse(
                refused.body.model_dump(), status_code=refused.status, headers=refused.headers
            )
        return JSONResponse(Accepted().model_dump())

    return endpoint


_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": ApiError, "description": description}
    for status, description in (
        (400, "Malformed JSON, or invalid fields (each named); nothing was queued"),
        (401, "No write key, or not a valid one"),
        (413, "Over 32 KB per message or 500 KB per batch"),
        (429, "Over the write key's rate; see Retry-After"),
    )
}


def _schemas() -> dict[str, Any]:
    """The request bodies' JSON schemas for the OpenAPI document (the endpoints read
    their bodies themselves, to check sizes and name fields the way Segment users expect)."""
    found: dict[str, Any] = {}
    models: list[type[BaseModel]] = [Batch, *MESSAGE_TYPES.values()]
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _body(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def install_ingest(app: FastAPI, api: IngestApi) -> None:
    """Serve the API on `app`, its body schemas in `app`'s OpenAPI document."""
    router = APIRouter(prefix=INGEST_PATH, tags=["events (Segment-compatible)"])
    router.add_api_route(
        "/batch",
        _endpoint(api, None),
        methods=["POST"],
        name="ingest_batch",
        summary="Any mix of identify, track, alias, page, screen and group messages",
        response_model=Accepted,
        responses=_REFUSALS,
        openapi_extra=_body(Batch.__name__),
    )
    for kind, model in MESSAGE_TYPES.items():
        router.add_api_route(
            f"/{kind}",
            _endpoint(api, kind),
            methods=["POST"],
            name=f"ingest_{kind}",
            summary=f"One {kind} message",
            response_model=Accepted,
            responses=_REFUSALS,
            openapi_extra=_body(model.__name__),
        )
    app.include_router(router)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = plain_openapi()  # cached by FastAPI as app.openapi_schema
        document.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
        return document

    app.openapi = openapi  # type: ignore[method-assign]
