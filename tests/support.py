"""Helpers shared by the tests: a running tidings stack against real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from tidings import naming
from tidings.activities import metrics
from tidings.activities.channels import ChannelProvider, EmailProvider
from tidings.activities.channels.relay_record import smtp_records
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.activities.receipts import Receipts
from tidings.activities.send import MessageSender
from tidings.catalog import Catalog
from tidings.connection import dynamic_config_flags, register_search_attributes
from tidings.content.files import load_library
from tidings.content.lint import load_compliance
from tidings.db import templates
from tidings.db.engine import Database
from tidings.models.events import JourneyEvent
from tidings.models.policy import PolicyConfig
from tidings.models.tables import Delivery, JourneyRun
from tidings.models.workflow_io import JourneyResult, SendInput
from tidings.settings import PACKAGE_DIR, Settings
from tidings.starter.client import TidingsClient
from tidings.starter.dev import find_binary
from tidings.starter.outbox import OutboxMessage, read_email_outbox
from tidings.starter.smtp_sink import SmtpSink
from tidings.worker import WorkerParts, composer, running_workers
from tidings.workflows.interpreter import SEND_DEADLINE, SEND_TIMEOUT

T = TypeVar("T")

EXAMPLE_JOURNEYS = PACKAGE_DIR / "journeys"
EXAMPLE_TEMPLATES = PACKAGE_DIR / "templates"
AUDIT_KEY = b"tidings-tests-audit-key"
"""Seals the audit log of databases tests open themselves (a service derives its key
from its secret: `Database.for_settings`)."""
AUTHOR = "ann.author@acme.example"
REVIEWER = "rob.reviewer@acme.example"


def publish(database: Database, templates_dir: Path = EXAMPLE_TEMPLATES) -> list[templates.Pushed]:
    """Push every template and translation, submit them and approve them (two people)."""
    compliance = load_compliance(PACKAGE_DIR / "compliance.yaml")
    now = datetime.now(UTC)
    with database.session() as session:
        pushed = templates.push(
            session=session, library=load_library(templates_dir), actor=AUTHOR, now=now
        )
        for item in pushed:
            if item.status != templates.DRAFT:
                continue
            name, number, locale = item.template, item.version, item.locale
            templates.submit(
                session=session,
                template=name,
                number=number,
                locale=locale,
                actor=AUTHOR,
                compliance=compliance,
                now=now,
            )
            templates.approve(
                session=session,
                template=name,
                number=number,
                locale=locale,
                actor=REVIEWER,
                comment=None,
                now=now,
            )
    return pushed


def activity_env(
    *, attempt: int = 1, retry_policy: RetryPolicy | None = None, scheduled_ago: float = 0
) -> ActivityEnvironment:
    """An activity context as the worker gives one: attempt, retry policy, deadlines."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=attempt,
        retry_policy=retry_policy,
        scheduled_time=datetime.now(UTC) - timedelta(seconds=scheduled_ago),
        started_time=datetime.now(UTC),
        schedule_to_close_timeout=SEND_DEADLINE,
        start_to_close_timeout=SEND_TIMEOUT,
    )
    return env


def make_sender(
    database: Database,
    smtp: SmtpSink,
    data_dir: Path,
    *,
    templates_dir: Path = EXAMPLE_TEMPLATES,
    policy: PolicyConfig | None = None,
    publish_templates: bool = True,
    providers: dict[str, list[ChannelProvider]] | None = None,
    email_fallbacks: list[EmailProvider] | None = None,
    **settings: Any,
) -> MessageSender:
    """The send activity as a worker builds it, over the published templates."""
    if publish_templates:
        publish(database, templates_dir)
    config = Settings(data_dir=data_dir, templates_dir=templates_dir, **settings)
    mailer = SmtpProvider(SmtpConfig(host=smtp.host, port=smtp.port, timeout_seconds=5))
    return MessageSender(
        db=database,
        composer=composer(config, load_library(templates_dir).brand),
        provider=mailer,
        sender="Acme <hello@acme.example>",
        default_timezone="UTC",
        policy=policy or PolicyConfig(),
        providers=providers,
        email_fallbacks=email_fallbacks or [],
        attempts_per_provider=config.provider_attempts,
        receipts=Receipts(config.receipts_dir),
        records=smtp_records(config.smtp_record, [mailer]),
    )


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=find_binary("temporal-test-server"),
    )
    await register_search_attributes(env.client)
    return env


