"""Bounce diagnosis: SMTP replies, delivery status notifications and complaints.

A sender that keeps mailing dead addresses, or people who called its mail
spam, loses its reputation with the mailbox providers; one that suppresses
an address for a full mailbox or a policy block loses a reader. So a bounce
is sorted into a class before anything is suppressed:

- hard: the address does not exist or is disabled, for good: suppress it.
- soft: it may pass later (a full mailbox, a timeout, any 4.x.x).
- block: refused for the sender or the message (policy, authentication,
  a blocklist, size): fix it on the sending side; the address is fine.
- spam: refused as spam, or reported as spam by the recipient (an ARF
  complaint, the only case that suppresses).

DSNs (RFC 3464) and complaints (RFC 5965) come back to the envelope sender;
the returned message's X-Tidings-Delivery header ties each to its delivery.
"""

from __future__ import annotations

import mailbox
import re
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

from tidings.models.policy import SuppressionReason

BounceClass = Literal["hard", "soft", "block", "spam"]
BounceAction = Literal["failed", "delayed", "complained"]
DELIVERY_HEADER = "X-Tidings-Delivery"  # activities.send.DELIVERY_HEADER, without the cycle

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
"""5.1.1, but not the tail of an IP address (10.5.5.1 holds no status)."""
_REPLY = re.compile(r"\s*([245]\d\d)\b")
_LEADING = re.compile(r"([245]\d\d)[- ](?:([245]\.\d{1,3}\.\d{1,3})\s)?")

_EXACT: dict[tuple[int, int], BounceClass] = {
    (1, 1): "hard",  # bad destination mailbox
    (1, 2): "hard",  # bad destination system (no such domain)
    (1, 3): "hard",  # bad destination address syntax
    (1, 6): "hard",  # mailbox has moved, no forwarding address
    (1, 10): "hard",  # null MX (RFC 7505): the domain takes no mail
    (1, 7): "block",  # the *sender's* address is bad: ours to fix
    (1, 8): "block",
    (2, 1): "hard",  # mailbox disabled
    (2, 2): "soft",  # mailbox full
    (2, 3): "block",  # message too long for the mailbox
    (3, 4): "block",  # message too big for the system
    (4, 4): "hard",  # unable to route: no mail server for the domain
    (7, 13): "hard",  # user account disabled (RFC 7372)
    # Sender authentication (RFC 7372): fix DNS or signing, then it passes.
    (7, 20): "block",  # no passing DKIM signature
    (7, 21): "block",  # no acceptable DKIM signature
    (7, 22): "block",  # no valid author-matched DKIM signature
    (7, 23): "block",  # SPF validation failed
    (7, 24): "block",  # SPF validation error
    (7, 25): "block",  # reverse DNS validation failed
    (7, 26): "block",  # multiple authentication checks failed (Gmail: DMARC)
    (7, 27): "block",  # the sender's domain has a null MX
}
_BY_SUBJECT: dict[int, BounceClass] = {
    0: "hard",  # "other": with no better word, what ESPs count as a hard bounce
    1: "hard",  # addressing
    2: "soft",  # mailbox status
    3: "soft",  # mail system status
    4: "soft",  # network and routing
    5: "block",  # protocol: the sending side's doing
    6: "block",  # content or media
    7: "block",  # security or policy
}
_SPAM = re.compile(r"\b(spam|junk|unsolicited|bulk mail|phishing)\b", re.IGNORECASE)
_BLOCK = re.compile(
    r"\b(block(ed|list)?|black ?list(ed)?|deny ?list(ed)?|reputation|listed (at|on|in)|"
    r"rbl|dnsbl|policy|not authori[sz]ed|relay(ing)? (denied|not permitted))\b",
    re.IGNORECASE,
)
_GONE = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|mailbox unavailable|"
    r"mailbox (not found|does not exist)|(recipient|user|address) not found|"
    r"unknown recipient|recipient unknown|invalid (recipient|mailbox)|does not exist|"
    r"(account|mailbox) (is |has been )?disabled|not a valid mailbox|unrouteable address|"
    r"no mailbox here",
    re.IGNORECASE,
)
_FULL = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded storage|insufficient storage",
    re.IGNORECASE,
)


def classify_smtp(code: int, enhanced: str | None, text: str) -> BounceClass:
    """Sort an SMTP failure: the enhanced code first, then the words, then the reply code.

    `code` is the three-digit reply (0 if unknown); `enhanced` the RFC 3463
    status (found in `text` when not given). 4.x.x is always soft: the
    server said to try again, whatever its words.
    """
    status = parse_status(enhanced or "") or parse_status(text)
    category = status[0] if status else code // 100
    if category != 5:
        return "soft"
    if status is not None:
        exact = _EXACT.get(status[1:])
        if exact is not None:
            return exact
        if status[1] == 7:
            return "spam" if _SPAM.search(text) else "block"
    if _SPAM.search(text):
        return "spam"
    if _GONE.search(text):
        return "hard"
    if _FULL.search(text):
        return "soft"
    if _BLOCK.search(text):
        return "block"
    if status is not None:
        return _BY_SUBJECT.get(status[1], "hard")
    return "soft" if code == 552 else "hard"  # 552: exceeded storage allocation


def parse_status(text: str) -> tuple[int, int, int] | None:
    """The first enhanced status code (class, subject, detail) in `text`."""
    found = _ENHANCED.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def reply_code(text: str) -> int:
    """The SMTP reply code a text starts with (`550 5.1.1 ...`), or 0."""
    found = _REPLY.match(text)
    return int(found[1]) if found else 0


