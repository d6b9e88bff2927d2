"""Web Push (VAPID, aes128gcm) beside FCM: journeys to browsers arrive decrypted at the
local push service, FCM tokens still go to FCM, dead subscriptions are suppressed,
and the service really checks what it is sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import JsonValue, ValidationError
from sqlmodel import select
from support import EXAMPLE_TEMPLATES, Stack, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings.activities.channels import OutgoingMessage, PermanentSendError, TransientSendError
from tidings.activities.channels.webpush import (
    MAX_BODY,
    WebPush,
    WebPushConfig,
    generate_vapid_key,
    load_vapid_key,
    vapid_public_key,
)
from tidings.errors import InputError, TidingsError
from tidings.identities import parse_reference
from tidings.models.contact import IdentifyContact
from tidings.models.tables import ContactIdentity, SuppressionRecord
from tidings.push_subscriptions import parse_subscription
from tidings.settings import Settings
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.smtp_sink import SmtpSink

CART: dict[str, JsonValue] = {"total": 42, "currency": "USD", "cart_url": "https://s.example/c/1"}
JOURNEY = """\
name: nudge
version: 1
trigger: {event: nudge}
steps:
  - id: first
    send: {template: cart-reminder, channel: push, purpose: marketing, topic: cart}
"""
ACCOUNT = "push@acme-app.iam.gserviceaccount.com"
SUBJECT = "mailto:push@acme.example"


@dataclass
class PushService:
    url: str
    records: Path

    async def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """As a browser's pushManager.subscribe(); the sink runs on this event loop,
        so every call to it is async."""
        body = {"applicationServerKey": application_server_key} if application_server_key else {}
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{self.url}/webpush/subscriptions", json=body)
        assert answer.status_code == 201, answer.text
        subscription: dict[str, Any] = answer.json()
        return subscription

    async def ask(self, subscription: dict[str, Any], action: str) -> None:
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{subscription['endpoint']}/{action}")
        assert answer.status_code == 204, answer.text

    def received(self) -> list[dict[str, Any]]:
        return read_records(self.records, channel="push")


@pytest.fixture
def fcm_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def push_service(tmp_path: Path, fcm_key: rsa.RSAPrivateKey) -> AsyncIterator[PushService]:
    public = fcm_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    records = tmp_path / "vendors.jsonl"
    app = create_sink_app(records, service_account_keys={ACCOUNT: public.decode()})
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield PushService(url, records)


@pytest.fixture
async def push_stack(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    push_service: PushService,
    fcm_key: rsa.RSAPrivateKey,
    database_url: str,
) -> AsyncIterator[Stack]:
    """Both push providers configured against the local services, on SQLite and PostgreSQL
    (a subscription is longer than the 320 characters addresses used to be)."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "nudge.yaml").write_text(JOURNEY)
    private = fcm_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        database_url=database_url,
        journeys_dir=journeys,
        templates_dir=EXAMPLE_TEMPLATES,
        extra_settings={
            "fcm_project_id": "acme-app",
            "fcm_client_email": ACCOUNT,
            "fcm_private_key": private,
            "fcm_token_url": push_service.url + "/token",
            "fcm_base_url": push_service.url,
            "webpush_vapid_private_key": generate_vapid_key(),
            "webpush_subject": SUBJECT,
            "webpush_allowed_hosts": ["127.0.0.1"],
        },
    ) as stack:
        yield stack


async def push_contact(stack: Stack, key: str, address: str) -> None:
    await stack.client.identify(key, jurisdiction="US", push_tokens=[address])
    await stack.client.policy.grant(
        key, channel="push", basis="express", source="app", proof={"prompt": "browser"}
    )


def long_endpoint(subscription: dict[str, Any]) -> dict[str, Any]:
    """As long as Mozilla's and Microsoft's are: the sink ignores the query string."""
    return {**subscription, "endpoint": subscription["endpoint"] + "?token=" + "x" * 400}


