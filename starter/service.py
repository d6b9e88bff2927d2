"""The HTTP service (`tidings serve`; `tidings dev` runs it too).

It serves the in-app inbox to contacts' apps (`starter/inbox_http.py`),
provider callbacks (`starter/callbacks_http.py`), the approvers' web inbox
under /approvals (`starter/approver_web.py`), the codec server the Temporal
UI decodes payloads through under /codec (`starter/codec_http.py`), and the
unsubscribe links in marketing email:

- `GET /unsubscribe/{token}`: a page that offers to leave the message's
  topic or all marketing email. It shows no address or name: a forwarded
  message must not reveal whose link it is.
- `POST /unsubscribe/{token}`: the form's answer, or the RFC 8058 one-click
  request a mailbox provider sends by itself (`List-Unsubscribe=One-Click`),
  which revokes marketing email consent in the ledger at once.

A link whose token does not verify gets a 400 page saying what to do; a link
for a contact that no longer exists gets the same success page as anyone
else (nothing to unsubscribe, and nothing to learn from the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from html import escape
from typing import Annotated

import structlog
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse
from uvicorn import Config, Server

from tidings.catalog import Catalog, load_policy
from tidings.connection import connect
from tidings.content.files import load_library
from tidings.content.unsubscribe import UnsubscribeRequest, read_token
from tidings.db.engine import Database
from tidings.directory import load_directory
from tidings.errors import TidingsError, UnknownContactError
from tidings.settings import Settings
from tidings.starter.approval_admin import ApprovalAdmin
from tidings.starter.approver_web import approver_router
from tidings.starter.callbacks_http import callbacks_router
from tidings.starter.client import TidingsClient
from tidings.starter.codec_http import CODEC_PATH, CodecAccess, codec_app
from tidings.starter.inbox_http import inbox_router
from tidings.starter.ingest_http import IngestApi, install_ingest
from tidings.starter.ingest_router import IngestRouter, running_router
from tidings.starter.policy_admin import PolicyAdmin
from tidings.starter.ports import port_in_use

log = structlog.get_logger(__name__)

ONE_CLICK = "One-Click"
SOURCE = "unsubscribe-link"

INVALID_LINK = (
    "This unsubscribe link is not valid: it may have been cut short or changed on the "
    "way. Open the link from the email again (the whole of it), or reply to the email "
    "and ask to be unsubscribed."
)


def create_app(
    *,
    database: Database,
    secret_key: str,
    company: str,
    sms_help_text: str,
    twilio_auth_token: str = "",
    public_url: str = "",
    sendgrid_public_key: str = "",
    approvals: ApprovalAdmin | None = None,
    codec: CodecAccess | None = None,
    ingest: IngestApi | None = None,
) -> FastAPI:
    """`approvals`: serve the approvers' web inbox under /approvals (not mounted without).
    `codec`: the codec server's keys and callers (without, /codec answers that it is off).
    `ingest`: serve the HTTP event API under /v1 (starter/ingest_http.py)."""
    app = FastAPI(title="tidings", summary="Durable customer journeys on Temporal")
    app.mount(CODEC_PATH, codec_app(codec or CodecAccess()))
    admin = PolicyAdmin(database, sms_help_text=sms_help_text)
    app.include_router(inbox_router(database, secret_key))
    if ingest is not None:
        install_ingest(app, ingest)
    if approvals is not None:
        app.include_router(approver_router(approvals, secret_key=secret_key, public_url=public_url))
    app.include_router(
        callbacks_router(
            database=database,
            admin=admin,
            twilio_auth_token=twilio_auth_token,
            public_url=public_url,
            sendgrid_public_key=sendgrid_public_key,
        )
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        request = read_token(secret_key, token)
        if request is None:
            return _page("Link not valid", INVALID_LINK, status=400)
        topic = escape(request.topic.replace("-", " "))
        return _page(
            f"Unsubscribe from {escape(company)} email",
            f"""
            <form method="post">
              <p><button name="scope" value="topic">Stop emails about {topic}</button></p>
              <p><button name="scope" value="all">Stop all marketing email</button></p>
            </form>
            <p class="note">Messages you need about your account (receipts, security
            notices) keep coming.</p>
            """,
        )

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe(
        token: str,
        http: Request,
        scope: Annotated[str | None, Form()] = None,
        list_unsubscribe: Annotated[str | None, Form(alias="List-Unsubscribe")] = None,
    ) -> HTMLResponse:
        request = read_token(secret_key, token)
        if request is None:
            return _page("Link not valid", INVALID_LINK, status=400)
        one_click = list_unsubscribe == ONE_CLICK
        if not one_click and scope not in ("topic", "all"):
            return _page(
                "Choose what to stop",
                "Send scope=topic or scope=all (the form on this page), or the one-click "
                "body List-Unsubscribe=One-Click.",
                status=400,
            )
        user_agent = http.headers.get("user-agent", "")[:200]
        whole = one_click or scope == "all"
        try:
            via = "one-click" if one_click else "page"
            await _apply(admin, request, whole=whole, via=via, user_agent=user_agent)
        except UnknownContactError:
            log.info("unsubscribe for an unknown contact", template=request.template)
        what = "marketing email" if whole else f"email about {request.topic.replace('-', ' ')}"
        return _page("You are unsubscribed", f"You will get no more {escape(what)} from us.")

    return app


async def _apply(
    admin: PolicyAdmin, request: UnsubscribeRequest, *, whole: bool, via: str, user_agent: str
) -> None:
    if whole:
        await admin.revoke(
            request.contact_key,
            channel="email",
            source=SOURCE,
            purpose="marketing",
            proof={"template": request.template, "via": via, "user_agent": user_agent},
        )
    else:
        await admin.set_preference(
            request.contact_key, channel="email", topic=request.topic, subscribed=False
        )
    log.info("unsubscribed", contact_key=request.contact_key, whole=whole, via=via)


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1rem}} .note{{color:#666}}</style>
</head><body><h1>{title}</h1>{body}</body></html>""",
        status_code=status,
    )


