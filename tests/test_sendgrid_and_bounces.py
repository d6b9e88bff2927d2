"""SendGrid over real HTTP against the provider sink; its event webhook; bounce diagnosis.

The DSNs and complaints are built with the stdlib `email` package in the
shapes Postfix, Gmail and Yahoo send, serialized, and parsed back, so the
parser sees bytes as they arrive in a bounce mailbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mailbox
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.activities.channels import (
    AmbiguousSendError,
    EmailProvider,
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.bounces import (
    DELIVERY_HEADER,
    Bounce,
    BounceClass,
    classify_smtp,
    parse_dsn,
    scan_maildir,
)
from tidings.activities.channels.sendgrid import (
    SendGridConfig,
    SendGridEmail,
    classify,
    parse_events,
    verify_event_webhook,
)
from tidings.activities.send import DELIVERY_HEADER as SEND_DELIVERY_HEADER
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service

SENDER = "Acme Shop <hello@acme.example>"
UNSUBSCRIBE = "<https://acme.example/u/tok-1>, <mailto:unsub@acme.example?subject=tok-1>"


@dataclass
class Sink:
    url: str
    record_path: Path

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.record_path, channel="email")


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[Sink]:
    record_path = tmp_path / "sink.jsonl"
    app = create_sink_app(record_path)
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield Sink(url, record_path)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """Takes the connection and the request, and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def sendgrid(base_url: str, *, api_key: str = "SG.test-key", timeout: float = 5) -> EmailProvider:
    return SendGridEmail(SendGridConfig(api_key, base_url, timeout))


def outgoing(to: str = "ann@example.com", **changes: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "sender": SENDER,
        "to": to,
        "subject": "Your order has shipped",
        "text": "It is on its way.",
        "html": "<p>It is on its way.</p>",
        "message_id": "<3f2a@acme.example>",
        "headers": {
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            DELIVERY_HEADER: "d-7f3a",
        },
    }
    return OutgoingEmail(**{**fields, **changes})


async def send(provider: EmailProvider, email: OutgoingEmail) -> str:
    return await asyncio.to_thread(provider.send, email)


# --- SendGrid: sending ---------------------------------------------------------


async def test_sendgrid_posts_the_v3_json_and_returns_the_message_id(sink: Sink) -> None:
    message_id = await send(sendgrid(sink.url), outgoing())

    [record] = sink.records()
    assert (record["provider"], record["to"], record["provider_id"]) == (
        "sendgrid",
        "ann@example.com",
        message_id,
    )
    assert len(message_id) == 22
    assert record["parts"] == {
        "subject": "Your order has shipped",
        "text": "It is on its way.",
        "html": "<p>It is on its way.</p>",
    }
    assert record["payload"] == {
        "personalizations": [{"to": [{"email": "ann@example.com"}]}],
        "from": {"email": "hello@acme.example", "name": "Acme Shop"},
        "subject": "Your order has shipped",
        "content": [
            {"type": "text/plain", "value": "It is on its way."},
            {"type": "text/html", "value": "<p>It is on its way.</p>"},
        ],
        "headers": {
            "Message-ID": "<3f2a@acme.example>",
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Tidings-Delivery": "d-7f3a",
        },
        "custom_args": {"delivery_id": "d-7f3a"},
    }


async def test_sendgrid_text_only_and_reply_to(sink: Sink) -> None:
    headers = {"Reply-To": "Support <help@acme.example>", DELIVERY_HEADER: "d-1"}
    await send(
        sendgrid(sink.url), outgoing(html=None, sender="hello@acme.example", headers=headers)
    )

    payload = sink.records()[0]["payload"]
    assert payload["from"] == {"email": "hello@acme.example"}
    assert payload["content"] == [{"type": "text/plain", "value": "It is on its way."}]
    # Reply-To is reserved as a header: it travels as the reply_to object.
    assert payload["reply_to"] == {"email": "help@acme.example", "name": "Support"}
    assert "Reply-To" not in payload["headers"]


async def test_sendgrid_rate_limits_and_outages_are_retried(sink: Sink) -> None:
    with pytest.raises(TransientSendError, match="too many requests") as limited:
        await send(sendgrid(sink.url), outgoing("fail-429@example.com"))
    assert limited.value.retry_after_seconds == 2
    with pytest.raises(TransientSendError, match="HTTP 500: internal error"):
        await send(sendgrid(sink.url), outgoing("fail-500@example.com"))
    with pytest.raises(TransientSendError, match="HTTP 503") as unavailable:
        await send(sendgrid(f"{sink.url}/fail/503"), outgoing())
    assert unavailable.value.retry_after_seconds == 2
    assert sink.records() == []


