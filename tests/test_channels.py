"""Journeys on SMS, push, in-app: providers over real HTTP, failover, fallback channel,
status callbacks and inbound STOP (the vendors are the local stand-ins of `tidings dev`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import JsonValue
from sqlmodel import select
from support import EXAMPLE_TEMPLATES, Stack, eventually, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings.activities.channels.twilio import twilio_signature
from tidings.db import delivery_events, inbox
from tidings.models.tables import SuppressionRecord
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink

CART: dict[str, JsonValue] = {"total": 42, "currency": "USD", "cart_url": "https://s.example/c/1"}
AUTH_TOKEN = "test-auth-token"
PUBLIC_URL = "https://tidings.example.com"

JOURNEY = """\
name: nudge
version: 1
trigger: {event: nudge}
steps:
  - id: first
    send: {template: cart-reminder, channel: CHANNEL, FALLBACK purpose: marketing, topic: cart}
  - id: pause
    wait: 1d
  - id: second
    send: {template: cart-reminder, channel: CHANNEL, purpose: marketing, topic: cart}
"""


@dataclass
class Vendors:
    url: str
    records: Path

    def received(self, channel: str) -> list[dict[str, Any]]:
        return read_records(self.records, channel=channel)


@pytest.fixture
async def vendors(tmp_path: Path) -> AsyncIterator[Vendors]:
    records = tmp_path / "vendors.jsonl"
    app = create_sink_app(records)
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield Vendors(url, records)


def provider_settings(vendors: Vendors, *, twilio_url: str | None = None) -> dict[str, Any]:
    return {
        "twilio_account_sid": "AC" + "1" * 32,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": "+15005550006",
        "twilio_base_url": twilio_url or vendors.url,
        "vonage_api_key": "key",
        "vonage_api_secret": "secret",
        "vonage_from": "Acme",
        "vonage_base_url": vendors.url,
        "provider_attempts": 2,
        "public_url": PUBLIC_URL,
    }


def journey_dir(tmp_path: Path, channel: str, fallback: str | None = None) -> Path:
    directory = tmp_path / "journeys"
    directory.mkdir()
    text = JOURNEY.replace("CHANNEL", channel)
    text = text.replace("FALLBACK ", f"fallback_channel: {fallback}, " if fallback else "")
    (directory / "nudge.yaml").write_text(text)
    return directory


@pytest.fixture
async def sms_stack(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, vendors: Vendors
) -> AsyncIterator[Stack]:
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journey_dir(tmp_path, "sms", fallback="email"),
        extra_settings=provider_settings(vendors),
    ) as stack:
        yield stack


def daytime_zone() -> str:
    """A time zone where it is daytime now: the first SMS goes out without waiting for
    quiet hours to end (the test server's clock starts at the real time)."""
    now = datetime.now(UTC)
    zones = ("Europe/London", "Asia/Kolkata", "Asia/Tokyo", "America/New_York", "Pacific/Honolulu")
    return next(z for z in zones if 10 <= now.astimezone(ZoneInfo(z)).hour < 18)


async def sms_contact(stack: Stack, key: str, phone: str = "+14155550100") -> None:
    await stack.client.identify(
        key,
        jurisdiction="US",
        timezone=daytime_zone(),
        phones=[phone],
        emails=[f"{key}@example.com"],
    )
    await stack.client.policy.grant(
        key,
        channel="sms",
        basis="express_written",
        source="checkout",
        proof={"form": "sms-opt-in"},
    )


async def test_an_sms_step_goes_out_through_twilio_in_its_wire_format(
    sms_stack: Stack, vendors: Vendors, contact_key: str
) -> None:
    await sms_contact(sms_stack, contact_key)
    await sms_stack.client.track(contact_key, "nudge", CART)

    result = await sms_stack.result("nudge", contact_key)
    assert result.sends == 2
    first, _ = vendors.received("sms")
    assert first["provider"] == "twilio" and first["to"] == "+14155550100"
    assert first["parts"]["text"].startswith("Acme: your cart ($42.00) is waiting")
    assert first["payload"]["StatusCallback"] == f"{PUBLIC_URL}/callbacks/twilio/status"
    rows = sorted(sms_stack.deliveries(), key=lambda d: d.scheduled_at)
    assert [(d.channel, d.provider, d.status) for d in rows] == [("sms", "twilio", "sent")] * 2
    assert rows[0].provider_message_id == first["provider_id"]


async def test_a_provider_outage_fails_over_to_the_next_provider(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    vendors: Vendors,
    contact_key: str,
) -> None:
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journey_dir(tmp_path, "sms"),
        extra_settings=provider_settings(vendors, twilio_url=vendors.url + "/fail/503"),
    ) as stack:
        await sms_contact(stack, contact_key)
        await stack.client.track(contact_key, "nudge", CART)
        await stack.result("nudge", contact_key)

    [first, *_] = sorted(stack.deliveries(), key=lambda d: d.scheduled_at)
    # Two 503s from Twilio (its budget), then Vonage took it.
    assert (first.status, first.provider, first.attempts) == ("sent", "vonage", 3)
    assert {r["provider"] for r in vendors.received("sms")} == {"vonage"}
    assert vendors.received("sms")[0]["payload"]["to"] == "14155550100"  # Vonage: digits