# Journeys


async def test_a_push_step_reaches_a_browser_decrypted_and_an_app_through_fcm(
    push_stack: Stack, push_service: PushService, contact_key: str
) -> None:
    subscription = long_endpoint(await push_service.subscribe())
    await push_contact(push_stack, contact_key, json.dumps(subscription))
    await push_contact(push_stack, "app-user", "fcm-token-0123456789")

    await push_stack.client.track(contact_key, "nudge", CART)
    await push_stack.client.track("app-user", "nudge", CART)
    await push_stack.result("nudge", contact_key)
    await push_stack.result("nudge", "app-user")

    by_provider = {record["provider"]: record for record in push_service.received()}
    assert set(by_provider) == {"webpush", "fcm"}
    browser, app = by_provider["webpush"], by_provider["fcm"]
    # The service accepted it only with a valid VAPID token and decrypted it with the
    # browser's key: the parts are what the person sees.
    assert browser["to"] == subscription["endpoint"]
    assert browser["parts"]["title"] == app["parts"]["title"]
    assert "$42.00" in browser["parts"]["body"]
    assert browser["payload"]["headers"] == {"ttl": "2419200", "urgency": "low"}
    assert app["to"] == "fcm-token-0123456789"
    rows = {row.contact_key: row for row in push_stack.deliveries()}
    assert (rows[contact_key].status, rows[contact_key].provider) == ("sent", "webpush")
    assert (rows[contact_key].provider_message_id or "").startswith(
        push_service.url + "/webpush/messages/"
    )
    assert rows[contact_key].to_address == parse_subscription(json.dumps(subscription)).address
    assert browser["parts"]["delivery_id"] == rows[contact_key].id
    assert (rows["app-user"].status, rows["app-user"].provider) == ("sent", "fcm")


async def test_an_expired_subscription_fails_for_good_and_is_suppressed(
    push_stack: Stack, push_service: PushService, contact_key: str
) -> None:
    subscription = await push_service.subscribe()
    await push_service.ask(subscription, "expire")
    await push_contact(push_stack, contact_key, json.dumps(subscription))

    await push_stack.client.track(contact_key, "nudge", CART)
    await push_stack.result("nudge", contact_key)

    (row,) = push_stack.deliveries()
    assert row.status == "failed" and "HTTP 410" in (row.error or "")
    with push_stack.database.session() as session:
        suppressed = session.exec(select(SuppressionRecord)).all()
    assert [(s.channel, s.address, s.reason) for s in suppressed] == [
        ("push", row.to_address, "hard_bounce")
    ]
    assert push_service.received() == []


async def test_a_rate_limited_push_is_retried_and_then_delivered(
    push_stack: Stack, push_service: PushService, contact_key: str
) -> None:
    subscription = await push_service.subscribe()
    await push_service.ask(subscription, "fail-next/429")
    await push_contact(push_stack, contact_key, json.dumps(subscription))

    await push_stack.client.track(contact_key, "nudge", CART)
    await push_stack.result("nudge", contact_key)

    (row,) = push_stack.deliveries()
    assert (row.status, row.provider) == ("sent", "webpush")
    assert len(push_service.received()) == 1


async def test_a_subscription_without_web_push_configured_fails_naming_the_settings(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    push_service: PushService,
    contact_key: str,
) -> None:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "nudge.yaml").write_text(JOURNEY)
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journeys,
        extra_settings={
            "fcm_project_id": "acme-app",
            "fcm_client_email": ACCOUNT,
            "fcm_private_key": generate_rsa_pem(),
            "fcm_base_url": push_service.url,
        },
    ) as stack:
        await push_contact(stack, contact_key, json.dumps(await push_service.subscribe()))
        await stack.client.track(contact_key, "nudge", CART)
        await stack.result("nudge", contact_key)
        (row,) = stack.deliveries()

    assert row.status == "failed"
    assert "TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY" in (row.error or "")
    assert push_service.received() == []