async def test_sendgrid_refusals_are_permanent_in_sendgrids_words(sink: Sink) -> None:
    with pytest.raises(PermanentSendError, match="Does not contain a valid address") as bad:
        await send(sendgrid(sink.url), outgoing("ann.example.com"))
    assert "personalizations.0.to.0.email" in str(bad.value)
    assert bad.value.suppress is None
    with pytest.raises(PermanentSendError, match="HTTP 400: headers: The header Subject"):
        await send(sendgrid(sink.url), outgoing(headers={"Subject": "again"}))
    with pytest.raises(PermanentSendError, match="verified Sender Identity") as identity:
        await send(sendgrid(sink.url), outgoing(sender="unverified@acme.example"))
    assert "TIDINGS_SENDGRID_API_KEY" in str(identity.value)
    with pytest.raises(PermanentSendError, match=r"HTTP 401.*TIDINGS_SENDGRID_API_KEY"):
        await send(sendgrid(sink.url, api_key="wrong"), outgoing())
    with pytest.raises(PermanentSendError, match="no API key"):
        await send(sendgrid(sink.url, api_key=" "), outgoing())
    with pytest.raises(PermanentSendError, match="no email address"):
        await send(sendgrid(sink.url), outgoing(sender="Acme Shop"))
    assert sink.records() == []


async def test_sendgrid_connection_refused_is_retried_and_silence_is_ambiguous(
    silent_url: str,
) -> None:
    with pytest.raises(TransientSendError, match="could not reach"):
        await send(sendgrid(f"http://127.0.0.1:{free_port()}"), outgoing())
    with pytest.raises(AmbiguousSendError, match="may have been sent"):
        await send(sendgrid(silent_url, timeout=0.5), outgoing())


async def test_sendgrid_success_without_a_message_id_is_uncertain(sink: Sink) -> None:
    """A 2xx with no X-Message-Id (a 200, as in sandbox mode): not retried, not sent."""
    with pytest.raises(AmbiguousSendError, match="without an X-Message-Id"):
        await send(sendgrid(f"{sink.url}/fail/200"), outgoing())


def test_sendgrid_classification_of_answers() -> None:
    reset = str(int(time.time()) + 30)
    limited = classify(httpx.Response(429, headers={"X-RateLimit-Reset": reset}))
    assert isinstance(limited, TransientSendError)
    assert limited.retry_after_seconds is not None and 25 < limited.retry_after_seconds <= 30

    body = {
        "errors": [
            {"message": "The subject is required.", "field": "subject", "help": None},
            {"message": "Invalid type. Expected: object", "field": "from", "help": None},
        ]
    }
    refused = classify(httpx.Response(400, json=body))
    assert isinstance(refused, PermanentSendError)
    assert str(refused) == (
        "sendgrid: HTTP 400: subject: The subject is required.; "
        "from: Invalid type. Expected: object"
    )
    too_big = classify(httpx.Response(413, text="Payload Too Large"))
    assert isinstance(too_big, PermanentSendError) and "Payload Too Large" in str(too_big)
    moved = classify(httpx.Response(301, headers={"Location": "https://api.eu.sendgrid.com"}))
    assert isinstance(moved, PermanentSendError) and "api.eu.sendgrid.com" in str(moved)


def test_the_delivery_header_is_the_one_send_sets() -> None:
    assert DELIVERY_HEADER == SEND_DELIVERY_HEADER


# --- SendGrid: Signed Event Webhook --------------------------------------------


def p256_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh key pair; the public half as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()


def sign_batch(key: ec.EllipticCurvePrivateKey, payload: bytes, timestamp: str) -> str:
    signature = key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def test_event_webhook_signature_is_verified() -> None:
    key, public = p256_key()
    payload = json.dumps(SENDGRID_BATCH).encode() + b"\r\n"
    timestamp = str(int(time.time()))
    signature = sign_batch(key, payload, timestamp)

    assert verify_event_webhook(public, payload, signature, timestamp)
    assert verify_event_webhook(public, payload, signature, timestamp, max_age_seconds=300)

    assert not verify_event_webhook(
        public, payload.replace(b"bounce", b"bounced"), signature, timestamp
    )
    assert not verify_event_webhook(public, payload.rstrip(), signature, timestamp)
    assert not verify_event_webhook(public, payload, signature, str(int(timestamp) + 1))
    assert not verify_event_webhook(p256_key()[1], payload, signature, timestamp)


