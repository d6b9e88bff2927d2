"""Email over SMTP (STARTTLS and AUTH optional), with errors classified for retries."""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, parseaddr

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.handover import point_of_no_return


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_seconds: float = 30.0


def compose(email: OutgoingEmail) -> EmailMessage:
    """A multipart/alternative message: plain text first, HTML preferred when present."""
    message = EmailMessage()
    message["From"] = email.sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = email.message_id
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.text)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    return message


class SmtpProvider:
    """Sends one message per connection; simple, and safe to call from many threads."""

    name = "smtp"
    marks_handover = True

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def send(self, email: OutgoingEmail) -> str:
        utf8 = not (email.sender.isascii() and email.to.isascii())
        # Ready before the point of no return, so little but the write comes after it.
        wire = _wire(compose(email), utf8=utf8)
        where = f"{self.config.host}:{self.config.port}"
        smtp = smtplib.SMTP(timeout=self.config.timeout_seconds)
        polite = True
        try:
            try:
                smtp.connect(self.config.host, self.config.port)
                self._hello(smtp)
                self._envelope(smtp, email, utf8=utf8)
                self._start_data(smtp)
            except (TransientSendError, PermanentSendError):
                raise
            except smtplib.SMTPResponseException as err:
                raise _classify(err.smtp_code, err.smtp_error) from err
            except (OSError, smtplib.SMTPException) as err:
                raise TransientSendError(f"SMTP server {where} unreachable: {err}") from err
            except Exception as err:
                # Nothing was handed over, so a retry is safe; say what broke.
                raise TransientSendError(
                    f"sending to {where} failed before the message was handed over: "
                    f"{type(err).__name__}: {err}"
                ) from err
            # The server waits for the body. Should the mark fail (another attempt
            # took the delivery), hanging up now discards the message: a QUIT
            # would be read as a line of it.
            polite = False
            point_of_no_return()
            code, reply = self._body(smtp, wire)
            polite = True
            if code != 250:
                raise _classify(code, reply)
        finally:
            if polite:
                with contextlib.suppress(Exception):
                    smtp.quit()
            smtp.close()
        return email.message_id

    def _hello(self, smtp: smtplib.SMTP) -> None:
        smtp.ehlo()
        if self.config.starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if self.config.username:
            smtp.login(self.config.username, self.config.password)

    @staticmethod
    def _envelope(smtp: smtplib.SMTP, email: OutgoingEmail, *, utf8: bool) -> None:
        if utf8 and not smtp.has_extn("smtputf8"):
            raise PermanentSendError(
                f"{email.to} is an internationalized address, and the SMTP server does "
                "not offer SMTPUTF8; use a relay that does"
            )
        code, reply = smtp.mail(parseaddr(email.sender)[1], ["SMTPUTF8"] if utf8 else [])
        if code != 250:
            raise _classify(code, reply)
        code, reply = smtp.rcpt(email.to)
        if code not in (250, 251):
            raise _classify(code, reply)

    @staticmethod
    def _start_data(smtp: smtplib.SMTP) -> None:
        """DATA, up to the server's 354: still nothing handed over."""
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise _classify(code, reply)

    @staticmethod
    def _body(smtp: smtplib.SMTP, wire: bytes) -> tuple[int, bytes]:
        """The body and the server's verdict on it; once the body is on its way, a
        lost connection leaves the message's fate unknown."""
        try:
            smtp.send(wire)
            return smtp.getreply()
        except Exception as err:
            raise AmbiguousSendError(
                f"connection lost while handing over the message: {err}"
            ) from err


def _wire(message: EmailMessage, *, utf8: bool) -> bytes:
    """The message as DATA carries it, up to and including the final lone dot."""
    # SMTP lines end in CRLF (the policies write them); a line starting with a
    # dot gets another (RFC 5321 4.5.2), and a lone dot ends the message.
    wire = message.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
    wire = re.sub(rb"(?m)^\.", b"..", wire)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire + b".\r\n"


# Authentication and policy replies that a fixed configuration (a rotated
# password) can cure: retry rather than fail every message at once.
_CONFIGURATION_CODES = frozenset({530, 534, 535, 538})


def _classify(code: int, reply: bytes | str) -> TransientSendError | PermanentSendError:
    """4xx (and 421 service closing) may pass later; 5xx will not, except auth failures."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    detail = f"SMTP {code} {text}".strip()
    if 400 <= code < 500:
        return TransientSendError(detail)
    if code in _CONFIGURATION_CODES:
        return TransientSendError(f"{detail} (check TIDINGS_SMTP_USERNAME/PASSWORD)")
    return PermanentSendError(detail, code=str(code))