def generate_rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# The provider and the push service, directly


def provider(key: str | None = None, **config: Any) -> WebPush:
    return WebPush(
        WebPushConfig(
            vapid_private_key=key or generate_vapid_key(),
            subject=SUBJECT,
            allowed_hosts=("127.0.0.1",),
            **config,
        )
    )


def message(subscription: dict[str, Any], **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        channel="push",
        to=parse_subscription(json.dumps(subscription)).address,
        contact_key="c-1",
        parts={"title": "Your cart", "body": "is waiting", **parts},
        delivery_id="d-1",
        purpose="critical",
        topic="cart reminders",
    )


async def send(push: WebPush, outgoing: OutgoingMessage) -> str:
    return await asyncio.to_thread(push.send, outgoing)


async def test_a_rate_limit_is_transient_with_the_services_retry_after(
    push_service: PushService,
) -> None:
    subscription = await push_service.subscribe()
    await push_service.ask(subscription, "fail-next/429")
    with pytest.raises(TransientSendError) as raised:
        await send(provider(), message(subscription))
    assert raised.value.retry_after_seconds == 2.0


async def test_urgency_ttl_and_topic_follow_the_purpose_and_topic(
    push_service: PushService,
) -> None:
    push = provider(ttl_seconds={"critical": 600}, topic_collapse=True)
    await send(push, message(await push_service.subscribe(), deep_link="https://acme.example/cart"))
    (record,) = push_service.received()
    headers = record["payload"]["headers"]
    assert (headers["urgency"], headers["ttl"]) == ("high", "600")
    # "cart reminders" is not a valid Topic (a space): a digest of it stands in.
    assert len(headers["topic"]) == 32 and " " not in headers["topic"]
    assert record["parts"]["url"] == "https://acme.example/cart"


async def test_the_push_service_refuses_a_forged_vapid_signature(
    push_service: PushService,
) -> None:
    subscription = await push_service.subscribe()
    push = provider()
    outgoing = message(subscription)
    headers = push._headers(outgoing, subscription["endpoint"])
    token_and_key = headers["Authorization"].removeprefix("vapid ")
    token = dict(part.split("=", 1) for part in token_and_key.split(","))["t"]
    forger_key = vapid_public_key(load_vapid_key(generate_vapid_key()))
    forged = {**headers, "Authorization": f"vapid t={token},k={forger_key}"}
    body = b"\x00" * 100

    async with httpx.AsyncClient() as client:
        answer = await client.post(subscription["endpoint"], content=body, headers=forged)
        honest = await client.post(subscription["endpoint"], content=body, headers=headers)

    assert answer.status_code == 401 and "signature" in answer.json()["message"]
    # The honest token passes the check and fails only at decryption (a dummy body).
    assert honest.status_code == 400 and "decrypt" in honest.json()["message"]
    assert push_service.received() == []


async def test_another_vapid_key_than_the_subscriptions_is_refused_naming_the_setting(
    push_service: PushService,
) -> None:
    owner = generate_vapid_key()
    subscription = await push_service.subscribe(vapid_public_key(load_vapid_key(owner)))
    with pytest.raises(PermanentSendError) as raised:
        await send(provider(), message(subscription))
    assert "HTTP 403" in str(raised.value)
    assert "TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY" in str(raised.value)
    assert raised.value.suppress is None
    assert await send(provider(owner), message(subscription))


async def test_a_payload_over_4096_bytes_is_refused_before_sending(
    push_service: PushService,
) -> None:
    with pytest.raises(PermanentSendError, match=f"over the {MAX_BODY} bytes"):
        await send(provider(), message(await push_service.subscribe(), body="x" * MAX_BODY))
    assert push_service.received() == []