def test_event_webhook_refuses_what_is_not_a_p256_signature() -> None:
    key, public = p256_key()
    payload, timestamp = b"[]", "1717408800"
    signature = sign_batch(key, payload, timestamp)
    assert verify_event_webhook(public, payload, signature, timestamp)
    assert not verify_event_webhook(
        public, payload, signature, timestamp, max_age_seconds=300, now=1717408800 + 301
    )
    assert not verify_event_webhook(public, payload, "not base64!", timestamp)
    assert not verify_event_webhook(
        public, payload, base64.b64encode(b"x" * 70).decode(), timestamp
    )
    assert not verify_event_webhook("bm90IGEga2V5", payload, signature, timestamp)

    p384 = ec.generate_private_key(ec.SECP384R1())
    der = p384.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other = base64.b64encode(p384.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256())))
    assert not verify_event_webhook(
        base64.b64encode(der).decode(), payload, other.decode(), timestamp
    )


# --- SendGrid: events ------------------------------------------------------------

MESSAGE = "W5Df3yhVQNWwN_RNOUdEdA"  # the X-Message-Id the send returned
COMMON = {"smtp-id": "<3f2a@acme.example>", "category": ["shipping"], "delivery_id": "d-7f3a"}
SENDGRID_BATCH: list[dict[str, Any]] = [
    {
        "email": "ann@example.com",
        "timestamp": 1717408800,
        "event": "processed",
        "sg_event_id": "cHJvY2Vzc2VkLTEyMzQ1Njc4",
        "sg_message_id": f"{MESSAGE}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717408805,
        "event": "deferred",
        "response": "400 4.2.2 try again later",
        "attempt": "1",
        "sg_event_id": "ZGVmZXJyZWQtMTIzNDU2Nzg",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717408860,
        "event": "delivered",
        "response": "250 2.0.0 OK 1717408860 a1si123456qkb.42 - gsmtp",
        "ip": "168.1.1.1",
        "tls": 1,
        "sg_event_id": "ZGVsaXZlcmVkLTEyMzQ1Njc4",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717409000,
        "event": "open",
        "sg_machine_open": False,
        "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        "ip": "255.255.255.255",
        "sg_event_id": "b3Blbi0xMjM0NTY3OA",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717409010,
        "event": "click",
        "url": "https://acme.example/orders/42",
        "url_offset": {"index": 0, "type": "html"},
        "sg_event_id": "Y2xpY2stMTIzNDU2Nzg",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "gone@example.com",
        "timestamp": 1717409100,
        "event": "bounce",
        "bounce_classification": "Invalid Address",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
        "type": "bounce",
        "sg_event_id": "Ym91bmNlLTEyMzQ1Njc4",
        "sg_message_id": "Xq2LzB7mTqO5cYl0sR1gHw.filterdrecv-5bd8b8b7c-7kqzj-1-665D9A2C-1.0",
        "delivery_id": "d-gone",
    },
    {
        "email": "bob@corp.example",
        "timestamp": 1717409110,
        "event": "bounce",
        "bounce_classification": "Reputation",
        "reason": "554 5.7.1 Service unavailable; Client host [168.1.1.1] blocked using "
        "zen.spamhaus.org",
        "status": "5.7.1",
        "type": "blocked",
        "sg_event_id": "YmxvY2tlZC0xMjM0NTY3OA",
        "sg_message_id": "Cj9pQw3nS8yK1dVf6bTzAg.filterdrecv-5bd8b8b7c-7kqzj-1-665D9A2C-2.0",
        "delivery_id": "d-bob",
    },
    {
        "email": "old@example.com",
        "timestamp": 1717409120,
        "event": "dropped",
        "reason": "Bounced Address",
        "status": "5.0.0",
        "sg_event_id": "ZHJvcHBlZC0xMjM0NTY3OA",
        "sg_message_id": "Lm4rTy8uVw2xYz6aBc0dEf.filterdrecv-5bd8b8b7c-7kqzj-1-665D9A2C-3.0",
        "unique_args": {"delivery_id": "d-old"},
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717409200,
        "event": "spamreport",
        "sg_event_id": "c3BhbXJlcG9ydC0xMjM0NTY3OA",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717409300,
        "event": "unsubscribe",
        "sg_event_id": "dW5zdWJzY3JpYmUtMTIzNDU2Nzg",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
    {
        "email": "ann@example.com",
        "timestamp": 1717409400,
        "event": "group_resubscribe",
        "asm_group_id": 10,
        "sg_event_id": "Z3JvdXAtcmVzdWJzY3JpYmU",
        "sg_message_id": f"{MESSAGE}.filter0001.16648.5515E0B88.0",
        **COMMON,
    },
]


def test_parse_events_maps_a_sendgrid_batch() -> None:
    events = parse_events(json.dumps(SENDGRID_BATCH).encode())

    assert [e.kind for e in events] == [
        "queued",
        "deferred",
        "delivered",
        "opened",
        "clicked",
        "bounced",
        "bounced",
        "dropped",
        "complained",
        "unsubscribed",
    ]  # group_resubscribe is not a delivery event: left out
    queued, deferred, delivered, _, clicked, gone, blocked, dropped, complaint, _ = events
    assert queued.event_id == "cHJvY2Vzc2VkLTEyMzQ1Njc4"
    assert queued.send_message_id == MESSAGE
    assert queued.delivery_id == "d-7f3a"
    assert queued.at == datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
    assert deferred.reason == "400 4.2.2 try again later"
    assert delivered.reason.startswith("250 2.0.0 OK")
    assert clicked.url == "https://acme.example/orders/42"

    assert (gone.email, gone.status, gone.bounce_type) == ("gone@example.com", "5.1.1", "bounce")
    assert gone.bounce_class == "hard" and gone.suppress_reason() == "hard_bounce"
    assert gone.delivery_id == "d-gone"
    assert blocked.bounce_class == "block" and blocked.suppress_reason() is None
    assert (dropped.delivery_id, dropped.suppress_reason()) == ("d-old", "hard_bounce")
    assert complaint.suppress_reason() == "complaint"
    assert [e.suppress_reason() for e in (queued, deferred, delivered, clicked)] == [None] * 4


def test_parse_events_refuses_what_is_not_a_batch() -> None:
    with pytest.raises(ValueError, match="JSON array"):
        parse_events(b'{"event": "delivered"}')
    with pytest.raises(ValueError, match="must be JSON"):
        parse_events(b"[{")
    assert parse_events("[1, null, {}]") == []


# --- Bounce classification -----------------------------------------------------

CLASSIFICATIONS: list[tuple[int, str | None, str, BounceClass]] = [
    (550, "5.1.1", "The email account that you tried to reach does not exist.", "hard"),
    (550, None, "5.1.1 <ann@example.com>: Recipient address rejected: User unknown", "hard"),
    (550, None, "Requested action not taken: mailbox unavailable", "hard"),
    (550, None, "No such user here", "hard"),
    (554, None, "delivery error: dd This user doesn't exist (user unknown)", "hard"),
    (553, "5.1.3", "Recipient address syntax error", "hard"),
    (550, "5.1.10", "Recipient address has null MX", "hard"),
    (550, "5.2.1", "The email account that you tried to reach is disabled.", "hard"),
    (552, "5.2.2", "The email account that you tried to reach is over quota.", "soft"),
    (552, None, "Requested mail action aborted: exceeded storage allocation", "soft"),
    (550, None, "Mailbox full", "soft"),
    (450, "4.2.1", "The user you are trying to contact is receiving mail too quickly.", "soft"),
    (451, "4.4.1", "Connection timed out", "soft"),
    (421, "4.7.0", "Our system has detected unusual rate of unsolicited mail", "soft"),
    (
        550,
        "5.7.1",
        "Our system has detected that this message is likely unsolicited mail. To reduce "
        "the amount of spam sent to Gmail, this message has been blocked.",
        "spam",
    ),
    (
        554,
        "5.7.1",
        "Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
        "block",
    ),
    (550, "5.7.1", "Sender IP reputation too low", "block"),
    (
        550,
        "5.7.26",
        "Unauthenticated email from acme.example is not accepted due to domain's DMARC policy.",
        "block",
    ),
    (550, "5.7.1", "Relaying denied", "block"),
    (550, "5.1.8", "Sender address rejected: Domain not found", "block"),
    (554, None, "Message rejected as spam by Content Filtering", "spam"),
    (550, None, "Message refused: host is listed on a blacklist", "block"),
    (552, "5.3.4", "Message size exceeds fixed maximum message size", "block"),
    (550, "5.0.0", "Recipient rejected", "hard"),
    (550, None, "host 10.4.4.1 said: Recipient rejected", "hard"),  # an IP is no 4.4.1
    (550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP lookup", "hard"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "expected"), CLASSIFICATIONS)
def test_classify_smtp(code: int, enhanced: str | None, text: str, expected: BounceClass) -> None:
    assert classify_smtp(code, enhanced, text) == expected


# --- DSNs and complaints -----------------------------------------------------------


def original_message(to: str, delivery_id: str) -> EmailMessage:
    message = EmailMessage()
    message["Return-Path"] = "<bounces@acme.example>"
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = "Your order has shipped"
    message["Date"] = "Mon, 03 Jun 2024 10:00:00 +0000"
    message["Message-ID"] = f"<{delivery_id}@acme.example>"
    message["List-Unsubscribe"] = UNSUBSCRIBE
    message[DELIVERY_HEADER] = delivery_id
    message.set_content("It is on its way.\n")
    return message


def status_part(per_message: dict[str, str], recipients: list[dict[str, str]]) -> Message:
    """message/delivery-status: a block of fields per message, then one per recipient."""
    part = Message()
    part["Content-Description"] = "Delivery report"
    part["Content-Type"] = "message/delivery-status"
    blocks: list[Message | str] = []
    for fields in (per_message, *recipients):
        block = Message()
        for name, value in fields.items():
            block[name] = value
        blocks.append(block)
    part.set_payload(blocks)
    return part


def headers_part(original: EmailMessage) -> MIMEText:
    """text/rfc822-headers: what an MTA returns when the message is too big to return."""
    headers = "".join(f"{name}: {value}\n" for name, value in original.items())
    return MIMEText(headers, "rfc822-headers", "us-ascii")


def report(kind: str, subject: str, sender: str, parts: list[Message]) -> bytes:
    """multipart/report as the MTA writes it, serialized, as it lands in a mailbox."""
    message = MIMEMultipart("report", report_type=kind)
    message["Return-Path"] = "<>"
    message["From"] = sender
    message["To"] = "bounces@acme.example"
    message["Subject"] = subject
    message["Date"] = "Mon, 03 Jun 2024 10:00:02 +0000 (UTC)"
    message["Auto-Submitted"] = "auto-replied"
    message.preamble = "This is a MIME-encapsulated message.\n"
    for part in parts:
        message.attach(part)
    return message.as_bytes()


def parse(raw: bytes) -> list[Bounce]:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return parse_dsn(message)


POSTFIX_MESSAGE = {
    "Reporting-MTA": "dns; mail.acme.example",
    "X-Postfix-Queue-ID": "3F1A2C0123",
    "X-Postfix-Sender": "rfc822; bounces@acme.example",
    "Arrival-Date": "Mon,  3 Jun 2024 10:00:00 +0000 (UTC)",
}


def postfix_notification(text: str) -> MIMEText:
    part = MIMEText(
        "This is the mail system at host mail.acme.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n" + text,
        "plain",
        "us-ascii",
    )
    part["Content-Description"] = "Notification"
    return part


def postfix_hard_bounce() -> bytes:
    diagnostic = (
        "smtp; 550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown in "
        "virtual mailbox table"
    )
    returned = MIMEMessage(original_message("ann@example.com", "d-ann"))
    returned["Content-Description"] = "Undelivered Message"
    return report(
        "delivery-status",
        "Undelivered Mail Returned to Sender",
        "MAILER-DAEMON@mail.acme.example (Mail Delivery System)",
        [
            postfix_notification("<ann@example.com>: host mx.example.com[192.0.2.10] said: 550"),
            status_part(
                POSTFIX_MESSAGE,
                [
                    {
                        "Final-Recipient": "rfc822; ann@example.com",
                        "Original-Recipient": "rfc822;ann@example.com",
                        "Action": "failed",
                        "Status": "5.1.1",
                        "Remote-MTA": "dns; mx.example.com",
                        "Diagnostic-Code": diagnostic,
                    }
                ],
            ),
            returned,
        ],
    )


def gmail_parts(text: str) -> Message:
    """Gmail's human part: multipart/related around text and HTML, with an icon."""
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText(text, "plain", "utf-8"))
    alternative.attach(MIMEText(f"<html><body><p>{text}</p></body></html>", "html", "utf-8"))
    related = MIMEMultipart("related")
    related.attach(alternative)
    icon = MIMEBase("image", "png", name="icon.png")
    icon.set_payload(base64.b64encode(b"\x89PNG\r\n\x1a\n").decode())
    icon["Content-Transfer-Encoding"] = "base64"
    icon["Content-ID"] = "<icon.png>"
    related.attach(icon)
    return related


def gmail_delay() -> bytes:
    diagnostic = (
        "smtp; The recipient server did not accept our requests to connect. Learn more at "
        "https://support.google.com/mail/answer/7720 [mx.slow.example. 203.0.113.5: timed out]"
    )
    return report(
        "delivery-status",
        "Delivery Status Notification (Delay)",
        "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        [
            gmail_parts("Message not delivered yet: Gmail will retry for 46 more hours."),
            status_part(
                {
                    "Reporting-MTA": "dns; googlemail.com",
                    "Arrival-Date": "Mon, 03 Jun 2024 03:00:00 -0700 (PDT)",
                    "X-Original-Message-ID": "<d-bob@acme.example>",
                },
                [
                    {
                        "Final-Recipient": "rfc822; bob@slow.example",
                        "Action": "delayed",
                        "Status": "4.4.1",
                        "Diagnostic-Code": diagnostic,
                        "Last-Attempt-Date": "Mon, 03 Jun 2024 07:00:00 -0700 (PDT)",
                        "Will-Retry-Until": "Wed, 05 Jun 2024 03:00:00 -0700 (PDT)",
                    }
                ],
            ),
            headers_part(original_message("bob@slow.example", "d-bob")),
        ],
    )


def gmail_hard_bounce() -> bytes:
    diagnostic = (
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        " 550-5.1.1 double-checking the recipient's email address for typos or\n"
        " 550-5.1.1 unnecessary spaces. Learn more at\n"
        " 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.42 - gsmtp"
    )
    return report(
        "delivery-status",
        "Delivery Status Notification (Failure)",
        "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        [
            gmail_parts("Address not found"),
            status_part(
                {"Reporting-MTA": "dns; googlemail.com"},
                [
                    {
                        "Final-Recipient": "rfc822; nobody@gmail.com",
                        "Action": "failed",
                        "Status": "5.1.1",
                        "Remote-MTA": "dns; gmail-smtp-in.l.google.com. (142.250.0.26)",
                        "Diagnostic-Code": diagnostic,
                    }
                ],
            ),
            headers_part(original_message("nobody@gmail.com", "d-nobody")),
        ],
    )