@dataclass(frozen=True)
class Bounce:
    """One recipient's failure (or complaint) from one report."""

    recipient: str
    action: BounceAction
    status: str
    """The enhanced status code, 5.1.1; empty for a complaint."""
    diagnostic: str
    """The remote server's reply, or the complaint's feedback type."""
    bounce_class: BounceClass
    delivery_id: str | None
    """From the returned message's X-Tidings-Delivery, when the report includes it."""

    def suppress_reason(self) -> SuppressionReason | None:
        """Only a dead address or the recipient's own complaint suppresses.

        A message refused *as* spam is the sender's problem, not a
        complaint: the recipient never saw it.
        """
        if self.bounce_class == "hard":
            return "hard_bounce"
        if self.action == "complained":
            return "complaint"
        return None


def parse_dsn(message: Message) -> list[Bounce]:
    """The failed and delayed recipients of a DSN, or the complaint of an ARF report.

    `message` is best parsed with `policy.default` (an EmailMessage); anything
    that is not a report (ordinary mail, a delivered or relayed notice) gives [].
    """
    if message.get_content_type() != "multipart/report":
        return []
    report_type = str(message.get_param("report-type", "", header="content-type")).lower()
    parts = list(message.walk())[1:]
    delivery_id = _delivery_id(parts)
    if report_type == "delivery-status":
        return _delivery_status(parts, delivery_id)
    if report_type == "feedback-report":
        return _feedback(parts, delivery_id)
    return []


def scan_maildir(path: Path | str) -> list[Bounce]:
    """Every bounce and complaint in a Maildir (new and cur), oldest file name first."""
    box = mailbox.Maildir(path, factory=None, create=False)
    found: list[Bounce] = []
    for key in sorted(box.iterkeys()):
        found.extend(parse_dsn(message_from_bytes(box.get_bytes(key), policy=policy.default)))
    return found


def _delivery_status(parts: list[Message], delivery_id: str | None) -> list[Bounce]:
    report = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
    if report is None:
        return []
    blocks = _header_blocks(report)
    bounces = []
    for block in blocks[1:]:  # the first block is about the message, the rest per recipient
        action = str(block.get("Action", "")).strip().lower()
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        if action not in ("failed", "delayed") or not recipient:
            continue
        diagnostic = _diagnostic(str(block.get("Diagnostic-Code", "")))
        found = parse_status(str(block.get("Status", ""))) or parse_status(diagnostic)
        status = ".".join(map(str, found)) if found else ""
        klass = classify_smtp(reply_code(diagnostic), status or None, diagnostic)
        bounces.append(
            Bounce(
                recipient=recipient,
                action="failed" if action == "failed" else "delayed",
                status=status,
                diagnostic=diagnostic,
                bounce_class="soft" if action == "delayed" else klass,
                delivery_id=delivery_id,
            )
        )
    return bounces


def _feedback(parts: list[Message], delivery_id: str | None) -> list[Bounce]:
    """An abuse or fraud report is a complaint; not-spam and the others are not."""
    report = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if report is None:
        return []
    blocks = _header_blocks(report)
    fields = blocks[0] if blocks else Message()
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if feedback_type not in ("abuse", "fraud"):
        return []
    original = _original_headers(parts)
    recipient = _address(fields.get("Original-Rcpt-To")) or _address(
        original.get("To") if original is not None else None
    )
    return [
        Bounce(
            recipient=recipient,
            action="complained",
            status="",
            diagnostic=feedback_type,
            bounce_class="spam",
            delivery_id=delivery_id,
        )
    ]


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part.

    The parser splits delivery-status into blocks itself; feedback-report
    arrives as one message of headers (or, from some parsers, as text).
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        text = payload.replace("\r\n", "\n").strip()
        return [message_from_string(block) for block in re.split(r"\n\s*\n", text) if block]
    return []


def _original_headers(parts: list[Message]) -> Message | None:
    """The returned message (message/rfc822) or its headers (text/rfc822-headers)."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return message_from_bytes(text, policy=policy.default)
    return None


def _delivery_id(parts: list[Message]) -> str | None:
    original = _original_headers(parts)
    value = original.get(DELIVERY_HEADER) if original is not None else None
    if value is None:
        return None
    return str(value).strip() or None


def _address(value: object) -> str:
    """`rfc822; ann@example.com`, `<ann@example.com>` or `Ann <ann@example.com>`."""
    if value is None:
        return ""
    kind, separator, address = str(value).partition(";")
    address = (address if separator else kind).strip()
    return parseaddr(address)[1] or address.strip("<>")


def _diagnostic(value: str) -> str:
    """`smtp; 550-5.1.1 Line one 550-5.1.1 line two` as `550 5.1.1 Line one line two`.

    Multi-line SMTP replies repeat the code on every line; once is enough.
    """
    kind, separator, text = value.partition(";")
    text = " ".join((text if separator else kind).split())
    leading = _LEADING.match(text)
    if leading is None:
        return text
    code, status = leading[1], leading[2] or ""
    repeated = rf"\s{code}[- ]" + (rf"{re.escape(status)}\s" if status else "")
    rest = re.sub(repeated, " ", text[leading.end() :])
    return " ".join([code, *([status] if status else []), rest]).strip()