async def test_an_invalid_number_is_suppressed_and_the_step_falls_back_to_email(
    sms_stack: Stack, vendors: Vendors, contact_key: str
) -> None:
    await sms_contact(sms_stack, contact_key, phone="+15005550001")  # Twilio: 21211

    await sms_stack.client.track(contact_key, "nudge", CART)
    result = await sms_stack.result("nudge", contact_key)

    rows = sorted(sms_stack.deliveries(), key=lambda d: d.scheduled_at)
    assert [(d.step_id, d.channel, d.status) for d in rows] == [
        ("first", "sms", "failed"),
        ("first", "email", "sent"),
        ("second", "sms", "skipped"),  # the number is suppressed now
    ]
    assert "21211" in (rows[0].error or "")
    assert "suppress" in (rows[2].error or "")
    with sms_stack.database.session() as session:
        history = delivery_events.history(session=session, delivery_id=rows[0].id)
    assert [(e.status, e.provider, e.error_code) for e in history] == [
        ("failed", "twilio", "21211")
    ]
    [email] = sms_stack.outbox()
    assert email.subject == "You left something in your cart"
    assert result.sends == 1
    with sms_stack.database.session() as session:
        [suppression] = session.exec(select(SuppressionRecord)).all()
    assert (suppression.reason, suppression.address) == ("invalid_number", "+15005550001")


# Callbacks, through the HTTP service


def signed(path: str, params: dict[str, str]) -> dict[str, str]:
    url = PUBLIC_URL + path
    return {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, params)}


@pytest.fixture
async def service(sms_stack: Stack) -> AsyncIterator[str]:
    app = create_app(
        database=sms_stack.database,
        secret_key="s",
        company="Acme",
        sms_help_text="Acme alerts. Reply STOP to opt out.",
        twilio_auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
    )
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield url


async def test_twilio_status_callbacks_build_the_delivery_history_once_and_need_a_signature(
    sms_stack: Stack, vendors: Vendors, service: str, contact_key: str
) -> None:
    await sms_contact(sms_stack, contact_key)
    await sms_stack.client.track(contact_key, "nudge", CART)
    await sms_stack.result("nudge", contact_key)
    sid = vendors.received("sms")[0]["provider_id"]
    path = "/callbacks/twilio/status"
    params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC" + "1" * 32}

    async with httpx.AsyncClient() as http:
        first = await http.post(service + path, data=params, headers=signed(path, params))
        again = await http.post(service + path, data=params, headers=signed(path, params))
        forged = await http.post(
            service + path,
            data={**params, "MessageStatus": "failed"},
            headers=signed(path, params),  # signed for other values
        )
        unsigned = await http.post(service + path, data=params)

    assert (first.status_code, again.status_code) == (204, 204)
    assert (forged.status_code, unsigned.status_code) == (403, 403)
    delivery = next(d for d in sms_stack.deliveries() if d.provider_message_id == sid)
    with sms_stack.database.session() as session:
        history = delivery_events.history(session=session, delivery_id=delivery.id)
    assert [(e.status, e.provider_status) for e in history] == [
        ("sent", "accepted"),  # the send's own answer
        ("delivered", "delivered"),
    ]