def postfix_multi_recipient() -> bytes:
    def failed(address: str, status: str, reply: str) -> dict[str, str]:
        return {
            "Final-Recipient": f"rfc822; {address}",
            "Original-Recipient": f"rfc822;{address}",
            "Action": "failed",
            "Status": status,
            "Remote-MTA": "dns; mx.corp.example",
            "Diagnostic-Code": f"smtp; {reply}",
        }

    recipients = [
        failed("ann@corp.example", "5.1.1", "550 5.1.1 <ann@corp.example>: User unknown"),
        failed("bob@corp.example", "5.2.2", "552 5.2.2 <bob@corp.example>: Mailbox full"),
        failed("cy@corp.example", "5.7.1", "550 5.7.1 Message rejected as spam"),
        {"Final-Recipient": "rfc822; dee@corp.example", "Action": "relayed", "Status": "2.0.0"},
    ]
    return report(
        "delivery-status",
        "Undelivered Mail Returned to Sender",
        "MAILER-DAEMON@mail.acme.example (Mail Delivery System)",
        [
            postfix_notification("Several recipients failed."),
            status_part(POSTFIX_MESSAGE, recipients),
            MIMEMessage(original_message("team@corp.example", "d-team")),
        ],
    )


def arf_complaint(*, feedback_type: str = "abuse", redacted: bool = False) -> bytes:
    """An ARF report (RFC 5965) as a feedback loop sends it."""
    fields = {
        "Feedback-Type": feedback_type,
        "User-Agent": "Yahoo!-Mail-Feedback/2.0",
        "Version": "1",
        "Original-Mail-From": "<bounces@acme.example>",
        "Arrival-Date": "Mon, 03 Jun 2024 10:00:01 +0000",
        "Source-IP": "192.0.2.44",
        "Reported-Domain": "acme.example",
    }
    if not redacted:
        fields["Original-Rcpt-To"] = "<dora@yahoo.example>"
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload("".join(f"{name}: {value}\n" for name, value in fields.items()))
    original = original_message(
        "Redacted <redacted@yahoo.example>" if redacted else "Dora <dora@yahoo.example>", "d-dora"
    )
    return report(
        "feedback-report",
        "FW: Your order has shipped",
        "Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>",
        [
            MIMEText("This is an email abuse report for an email message received from IP "
                     "192.0.2.44 on Mon, 03 Jun 2024 10:00:01 +0000.\n", "plain", "us-ascii"),
            feedback,
            MIMEMessage(original),
        ],
    )  # fmt: skip


