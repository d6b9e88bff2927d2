"""A local SMTP server that keeps every message in a Maildir (dev and tests).

Each recipient gets its own copy with `Delivered-To` and `Return-Path`
headers, the way a real delivery agent writes one. Replies can be scripted
(451 then 250, a 550 for one address) so tests can drive retries and
permanent failures over real SMTP.
"""

from __future__ import annotations

import mailbox
from collections import deque
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tidings.starter.ports import free_port

ACCEPTED = "250 2.0.0 Message accepted for delivery"
DROP_AFTER_ACCEPT = "drop"
"""A scripted reply: keep the message, then close the connection before answering."""


class MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        for part in ("tmp", "new", "cur"):
            (maildir / part).mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(maildir, create=False)
        self.data_replies: deque[str] = deque()
        self.rcpt_replies: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.data_replies.popleft() if self.data_replies else ACCEPTED
        if not reply.startswith("250") and reply != DROP_AFTER_ACCEPT:
            return reply
        self._keep(session, envelope)
        if reply == DROP_AFTER_ACCEPT:
            server.transport.close()
        return ACCEPTED

    def _keep(self, session: Any, envelope: Any) -> None:
        content: bytes = envelope.original_content or envelope.content
        peer = session.peer[0] if session.peer else "unknown"
        for recipient in envelope.rcpt_tos:
            trace = (
                f"Return-Path: <{envelope.mail_from}>\r\n"
                f"Delivered-To: {recipient}\r\n"
                f"Received: from {peer} by tidings-dev-smtp; {formatdate(localtime=False)}\r\n"
            ).encode()
            self.maildir.add(trace + content)


class SmtpSink:
    """Start and stop the server; `port=0` picks a free port."""

    def __init__(self, maildir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = MaildirHandler(maildir)
        self.maildir_path = maildir
        self._controller = Controller(
            self.handler, hostname=host, port=port or free_port(host), enable_SMTPUTF8=True
        )

    @property
    def host(self) -> str:
        return str(self._controller.hostname)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def reply_next(self, *replies: str) -> None:
        """Answer the next DATA commands with these replies (e.g. "451 4.3.0 try later",
        or DROP_AFTER_ACCEPT to lose the connection after keeping the message)."""
        self.handler.data_replies.extend(replies)

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 unknown user") -> None:
        self.handler.rcpt_replies[address.lower()] = reply

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
