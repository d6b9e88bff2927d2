"""The SMS, push, chat and webhook providers over real HTTP, against the provider sink.

The providers are synchronous (the send activity runs them in a thread
pool) and the sink serves on this test's event loop, so sends go through
a thread here too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tidings.activities.channels import (
    AmbiguousSendError,
    ChannelProvider,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.fcm import FcmConfig, FcmPush
from tidings.activities.channels.handover import Superseded, marking
from tidings.activities.channels.http import retry_after
from tidings.activities.channels.slack import SlackConfig, SlackWebhook
from tidings.activities.channels.teams import TeamsConfig, TeamsWebhook
from tidings.activities.channels.twilio import (
    TwilioConfig,
    TwilioSms,
    twilio_signature,
    verify_twilio_signature,
)
from tidings.activities.channels.vonage import VonageConfig, VonageSms
from tidings.activities.channels.webhook import (
    StandardWebhook,
    WebhookConfig,
    sign,
    verify_standard_webhook,
)
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import SinkState, create_sink_app, read_records
from tidings.starter.service import running_service

SID = "AC" + "0" * 32
SERVICE_ACCOUNT = "tidings@acme-app.iam.gserviceaccount.com"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CALLBACK = "https://tidings.example/status"
LOCAL = ("127.0.0.1",)
"""Contacts' webhook URLs here point at the local sink, which must be listed."""