def test_postfix_hard_bounce() -> None:
    [bounce] = parse(postfix_hard_bounce())
    assert bounce == Bounce(
        recipient="ann@example.com",
        action="failed",
        status="5.1.1",
        diagnostic="550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
        bounce_class="hard",
        delivery_id="d-ann",
    )
    assert bounce.suppress_reason() == "hard_bounce"


def test_gmail_hard_bounce_joins_the_multi_line_reply() -> None:
    [bounce] = parse(gmail_hard_bounce())
    assert bounce.recipient == "nobody@gmail.com"
    assert bounce.delivery_id == "d-nobody"  # from text/rfc822-headers
    assert bounce.diagnostic == (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "Learn more at https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.42 - gsmtp"
    )
    assert bounce.suppress_reason() == "hard_bounce"


def test_gmail_delay_is_soft() -> None:
    [bounce] = parse(gmail_delay())
    assert (bounce.recipient, bounce.action, bounce.status) == (
        "bob@slow.example",
        "delayed",
        "4.4.1",
    )
    assert bounce.diagnostic.startswith("The recipient server did not accept")
    assert (bounce.bounce_class, bounce.delivery_id) == ("soft", "d-bob")
    assert bounce.suppress_reason() is None


def test_multi_recipient_dsn() -> None:
    bounces = parse(postfix_multi_recipient())
    assert [(b.recipient, b.status, b.bounce_class, b.suppress_reason()) for b in bounces] == [
        ("ann@corp.example", "5.1.1", "hard", "hard_bounce"),
        ("bob@corp.example", "5.2.2", "soft", None),
        ("cy@corp.example", "5.7.1", "spam", None),  # refused as spam: not a complaint
    ]  # dee was relayed: not a bounce
    assert {b.delivery_id for b in bounces} == {"d-team"}


