"""`python worker.py`: the tidings worker, connected to Temporal through envconfig.

Runs the journey workflows (with their local activities) on one task queue
and the email send activity on the email queue, so a cluster can rate-limit
the provider's queue on the server side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypedDict

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tidings import naming
from tidings.activities.approvals import ApprovalDesk
from tidings.activities.channels import EmailProvider
from tidings.activities.channels.registry import channel_providers, email_providers
from tidings.activities.channels.relay_record import smtp_records
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.activities.compose import Composer
from tidings.activities.contacts import ContactReader
from tidings.activities.escalations import EscalationDesk, StaffNotifier
from tidings.activities.journal import JourneyJournal
from tidings.activities.policy import PolicyGate
from tidings.activities.receipts import Receipts
from tidings.activities.send import MessageSender
from tidings.catalog import Catalog
from tidings.codec import key_ring
from tidings.connection import connect, create_commands, missing_search_attributes
from tidings.content.files import Brand
from tidings.content.lint import load_compliance
from tidings.content.lookups import LookupClient
from tidings.db.engine import Database
from tidings.directory import load_directory
from tidings.errors import TidingsError
from tidings.logs import ActivityLogContext, configure_logging
from tidings.settings import Settings
from tidings.telemetry import worker_metrics
from tidings.workflows.approval import ApprovalGateWorkflow
from tidings.workflows.escalation import EscalationWorkflow
from tidings.workflows.journey import JourneyWorkflow

log = structlog.get_logger(__name__)

LOCAL_ACTIVITY_THREADS = 16
SEND_THREADS = 32
CHANNEL_THREADS = 8


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The default sandbox with two deliberate openings.

    jinja2 is passed through: branch conditions compile jinja2 expressions,
    whose generated code imports jinja2 modules lazily. zoneinfo.ZoneInfo is
    unrestricted: the default proxies its instances (to guard `clear_cache`
    and friends, which tidings never calls), and datetime refuses proxied
    tzinfo objects; time-zone math is pure given the installed tzdata.
    """
    default = SandboxRestrictions.default
    restrictions = dataclasses.replace(
        default,
        invalid_module_members=default.invalid_module_members.with_child_unrestricted("zoneinfo"),
    ).with_passthrough_modules("jinja2", "markupsafe")
    return SandboxedWorkflowRunner(restrictions=restrictions)


def smtp_provider(settings: Settings) -> SmtpProvider:
    return SmtpProvider(
        SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_seconds=settings.smtp_timeout_seconds,
        )
    )


def composer(settings: Settings, brand: Brand) -> Composer:
    """What renders messages, for the worker and for previews alike."""
    return Composer(
        brand=brand,
        compliance=load_compliance(settings.compliance_file),
        lookups=LookupClient(),
        public_url=settings.public_url,
        secret_key=settings.signing_key(),
        allow_drafts=settings.send_drafts,
        default_timezone=settings.default_timezone,
    )


class RateLimits(TypedDict):
    max_task_queue_activities_per_second: float | None
    max_activities_per_second: float | None


def rate_limits(settings: Settings, channel: str) -> RateLimits:
    """A channel's send rate, held by the server for all workers and by this one.

    The server's limit is the one that holds across workers, but after a
    quiet spell it lets a second's worth of tokens through at once (twice the
    rate in the busiest second); the worker's own limiter spaces sends evenly.
    """
    rate = settings.dispatch_rate(channel)
    return RateLimits(max_task_queue_activities_per_second=rate, max_activities_per_second=rate)


@dataclass
class WorkerParts:
    """What a worker process runs; tests build it with their own client and servers."""

    client: Client
    settings: Settings
    catalog: Catalog
    database: Database
    email_provider: EmailProvider


