"""Reading what the dev channels received (`tidings outbox`)."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from pydantic import BaseModel

from tidings.activities.send import DELIVERY_HEADER
from tidings.starter.provider_sink import read_records


class OutboxMessage(BaseModel):
    channel: str
    received_at: datetime
    to: str
    sender: str
    subject: str
    delivery_id: str | None
    message_id: str | None
    text: str
    html: str | None


def read_email_outbox(maildir: Path, *, to: str | None = None) -> list[OutboxMessage]:
    """Messages in delivery order; `to` keeps those delivered to that address."""
    if not maildir.is_dir():
        return []
    box = mailbox.Maildir(maildir, factory=None, create=False)
    found = []
    parser = BytesParser(policy=policy.default)
    for key in box.iterkeys():
        raw = box.get_bytes(key)
        message = parser.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        recipient = str(message.get("Delivered-To", message.get("To", "")))
        if to is not None and recipient.lower() != to.lower():
            continue
        found.append(_view(message, recipient, box.get_message(key).get_date()))
    return sorted(found, key=lambda m: m.received_at)


def _view(message: EmailMessage, recipient: str, delivered: float) -> OutboxMessage:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return OutboxMessage(
        channel="email",
        received_at=datetime.fromtimestamp(delivered, UTC),
        to=recipient,
        sender=str(message.get("From", "")),
        subject=str(message.get("Subject", "")),
        delivery_id=message.get(DELIVERY_HEADER),
        message_id=message.get("Message-ID"),
        text=_lines(text.get_content()) if text is not None else "",
        html=_lines(html.get_content()) if html is not None else None,
    )


def _lines(content: str) -> str:
    return content.replace("\r\n", "\n")


def read_provider_outbox(path: Path, *, to: str | None = None) -> list[OutboxMessage]:
    """What the SendGrid, SMS, push, chat and webhook stand-ins of `tidings dev` accepted."""
    found = []
    for record in read_records(path):
        recipient = str(record.get("to") or "")
        if to is not None and recipient.lower() != to.lower():
            continue
        parts = record.get("parts") or {}
        text = str(parts.get("text") or parts.get("body") or json.dumps(parts))
        found.append(
            OutboxMessage(
                channel=str(record["channel"]),
                received_at=datetime.fromisoformat(str(record["received_at"])),
                to=recipient,
                sender=str(record.get("provider") or ""),
                # SendGrid email has a subject; push a title; SMS only its first line.
                subject=str(
                    parts.get("subject") or parts.get("title") or text.splitlines()[0]
                    if text
                    else ""
                ),
                delivery_id=None,
                message_id=str(record.get("provider_id") or "") or None,
                text=text,
                html=str(parts["html"]) if parts.get("html") else None,
            )
        )
    return found