async def start_dev_server(**kwargs: object) -> WorkflowEnvironment:
    """A dev server configured as `tidings dev` runs it."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_binary("temporal"),
        search_attributes=naming.SEARCH_ATTRIBUTES,
        dev_server_extra_args=dynamic_config_flags(),
        # The default 5 s is too short on a loaded 2-core machine.
        dev_server_startup_timeout=timedelta(seconds=60),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Sent:
    """An email as it reached the SMTP server, joined with its delivery row."""

    to: str
    subject: str
    journey: str
    step_id: str
    scheduled_at: datetime
    message: OutboxMessage


@dataclass
class Stack:
    """A worker and a client running against one Temporal server, one SMTP sink, one DB."""

    env: WorkflowEnvironment
    client: TidingsClient
    smtp: SmtpSink
    database: Database
    settings: Settings

    def outbox(self, to: str | None = None) -> list[OutboxMessage]:
        return read_email_outbox(self.smtp.maildir_path, to=to)

    def sent(self, to: str | None = None) -> list[Sent]:
        """Received emails in the order their journeys scheduled them."""
        rows = {d.id: d for d in self.deliveries()}
        found = []
        for message in self.outbox(to):
            assert message.delivery_id in rows, f"{message.subject!r} has no delivery row"
            row = rows[message.delivery_id]
            found.append(
                Sent(
                    message.to, message.subject, row.journey, row.step_id, row.scheduled_at, message
                )
            )
        return sorted(found, key=lambda s: s.scheduled_at)

    def deliveries(self) -> list[Delivery]:
        with self.database.session() as session:
            return list(session.exec(select(Delivery)).all())

    def journey_runs(self, contact_key: str) -> list[JourneyRun]:
        with self.database.session() as session:
            return list(
                session.exec(select(JourneyRun).where(JourneyRun.contact_key == contact_key)).all()
            )

    def handle(self, journey: str, contact_key: str) -> WorkflowHandle[object, JourneyResult]:
        return self.temporal.get_workflow_handle(
            naming.journey_workflow_id(journey, contact_key), result_type=JourneyResult
        )

    @property
    def temporal(self) -> Client:
        return self.env.client

    async def result(self, journey: str, contact_key: str, timeout: float = 60) -> JourneyResult:
        """The journey's result, letting a time-skipping server skip ahead meanwhile.

        A journey stuck on a failing workflow task fails the test after `timeout`.
        """
        handle = self.handle(journey, contact_key)
        unlocked = getattr(self.env, "time_skipping_unlocked", None)
        async with unlocked() if unlocked is not None else nullcontext():
            return await asyncio.wait_for(handle.result(), timeout)


@asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment,
    *,
    data_dir: Path,
    smtp: SmtpSink,
    journeys_dir: Path = EXAMPLE_JOURNEYS,
    templates_dir: Path = EXAMPLE_TEMPLATES,
    database_url: str = "",
    history_event_limit: int = 2_000,
    publish_templates: bool = True,
    extra_settings: dict[str, Any] | None = None,
    temporal: Client | None = None,
) -> AsyncIterator[Stack]:
    """`temporal`: a client of `env`'s server with options of its own (interceptors)."""
    temporal = temporal or env.client
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        journeys_dir=journeys_dir,
        templates_dir=templates_dir,
        history_event_limit=history_event_limit,
        email_from="Acme <hello@acme.example>",
        **(extra_settings or {}),
    )
    catalog = Catalog.from_settings(settings)
    database = Database.for_settings(settings)
    if publish_templates:
        publish(database, templates_dir)
    parts = WorkerParts(
        client=temporal,
        settings=settings,
        catalog=catalog,
        database=database,
        email_provider=SmtpProvider(SmtpConfig(host=smtp.host, port=smtp.port, timeout_seconds=5)),
    )
    client = TidingsClient(
        temporal=temporal,
        database=database,
        catalog=catalog,
        settings=settings,
        clock=env.get_current_time,
    )
    try:
        async with running_workers(parts):
            yield Stack(env, client, smtp, database, settings)
    finally:
        database.dispose()


async def run_onboarding(stack: Stack, contact_key: str) -> None:
    """The onboarding journey from sign-up to its end: three emails sent."""
    await stack.client.identify(contact_key, jurisdiction="US", emails=["pg@example.com"])
    await stack.client.track(contact_key, "signed_up")
    result = await stack.result("onboarding", contact_key)
    assert (result.outcome, result.sends) == ("completed", 3)
    assert [d.status for d in stack.deliveries()] == ["sent"] * 3


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll until `check` returns a truthy value without raising AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout}s")
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, str]], object]:
    """The data points of tidings' metric `name`, by their attributes."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[frozenset[tuple[str, str]], object] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == metrics.METER_NAME
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        attributes = {k: str(v) for k, v in (point.attributes or {}).items()}
                        found[frozenset(attributes.items())] = point
    return found


SEND_AT = datetime(2026, 11, 23, 12, tzinfo=UTC)
CART = {"total": 150.0, "currency": "EUR", "cart_url": "https://shop.example/cart/1"}


def cart_send_input(key: str = "journey/cart/c1/1/reminder/1", **changes: object) -> SendInput:
    """The cart reminder to contact c1 as its journey schedules it (the send activity's input)."""
    event = JourneyEvent(event_id="e1", name="cart_updated", properties=CART, occurred_at=SEND_AT)
    values: dict[str, object] = {
        "idempotency_key": key,
        "journey": "cart-abandonment",
        "version": 1,
        "step_id": "reminder",
        "contact_key": "c1",
        "template": "cart-reminder",
        "purpose": "marketing",
        "topic": "cart",
        "trigger": event,
        "event": event,
        "scheduled_at": SEND_AT,
    }
    values.update(changes)
    return SendInput.model_validate(values)