async def serve_forever(settings: Settings, *, host: str, port: int, stop: asyncio.Event) -> None:
    """`tidings serve`: the service over the configured database, until `stop` is set."""
    # With the audit key: routing accepted events may merge contacts, which is audited.
    database = Database.for_settings(settings)
    try:
        library = load_library(settings.templates_dir)
        policy = load_policy(settings.policy_file)
        # Lazy: the service starts without Temporal; approvers' decisions connect, and
        # accepted events wait in the ingest queue until it can be reached.
        temporal = await connect(settings, lazy=True)
        approvals = ApprovalAdmin(database, load_directory(settings.directory_file), temporal)
        client = TidingsClient(
            temporal=temporal,
            database=database,
            catalog=Catalog.from_settings(settings),
            settings=settings,
        )
        router = IngestRouter(database, client)
        ingest = IngestApi.from_settings(settings, database)
        ingest.on_accepted = router.wake
        app = create_app(
            database=database,
            secret_key=settings.signing_key(),
            company=library.brand.company,
            sms_help_text=policy.sms_help_text,
            twilio_auth_token=settings.twilio_auth_token,
            public_url=settings.public_url,
            sendgrid_public_key=settings.sendgrid_webhook_key,
            approvals=approvals,
            codec=CodecAccess.from_settings(settings),
            ingest=ingest,
        )
        async with running_router(router), running_service(app, host=host, port=port):
            await stop.wait()
    finally:
        database.dispose()


class _Server(Server):
    """uvicorn without its signal handlers: the process that embeds it owns Ctrl-C."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def running_service(app: FastAPI, *, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    # Checked first: uvicorn answers a port in use with sys.exit, which would
    # stop the whole event loop, not just this service.
    if port_in_use(port, host):
        raise TidingsError(
            f"port {port} for the HTTP service is in use; stop what holds it or choose "
            "another with --http-port (TIDINGS_HTTP_PORT)"
        )
    server = _Server(Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise TidingsError(f"the HTTP service stopped while starting on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