async def test_stop_by_text_skips_the_sleeping_journeys_next_sms(
    sms_stack: Stack, vendors: Vendors, service: str, contact_key: str
) -> None:
    await sms_contact(sms_stack, contact_key)
    await sms_stack.client.track(contact_key, "nudge", CART)
    # The first SMS goes out at once; the journey then sleeps a day.
    await eventually(lambda: _sms_count(vendors, 1))
    path = "/inbound/twilio/sms"
    params = {"From": "+14155550100", "Body": "STOP", "To": "+15005550006"}

    async with httpx.AsyncClient() as http:
        reply = await http.post(service + path, data=params, headers=signed(path, params))

    assert reply.status_code == 200
    assert "<Message>You are unsubscribed" in reply.text
    result = await sms_stack.result("nudge", contact_key)
    assert result.sends == 1
    second = next(d for d in sms_stack.deliveries() if d.step_id == "second")
    assert second.status == "skipped"
    assert len(vendors.received("sms")) == 1


async def _sms_count(vendors: Vendors, count: int) -> bool:
    return len(vendors.received("sms")) == count


# In-app


async def test_a_dead_push_token_is_in_the_delivery_history_and_suppressed(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    """FCM reports errors only in its answer to the send: UNREGISTERED goes in the
    delivery's status history with the code, and the token is not tried again."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    account = "push@acme-app.iam.gserviceaccount.com"
    app = create_sink_app(
        tmp_path / "vendors.jsonl", service_account_keys={account: public.decode()}
    )
    async with (
        running_service(app, host="127.0.0.1", port=free_port()) as sink,
        running_stack(
            time_skipping,
            data_dir=tmp_path / "data",
            smtp=smtp,
            journeys_dir=journey_dir(tmp_path, "push"),
            templates_dir=EXAMPLE_TEMPLATES,
            extra_settings={
                "fcm_project_id": "acme-app",
                "fcm_client_email": account,
                "fcm_private_key": private,
                "fcm_token_url": sink + "/token",
                "fcm_base_url": sink,
            },
        ) as stack,
    ):
        await stack.client.identify(contact_key, jurisdiction="US", push_tokens=["unregistered"])
        await stack.client.policy.grant(
            contact_key, channel="push", basis="express", source="app", proof={"prompt": "os"}
        )
        await stack.client.track(contact_key, "nudge", CART)
        await stack.result("nudge", contact_key)
        rows = sorted(stack.deliveries(), key=lambda d: d.scheduled_at)
        with stack.database.session() as session:
            history = delivery_events.history(session=session, delivery_id=rows[0].id)

    assert [(d.step_id, d.status) for d in rows] == [("first", "failed"), ("second", "skipped")]
    assert [(e.status, e.provider, e.provider_status, e.error_code) for e in history] == [
        ("failed", "fcm", "UNREGISTERED", "UNREGISTERED")
    ]
    assert "suppress" in (rows[1].error or "")


async def test_an_in_app_step_lands_in_the_contacts_inbox_once(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journey_dir(tmp_path, "in_app"),
        templates_dir=EXAMPLE_TEMPLATES,
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US")
        await stack.client.track(contact_key, "nudge", CART)
        await stack.result("nudge", contact_key)
        now = stack.deliveries()[0].updated_at
        with stack.database.session() as session:
            messages = inbox.list_for(session=session, contact_key=contact_key, now=now)

    assert [m.title for m in messages] == ["Your cart is waiting"] * 2
    assert messages[0].action == "https://s.example/c/1"
    assert {d.provider for d in stack.deliveries()} == {"inbox"}


async def test_a_number_the_carrier_says_does_not_exist_is_suppressed_from_its_callback(
    sms_stack: Stack, vendors: Vendors, service: str, contact_key: str
) -> None:
    await sms_contact(sms_stack, contact_key)
    await sms_stack.client.track(contact_key, "nudge", CART)
    await sms_stack.result("nudge", contact_key)
    sid = vendors.received("sms")[0]["provider_id"]
    path = "/callbacks/twilio/status"
    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30006"}

    async with httpx.AsyncClient() as http:
        answer = await http.post(service + path, data=params, headers=signed(path, params))

    assert answer.status_code == 204
    with sms_stack.database.session() as session:
        [suppression] = session.exec(select(SuppressionRecord)).all()
    assert (suppression.reason, suppression.channel, suppression.address) == (
        "invalid_number",
        "sms",
        "+14155550100",
    )