def test_arf_complaint() -> None:
    [complaint] = parse(arf_complaint())
    assert complaint == Bounce(
        recipient="dora@yahoo.example",
        action="complained",
        status="",
        diagnostic="abuse",
        bounce_class="spam",
        delivery_id="d-dora",
    )
    assert complaint.suppress_reason() == "complaint"

    # Feedback loops often redact the recipient: the delivery id still finds it.
    [redacted] = parse(arf_complaint(redacted=True))
    assert (redacted.recipient, redacted.delivery_id) == ("redacted@yahoo.example", "d-dora")
    assert parse(arf_complaint(feedback_type="not-spam")) == []


def test_ordinary_mail_is_not_a_bounce() -> None:
    assert parse(original_message("ann@example.com", "d-1").as_bytes()) == []
    other = MIMEMultipart("report", report_type="disposition-notification")
    other.attach(MIMEText("Your message was displayed.", "plain"))
    assert parse(other.as_bytes()) == []


def test_scan_maildir(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(postfix_hard_bounce())
    box.add(original_message("ops@acme.example", "d-x").as_bytes())  # a reply, say
    box.add(gmail_delay())
    seen = mailbox.MaildirMessage(arf_complaint())
    seen.set_subdir("cur")
    seen.add_flag("S")
    box.add(seen)

    bounces = scan_maildir(tmp_path / "bounces")

    assert sorted((b.recipient, b.action, b.delivery_id) for b in bounces) == [
        ("ann@example.com", "failed", "d-ann"),
        ("bob@slow.example", "delayed", "d-bob"),
        ("dora@yahoo.example", "complained", "d-dora"),
    ]
    assert scan_maildir(str(tmp_path / "bounces")) == bounces