@cache
def rsa_key(which: str = "service account") -> tuple[str, str]:
    """A fresh RSA key pair as PEM (private, public); one per name for the whole run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@dataclass
class Sink:
    url: str
    state: SinkState
    record_path: Path

    def records(self, channel: str | None = None) -> list[dict[str, Any]]:
        return read_records(self.record_path, channel=channel)


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[Sink]:
    record_path = tmp_path / "sink.jsonl"
    app = create_sink_app(
        record_path,
        service_account_keys={SERVICE_ACCOUNT: rsa_key()[1]},
        webhook_secret=WEBHOOK_SECRET,
    )
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield Sink(url, app.state.sink, record_path)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that takes the connection and the request, and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # never accepted: the kernel completes the handshake alone
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def message(channel: str, to: str, **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        channel=channel,
        to=to,
        contact_key="c-ann",
        parts=parts,
        delivery_id=f"d-{uuid.uuid4().hex[:12]}",
        status_callback=CALLBACK,
    )


async def send(provider: ChannelProvider, outgoing: OutgoingMessage) -> str:
    return await asyncio.to_thread(provider.send, outgoing)


def twilio(base_url: str, *, auth_token: str = "secret", timeout: float = 5) -> TwilioSms:
    return TwilioSms(TwilioConfig(SID, auth_token, "+15550001111", base_url, timeout))


def vonage(base_url: str, *, timeout: float = 5) -> VonageSms:
    return VonageSms(VonageConfig("key", "secret", "Acme", base_url, timeout))


def fcm(
    token_url: str, base_url: str, *, private_key: str | None = None, timeout: float = 5
) -> FcmPush:
    key = private_key or rsa_key()[0]
    return FcmPush(FcmConfig("acme-app", SERVICE_ACCOUNT, key, token_url, base_url, timeout))


# --- Twilio ------------------------------------------------------------------


async def test_twilio_posts_the_form_with_basic_auth(sink: Sink) -> None:
    sid = await send(twilio(sink.url), message("sms", "+15551234567", text="Your code: 1234"))

    assert sid.startswith("SM") and len(sid) == 34
    [record] = sink.records("sms")
    assert record["provider_id"] == sid
    assert record["payload"] == {
        "To": "+15551234567",
        "From": "+15550001111",
        "Body": "Your code: 1234",
        "StatusCallback": CALLBACK,
    }


async def test_an_http_provider_marks_the_point_of_no_return_before_its_request(
    sink: Sink,
) -> None:
    arrived_before_the_mark: list[int] = []
    with marking(lambda: arrived_before_the_mark.append(len(sink.records("sms")))):
        await send(twilio(sink.url), message("sms", "+15551234567", text="Your code: 1234"))

    assert arrived_before_the_mark == [0]  # marked once, and before the vendor had anything
    assert len(sink.records("sms")) == 1


async def test_a_superseded_attempt_sends_no_request(sink: Sink) -> None:
    def taken_by_another_attempt() -> None:
        raise Superseded("d-1")

    with marking(taken_by_another_attempt), pytest.raises(Superseded):
        await send(twilio(sink.url), message("sms", "+15551234567", text="Your code: 1234"))

    assert sink.records("sms") == []


async def test_twilio_sends_through_a_messaging_service(sink: Sink) -> None:
    provider = TwilioSms(TwilioConfig(SID, "secret", "MG" + "1" * 32, sink.url))
    await send(provider, message("sms", "+15551234567", text="hi"))
    assert sink.records()[0]["payload"]["MessagingServiceSid"] == "MG" + "1" * 32


async def test_twilio_invalid_number_is_suppressed(sink: Sink) -> None:
    with pytest.raises(PermanentSendError, match="21211") as err:
        await send(twilio(sink.url), message("sms", "+15005550001", text="hi"))
    assert err.value.suppress == "invalid_number"
    assert sink.records() == []


async def test_twilio_not_a_mobile_number_is_suppressed(sink: Sink) -> None:
    with pytest.raises(PermanentSendError) as err:
        await send(twilio(sink.url), message("sms", "+15005550009", text="hi"))
    assert err.value.suppress == "invalid_number"


async def test_twilio_stop_fails_without_suppressing(sink: Sink) -> None:
    with pytest.raises(PermanentSendError, match="replied STOP") as err:
        await send(twilio(sink.url), message("sms", "+15005550004", text="hi"))
    assert err.value.suppress is None


async def test_twilio_account_problems_name_the_fix(sink: Sink) -> None:
    with pytest.raises(PermanentSendError, match="Geographic Permissions") as region:
        await send(twilio(sink.url), message("sms", "+15005550003", text="hi"))
    assert region.value.suppress is None
    with pytest.raises(PermanentSendError, match="TIDINGS_TWILIO_AUTH_TOKEN"):
        await send(twilio(sink.url, auth_token=""), message("sms", "+15551234567", text="hi"))
    with pytest.raises(PermanentSendError, match="no 'text' part"):
        await send(twilio(sink.url), message("sms", "+15551234567", text=" "))
    assert sink.records() == []


async def test_twilio_server_errors_and_rate_limits_are_retried(sink: Sink) -> None:
    with pytest.raises(TransientSendError, match="HTTP 500"):
        await send(twilio(sink.url), message("sms", "+15005550500", text="hi"))
    with pytest.raises(TransientSendError, match="20429") as limited:
        await send(twilio(sink.url), message("sms", "+15005550429", text="hi"))
    assert limited.value.retry_after_seconds == 2
    with pytest.raises(TransientSendError) as unavailable:
        await send(twilio(f"{sink.url}/fail/503"), message("sms", "+15551234567", text="hi"))
    assert unavailable.value.retry_after_seconds == 2


def test_twilio_signature_matches_twilios_documented_examples() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    # Twilio's security page; its libraries' tests use +14158675309 for Caller
    # and From, which gives RSOYDt4T1cUTdK1PDd93/VVr8B8= instead.
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    older = {**params, "Caller": "+14158675309", "From": "+14158675309"}
    assert twilio_signature("12345", url, older) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="

    signature = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert verify_twilio_signature("12345", url, params, signature)
    assert verify_twilio_signature("12345", url, list(reversed(params.items())), signature)
    assert not verify_twilio_signature("12345", url, {**params, "Digits": "9"}, signature)
    assert not verify_twilio_signature("54321", url, params, signature)
    assert not verify_twilio_signature("12345", url + "&x=1", params, signature)
    assert not verify_twilio_signature("12345", url, params, signature[:-2])


# --- Vonage ------------------------------------------------------------------


async def test_vonage_sends_digits_and_the_delivery_reference(sink: Sink) -> None:
    outgoing = message("sms", "+44 7700 900000", text="Hello")
    message_id = await send(vonage(sink.url), outgoing)

    [record] = sink.records("sms")
    assert record["provider_id"] == message_id
    payload = record["payload"]
    assert payload["to"] == "447700900000"
    assert payload["from"] == "Acme"
    assert payload["client-ref"] == outgoing.delivery_id
    assert payload["callback"] == CALLBACK
    assert payload["type"] == "text"
    assert (payload["api_key"], payload["api_secret"]) == ("key", "secret")


async def test_vonage_marks_text_outside_ascii_as_unicode(sink: Sink) -> None:
    await send(vonage(sink.url), message("sms", "+447700900000", text="Grüße 👋"))
    assert sink.records()[0]["payload"]["type"] == "unicode"
    assert sink.records()[0]["parts"]["text"] == "Grüße 👋"


async def test_vonage_statuses_are_classified(sink: Sink) -> None:
    provider = vonage(sink.url)
    for number in ("+15005550001", "+15005550007", "+15005550033"):
        with pytest.raises(PermanentSendError) as dead:
            await send(provider, message("sms", number, text="hi"))
        assert dead.value.suppress == "invalid_number", number
    with pytest.raises(TransientSendError, match="throttled") as throttled:
        await send(provider, message("sms", "+15005550429", text="hi"))
    assert throttled.value.retry_after_seconds == 1
    with pytest.raises(TransientSendError, match="status 5"):
        await send(provider, message("sms", "+15005550500", text="hi"))
    with pytest.raises(TransientSendError) as unavailable:
        await send(vonage(f"{sink.url}/fail/429"), message("sms", "+447700900000", text="hi"))
    assert unavailable.value.retry_after_seconds == 2
    assert sink.records() == []


async def test_vonage_missing_parameters_are_permanent(sink: Sink) -> None:
    provider = VonageSms(VonageConfig("key", "", "Acme", sink.url))
    with pytest.raises(PermanentSendError, match="status 2") as err:
        await send(provider, message("sms", "+447700900000", text="hi"))
    assert err.value.suppress is None


# --- FCM ---------------------------------------------------------------------


async def test_fcm_caches_the_access_token_across_sends(sink: Sink) -> None:
    provider = fcm(f"{sink.url}/token", sink.url)
    first = message("push", "token-1", title="Cart", body="Still there?", deep_link="acme://c")
    names = [
        await send(provider, first),
        await send(provider, message("push", "token-2", body="2")),
    ]

    assert sink.state.token_requests == 1
    [one, two] = sink.records("push")
    assert [one["provider_id"], two["provider_id"]] == names
    assert names[0].startswith("projects/acme-app/messages/")
    assert one["payload"] == {
        "token": "token-1",
        "notification": {"title": "Cart", "body": "Still there?"},
        "data": {"delivery_id": first.delivery_id, "deep_link": "acme://c"},
    }


async def test_fcm_fetches_a_new_token_after_a_refused_one(sink: Sink) -> None:
    provider = fcm(f"{sink.url}/token", sink.url)
    await send(provider, message("push", "token-1", body="1"))
    sink.state.issued_tokens.clear()  # revoked, as Google may before expiry

    with pytest.raises(TransientSendError, match="access token was refused"):
        await send(provider, message("push", "token-1", body="2"))
    await send(provider, message("push", "token-1", body="3"))

    assert sink.state.token_requests == 2
    assert [r["parts"]["body"] for r in sink.records()] == ["1", "3"]


async def test_fcm_wrong_key_is_a_configuration_error(sink: Sink) -> None:
    """The sink checks the JWT's RS256 signature against the service account's key."""
    provider = fcm(f"{sink.url}/token", sink.url, private_key=rsa_key("another")[0])
    with pytest.raises(PermanentSendError, match=r"Invalid JWT Signature.*TIDINGS_FCM_PRIVATE_KEY"):
        await send(provider, message("push", "token-1", body="hi"))


async def test_fcm_dead_tokens_are_suppressed(sink: Sink) -> None:
    provider = fcm(f"{sink.url}/token", sink.url)
    for token in ("unregistered", "invalid-token", "sender-mismatch"):
        with pytest.raises(PermanentSendError, match="no longer registered") as err:
            await send(provider, message("push", token, body="hi"))
        assert err.value.suppress == "hard_bounce", token


async def test_fcm_quota_and_outages_are_retried(sink: Sink) -> None:
    provider = fcm(f"{sink.url}/token", sink.url)
    for status in (429, 503):
        with pytest.raises(TransientSendError) as err:
            await send(provider, message("push", f"fail-{status}", body="hi"))
        assert err.value.retry_after_seconds == 2
    with pytest.raises(TransientSendError, match="HTTP 500"):
        await send(provider, message("push", "fail-500", body="hi"))


async def test_fcm_token_endpoint_trouble_is_always_retryable(sink: Sink, silent_url: str) -> None:
    """No message goes out while fetching a token: even no answer is safe to retry."""
    outgoing = message("push", "token-1", body="hi")
    for token_url in (
        f"{silent_url}/token",
        f"{refused_url()}/token",
        f"{sink.url}/fail/500/token",
    ):
        with pytest.raises(TransientSendError):
            await send(fcm(token_url, sink.url, timeout=0.5), outgoing)
    with pytest.raises(AmbiguousSendError):
        await send(fcm(f"{sink.url}/token", silent_url, timeout=0.5), outgoing)


# --- Slack, Teams ------------------------------------------------------------


async def test_slack_posts_text_and_blocks(sink: Sink) -> None:
    provider = SlackWebhook(SlackConfig(f"{sink.url}/slack/ops"))
    blocks = '{"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Hi*"}}]}'
    outgoing = message("chat", "", text="Hi", blocks=blocks)

    assert await send(provider, outgoing) == outgoing.delivery_id
    [record] = sink.records("chat")
    assert record["to"] == "ops"
    assert record["payload"] == {
        "text": "Hi",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Hi*"}}],
    }


async def test_slack_errors(sink: Sink) -> None:
    configured = SlackWebhook(SlackConfig(f"{sink.url}/slack/ops", allowed_hosts=LOCAL))
    with pytest.raises(PermanentSendError, match="not valid JSON"):
        await send(configured, message("chat", "", text="Hi", blocks="[{"))
    with pytest.raises(PermanentSendError, match="invalid_blocks"):
        await send(configured, message("chat", "", text="Hi", blocks="[1]"))
    with pytest.raises(PermanentSendError, match="no_text"):
        await send(configured, message("chat", ""))
    with pytest.raises(TransientSendError) as limited:
        await send(configured, message("chat", f"{sink.url}/slack/fail-429", text="Hi"))
    assert limited.value.retry_after_seconds == 2

    gone = SlackWebhook(SlackConfig(f"{sink.url}/slack/gone"))
    with pytest.raises(PermanentSendError, match="no_service") as config_gone:
        await send(gone, message("chat", "", text="Hi"))
    assert config_gone.value.suppress is None  # the configuration's, not a contact's
    with pytest.raises(PermanentSendError, match="channel_is_archived") as own_gone:
        await send(configured, message("chat", f"{sink.url}/slack/archived", text="Hi"))
    assert own_gone.value.suppress == "hard_bounce"
    assert sink.records() == []


async def test_teams_posts_an_adaptive_card(sink: Sink) -> None:
    provider = TeamsWebhook(TeamsConfig(f"{sink.url}/teams/ops"))
    await send(provider, message("chat", "", text="Deploy done"))
    card = json.dumps(
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "Own"}]}
    )
    await send(provider, message("chat", "", text="ignored", blocks=card))

    first, second = sink.records("chat")
    assert first["parts"] == {"text": "Deploy done"}
    [attachment] = first["payload"]["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    assert second["parts"] == {"text": "Own"}


async def test_teams_errors(sink: Sink) -> None:
    provider = TeamsWebhook(TeamsConfig(f"{sink.url}/teams/ops", allowed_hosts=LOCAL))
    with pytest.raises(TransientSendError, match="error 429"):
        await send(provider, message("chat", f"{sink.url}/teams/legacy-429", text="Hi"))
    with pytest.raises(TransientSendError, match="HTTP 502"):
        await send(provider, message("chat", f"{sink.url}/teams/fail-502", text="Hi"))
    with pytest.raises(PermanentSendError, match="HTTP 404") as gone:
        await send(provider, message("chat", f"{sink.url}/teams/gone", text="Hi"))
    assert gone.value.suppress == "hard_bounce"
    with pytest.raises(PermanentSendError, match="AdaptiveCard"):
        await send(provider, message("chat", "", text="Hi", blocks='{"type": "Card"}'))
    with pytest.raises(PermanentSendError, match="no 'text' part"):
        await send(provider, message("chat", ""))


# --- Standard Webhooks -------------------------------------------------------


async def test_webhook_is_signed_and_verified(sink: Sink) -> None:
    provider = StandardWebhook(
        WebhookConfig(WEBHOOK_SECRET, f"{sink.url}/webhooks/crm", allowed_hosts=LOCAL)
    )
    outgoing = message("webhook", "", title="Welcome")
    raw = '{"event": "welcome", "n": 1}'

    assert await send(provider, outgoing) == outgoing.delivery_id
    await send(provider, message("webhook", f"{sink.url}/webhooks/erp", body=raw))

    first, second = sink.records("webhook")
    assert first["provider_id"] == outgoing.delivery_id
    assert first["payload"] == {
        "type": "message",
        "contact_key": "c-ann",
        "parts": {"title": "Welcome"},
    }
    assert (second["to"], second["payload"]) == ("erp", {"event": "welcome", "n": 1})


async def test_webhook_errors(sink: Sink) -> None:
    provider = StandardWebhook(
        WebhookConfig(WEBHOOK_SECRET, f"{sink.url}/webhooks/crm", allowed_hosts=LOCAL)
    )
    with pytest.raises(PermanentSendError, match="HTTP 401"):
        wrong = StandardWebhook(WebhookConfig("whsec_" + "A" * 32, f"{sink.url}/webhooks/crm"))
        await send(wrong, message("webhook", "", title="hi"))
    with pytest.raises(PermanentSendError, match="endpoint is gone") as gone:
        await send(provider, message("webhook", f"{sink.url}/webhooks/gone", title="hi"))
    assert gone.value.suppress == "hard_bounce"
    with pytest.raises(TransientSendError) as limited:
        await send(provider, message("webhook", f"{sink.url}/webhooks/crm?fail=429", title="hi"))
    assert limited.value.retry_after_seconds == 2
    with pytest.raises(PermanentSendError, match="not valid JSON"):
        await send(provider, message("webhook", "", body="{nope"))
    assert sink.records() == []


def test_standard_webhooks_reference_vector_and_refusals() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = '{"test": 2432232314}'
    at = 1614265330.0
    assert verify_standard_webhook(WEBHOOK_SECRET, headers, body, now=at)
    assert verify_standard_webhook(WEBHOOK_SECRET, headers, body.encode(), now=at + 299)
    rotated = {
        **headers,
        "webhook-signature": "v1,bm90IHRoaXMgb25l " + headers["webhook-signature"],
    }
    assert verify_standard_webhook(WEBHOOK_SECRET, rotated, body, now=at)

    assert not verify_standard_webhook(WEBHOOK_SECRET, headers, body + " ", now=at)
    assert not verify_standard_webhook(WEBHOOK_SECRET, headers, body, now=at + 301)
    assert not verify_standard_webhook(WEBHOOK_SECRET, headers, body, now=at - 301)
    assert not verify_standard_webhook("whsec_" + "A" * 32, headers, body, now=at)
    other_id = {**headers, "webhook-id": "msg_other"}
    assert not verify_standard_webhook(WEBHOOK_SECRET, other_id, body, now=at)


def test_standard_webhooks_round_trip() -> None:
    key_bytes = b"plain secret"
    now = int(time.time())
    body = b'{"type":"message"}'
    headers = {
        "Webhook-Id": "d-1",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": sign(key_bytes, "d-1", now, body),
    }
    assert verify_standard_webhook("plain secret", headers, body)
    assert not verify_standard_webhook("plain secret", headers, b'{"type":"other"}')
    old = {**headers, "Webhook-Timestamp": str(now - 600)}
    old["Webhook-Signature"] = sign(key_bytes, "d-1", now - 600, body)
    assert not verify_standard_webhook("plain secret", old, body)


# --- Connections -------------------------------------------------------------

SIMPLE: dict[str, Callable[[str], tuple[ChannelProvider, OutgoingMessage]]] = {
    "twilio": lambda base: (twilio(base, timeout=0.5), message("sms", "+15551234567", text="x")),
    "vonage": lambda base: (vonage(base, timeout=0.5), message("sms", "+447700900000", text="x")),
    "slack": lambda base: (
        SlackWebhook(SlackConfig(f"{base}/slack/ops", 0.5)),
        message("chat", "", text="x"),
    ),
    "teams": lambda base: (
        TeamsWebhook(TeamsConfig(f"{base}/teams/ops", 0.5)),
        message("chat", "", text="x"),
    ),
    "webhook": lambda base: (
        StandardWebhook(WebhookConfig(WEBHOOK_SECRET, timeout_seconds=0.5, allowed_hosts=LOCAL)),
        message("webhook", f"{base}/webhooks/crm", title="x"),
    ),
}


@pytest.mark.parametrize("name", sorted(SIMPLE))
async def test_connection_refused_is_retried(name: str) -> None:
    provider, outgoing = SIMPLE[name](refused_url())
    with pytest.raises(TransientSendError, match="could not reach"):
        await send(provider, outgoing)


@pytest.mark.parametrize("name", sorted(SIMPLE))
async def test_no_answer_after_the_request_is_ambiguous(name: str, silent_url: str) -> None:
    provider, outgoing = SIMPLE[name](silent_url)
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError, match="may have been sent"):
        await send(provider, outgoing)
    assert time.monotonic() - started < 5


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after(httpx.Response(429, headers={"Retry-After": "7"})) == 7
    dated = retry_after(httpx.Response(429, headers={"Retry-After": later}))
    assert dated is not None and 25 < dated <= 30
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(429)) is None