async def test_a_413_from_the_push_service_is_permanent_and_names_the_limit(
    push_service: PushService,
) -> None:
    subscription = await push_service.subscribe()
    await push_service.ask(subscription, "fail-next/413")
    with pytest.raises(PermanentSendError, match="4096 bytes") as raised:
        await send(provider(), message(subscription))
    assert raised.value.suppress is None


async def test_a_push_service_outside_the_allow_list_is_refused(
    push_service: PushService,
) -> None:
    push = WebPush(
        WebPushConfig(generate_vapid_key(), SUBJECT, allowed_hosts=("*.push.apple.com",))
    )
    with pytest.raises(PermanentSendError, match="TIDINGS_WEBPUSH_ALLOWED_HOSTS"):
        await send(push, message(await push_service.subscribe()))
    assert push_service.received() == []


# Subscriptions as addresses, and the settings


def browser_key() -> str:
    """A browser's p256dh: an uncompressed P-256 public point, base64url."""
    return vapid_public_key(load_vapid_key(generate_vapid_key()))


VALID: dict[str, Any] = {
    "endpoint": "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk",
    "keys": {"p256dh": browser_key(), "auth": "tBHItJI5svbpez7KI4CCXg"},
}


def test_a_subscription_is_kept_compact_and_reads_back_the_same() -> None:
    compact = parse_subscription(json.dumps(VALID)).address
    assert compact == (
        f"{VALID['endpoint']}#p256dh={VALID['keys']['p256dh']}&auth={VALID['keys']['auth']}"
    )
    assert parse_subscription(compact).as_json() == VALID
    assert IdentifyContact(key="k", push_tokens=[json.dumps(VALID)]).push_tokens == [compact]
    assert parse_reference(f"push:{compact}").value == compact
    # An FCM token stays as it was.
    assert IdentifyContact(key="k", push_tokens=["fcm-token-123"]).push_tokens == ["fcm-token-123"]


INVALID = [
    ({"keys": {"auth": VALID["keys"]["auth"]}}, "keys.p256dh"),
    ({"keys": {**VALID["keys"], "auth": "c2hvcnQ"}}, "keys.auth"),
    ({"keys": {**VALID["keys"], "p256dh": "B" + "A" * 86}}, "keys.p256dh"),
    ({"endpoint": "ftp://push.example/x"}, "endpoint"),
    ({"keys": None}, "keys"),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
def test_an_invalid_subscription_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    bad = json.dumps({**VALID, **change})
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")) as raised:
        IdentifyContact(key="k", push_tokens=[bad])
    assert raised.value.errors()[0]["loc"] == ("push_tokens", 0)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        parse_reference(f"push:{bad}")


async def test_adding_an_invalid_subscription_to_a_contact_is_refused_naming_the_field(
    push_stack: Stack, contact_key: str
) -> None:
    bad = json.dumps({**VALID, "keys": {**VALID["keys"], "auth": "c2hvcnQ"}})
    with pytest.raises(InputError, match=r"keys\.auth must be 16 bytes"):
        await push_stack.client.identify(contact_key, push_tokens=[bad])
    with push_stack.database.session() as session:
        assert session.exec(select(ContactIdentity)).all() == []


def test_the_vapid_settings_are_checked_with_one_clear_error_each() -> None:
    with pytest.raises(ValidationError, match="TIDINGS_WEBPUSH_SUBJECT"):
        Settings(webpush_subject="push@acme.example")
    with pytest.raises(TidingsError, match="TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY is not a VAPID"):
        provider("not a key")
    with pytest.raises(TidingsError, match="TIDINGS_WEBPUSH_SUBJECT is required"):
        WebPush(WebPushConfig(generate_vapid_key(), ""))
    raw = "IQ4HLBMm0twCeYn-R3eFTIXN0IzXOB8c9l4prDySE0E"  # `vapid --gen`'s raw form
    assert len(vapid_public_key(load_vapid_key(raw))) == 87
    assert load_vapid_key(generate_vapid_key().replace("\n", "\\n"))  # pasted into an env var