@asynccontextmanager
async def running_workers(parts: WorkerParts) -> AsyncIterator[list[Worker]]:
    """Start the journey and email workers; shut them down gracefully on exit."""
    # A pool per worker, each as large as the concurrency it allows: a slot
    # must never wait for a thread (local activities have short timeouts, and
    # a send that waits past its timeout would be attempted twice).
    bookkeeping = ThreadPoolExecutor(LOCAL_ACTIVITY_THREADS, thread_name_prefix="bookkeeping")
    sending = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="send")
    channels = [c for c in naming.SEND_CHANNELS if c != "email"]
    channel_pools = {
        c: ThreadPoolExecutor(CHANNEL_THREADS, thread_name_prefix=f"send-{c}") for c in channels
    }
    settings = parts.settings
    # One of each, shared by the activities that need them: rendering (and its
    # lookup cache), the channel providers (and their TLS contexts), the staff.
    rendering = composer(settings, parts.catalog.brand)
    providers = channel_providers(settings, parts.database)
    directory = load_directory(settings.directory_file)
    journal = JourneyJournal(parts.database)
    reader = ContactReader(
        parts.database,
        default_timezone=settings.default_timezone,
        segments=parts.catalog.segments,
    )
    gate = PolicyGate(
        parts.database, parts.catalog.policy, default_timezone=settings.default_timezone
    )
    first_mailer, *other_mailers = email_providers(settings, parts.email_provider)
    sender = MessageSender(
        db=parts.database,
        composer=rendering,
        provider=first_mailer,
        sender=settings.email_from,
        default_timezone=settings.default_timezone,
        policy=parts.catalog.policy,
        providers=providers,
        email_fallbacks=other_mailers,
        batchable_purposes=settings.sendgrid_batch_purposes,
        attempts_per_provider=settings.provider_attempts,
        status_callbacks={
            "twilio": f"{settings.public_url.rstrip('/')}/callbacks/twilio/status",
        },
        receipts=Receipts(settings.receipts_dir),
        records=smtp_records(settings.smtp_record, [first_mailer, *other_mailers]),
    )
    desk = ApprovalDesk(
        db=parts.database,
        composer=rendering,
        directory=directory,
        email=parts.email_provider,
        sender=settings.email_from,
        public_url=settings.public_url,
        client=parts.client,
        secret_key=settings.signing_key(),
        chat=providers.get("chat", []),
    )
    escalations = EscalationDesk(parts.database)
    notifier = StaffNotifier(
        db=parts.database,
        composer=rendering,
        directory=directory,
        email=parts.email_provider,
        sender=settings.email_from,
        chat=providers.get("chat", []),
    )
    log_context = [ActivityLogContext()]
    workers = [
        Worker(
            parts.client,
            task_queue=naming.JOURNEY_TASK_QUEUE,
            workflows=[JourneyWorkflow, ApprovalGateWorkflow, EscalationWorkflow],
            activities=[
                journal.enter_journey,
                journal.exit_journey,
                reader.load_contact,
                gate.check_policy,
                desk.open_gate,
                desk.open_batch_gate,
                desk.gate_status,
                desk.release_waiters,
                desk.settle_review,
                desk.record_gate,
                desk.remind,
                escalations.record_escalation,
            ],
            activity_executor=bookkeeping,
            max_concurrent_local_activities=LOCAL_ACTIVITY_THREADS,
            workflow_runner=sandbox_runner(),
            interceptors=log_context,
        ),
        Worker(
            parts.client,
            task_queue=naming.EMAIL_TASK_QUEUE,
            activities=[sender.send_email, notifier.notify_staff],
            activity_executor=sending,
            max_concurrent_activities=SEND_THREADS,
            interceptors=log_context,
            **rate_limits(settings, "email"),
        ),
        # A queue per channel: a cluster can cap each provider's rate on the server
        # (max_task_queue_activities_per_second), and one slow vendor does not hold
        # the others' slots.
        *(
            Worker(
                parts.client,
                task_queue=naming.send_task_queue(channel),
                # Escalation notices go out on the email and chat queues, under their limits.
                activities=[
                    sender.send_message,
                    *([notifier.notify_staff] if channel == "chat" else []),
                ],
                activity_executor=pool,
                max_concurrent_activities=CHANNEL_THREADS,
                interceptors=log_context,
                **rate_limits(settings, channel),
            )
            for channel, pool in channel_pools.items()
        ),
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield workers
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
        bookkeeping.shutdown(wait=True)
        sending.shutdown(wait=True)
        for pool in channel_pools.values():
            pool.shutdown(wait=True)


async def check_search_attributes(client: Client) -> None:
    missing = await missing_search_attributes(client)
    if missing:
        commands = "\n  ".join(create_commands(client.namespace))
        raise TidingsError(
            f"namespace {client.namespace!r} lacks the search attributes {', '.join(missing)}; "
            f"journeys would stall. Register them once:\n  {commands}"
        )


async def serve(parts: WorkerParts, stop: asyncio.Event) -> None:
    """Run until `stop` is set."""
    async with running_workers(parts):
        log.info(
            "worker running",
            task_queues=[
                naming.JOURNEY_TASK_QUEUE,
                *(naming.send_task_queue(c) for c in naming.SEND_CHANNELS),
            ],
            journeys=sorted(parts.catalog.journeys),
        )
        await stop.wait()
    log.info("worker stopped")


def payload_key_warning(settings: Settings) -> str | None:
    """What a worker warns about at start: payloads kept in clear, or the dev key in use."""
    if key_ring(settings) is None:
        return (
            "payloads are stored unencrypted: the Temporal server holds contacts' traits and "
            "event properties in clear; set TIDINGS_PAYLOAD_KEYS (README: Payload encryption)"
        )
    if not settings.payload_keys:
        return (
            f"payloads are encrypted with the dev key `tidings dev` keeps in {settings.data_dir}; "
            "on a cluster set TIDINGS_PAYLOAD_KEYS, the same for every worker and service"
        )
    return None


async def main() -> None:
    settings = Settings()
    configure_logging(pretty=sys.stderr.isatty())
    catalog = Catalog.from_settings(settings)
    if not settings.public_url.startswith("https://"):
        log.warning(
            "unsubscribe links are not https; set TIDINGS_PUBLIC_URL for real recipients",
            public_url=settings.public_url,
        )
    if not settings.secret_key:
        log.warning(
            "TIDINGS_SECRET_KEY is not set: unsubscribe links are signed with a key kept in "
            "the data dir; give every worker and the HTTP service the same key",
            data_dir=str(settings.data_dir),
        )
    if (warning := payload_key_warning(settings)) is not None:
        log.warning(warning)
    async with worker_metrics(settings.metrics_bind) as runtime:
        client = await connect(settings, runtime=runtime)
        await check_search_attributes(client)
        parts = WorkerParts(
            client=client,
            settings=settings,
            catalog=catalog,
            database=Database.for_settings(settings),
            email_provider=smtp_provider(settings),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(parts, stop)


def run() -> None:
    try:
        asyncio.run(main())
    except TidingsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
