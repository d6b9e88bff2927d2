"""Low-priority email through SendGrid many to a request: one Mail Send with personalizations.

SendGrid's v3 Mail Send takes up to 1,000 `personalizations` in one request,
each its own message to its own recipient with its own subject, headers and
custom arguments (sendgrid.com/docs/for-developers/sending-email/personalizations).
The body differs per recipient too: the request's `content` holds only
substitution tags, and each personalization's `substitutions` hold its own text
and HTML. The limits this keeps to, from the Mail Send reference and its error
list (twilio.com/docs/sendgrid/api-reference/mail-send/errors; the same words in
sendgrid-python's `Personalization.substitutions`): 1,000 personalizations and
1,000 recipients a request, each address once; at most 10,000 bytes of
substitutions per personalization; a request under 30 MB. A message that does
not fit goes on its own, as every message did before.

Send threads meet in a `_Batch`: the first to arrive leads it, waits up to the
linger for others (or until it is full), then sends it for all. Each member's
point of no return (`handover`) travels with it, and the leader runs them just
before the request: a member another attempt took meanwhile (`Superseded`) is
left out, and a worker that dies while members wait leaves them `claimed`, sent
by their retry, not `sending` and in doubt.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
    handover,
)
from tidings.activities.channels.sendgrid import (
    SendGridConfig,
    SendGridEmail,
    accepted_message_id,
    classify,
    delivery_args,
    mail_send_body,
    message_headers,
    sender_address,
)

MAX_PERSONALIZATIONS = 1_000
SUBSTITUTION_BYTES = 10_000
"""Per personalization, tags and values together (the reference does not say which
count; counting both is the safe reading)."""
REQUEST_BYTES = 28_000_000
"""SendGrid refuses a request of 30 MB or more; this leaves room for the JSON around
the personalizations and for the headers."""
TEXT_TAG = "-tidings-text-"
HTML_TAG = "-tidings-html-"
SPLIT_STATUSES = frozenset({400, 413})
"""The batch as a whole was refused and nothing was sent: one bad member (an address
SendGrid will not take) must not fail the others, so each goes again on its own."""


@dataclass(frozen=True)
class BatchSettings:
    max_messages: int = 500
    linger_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.max_messages <= MAX_PERSONALIZATIONS:
            raise ValueError(
                f"a SendGrid batch holds 1 to {MAX_PERSONALIZATIONS} messages, not "
                f"{self.max_messages}: set TIDINGS_SENDGRID_BATCH_MAX within that"
            )


class _SendAlone:
    """The outcome of a member whose batch was refused as a whole: send it by itself."""


SEND_ALONE = _SendAlone()
Outcome = str | BaseException | _SendAlone


@dataclass
class _Member:
    email: OutgoingEmail
    mark: Callable[[], None] | None
    personalization: dict[str, object]
    settled: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None

    def settle(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.settled.set()


@dataclass
class _Batch:
    key: tuple[str, ...]
    members: list[_Member] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)
    size: int = 0
    full: threading.Event = field(default_factory=threading.Event)


class BatchingSendGridEmail(SendGridEmail):
    """SendGrid that sends emails flagged `batchable` together, the rest one by one."""

    def __init__(self, config: SendGridConfig, batching: BatchSettings) -> None:
        super().__init__(config)
        self.batching = batching
        self._lock = threading.Lock()
        self._open: dict[tuple[str, ...], _Batch] = {}

    def send(self, email: OutgoingEmail) -> str:
        personalization = _personalization(email) if email.batchable else None
        joined = self._join(email, personalization) if personalization is not None else None
        if joined is None:
            return super().send(email)
        member, batch, leading = joined
        if leading:
            batch.full.wait(self.batching.linger_seconds)
            with self._lock:
                self._close(batch)
            self._deliver(batch.members)
        else:
            # The activity's heartbeat thread (heartbeat.kept_alive) beats meanwhile.
            member.settled.wait()
        outcome = member.outcome
        if isinstance(outcome, _SendAlone):
            return super().send(email)  # marked already: its mark was taken and run
        if isinstance(outcome, BaseException):
            raise copy.copy(outcome)  # one exception object per thread that raises it
        assert outcome is not None, "members are settled before they are woken"
        return outcome

    def _join(
        self, email: OutgoingEmail, personalization: dict[str, object]
    ) -> tuple[_Member, _Batch, bool] | None:
        """Add the email to the open batch for its sender (or open one); None when it
        must go alone: its recipient is already in the open batch, which SendGrid refuses."""
        key = _batch_key(email)
        size = len(json.dumps(personalization))
        address = email.to.strip().lower()
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and address in batch.addresses:
                return None
            if batch is not None and batch.size + size > REQUEST_BYTES:
                self._close(batch)
                batch = None
            leading = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(key)
            member = _Member(email, handover.take(), personalization)
            batch.members.append(member)
            batch.addresses.add(address)
            batch.size += size
            if len(batch.members) >= self.batching.max_messages:
                self._close(batch)
        return member, batch, leading

    def _close(self, batch: _Batch) -> None:
        """No one joins it any more; its leader sends it now. Called under the lock."""
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        batch.full.set()

    def _deliver(self, members: list[_Member]) -> None:
        """Mark each member, send those still ours in one request, settle every one."""
        try:
            live = [member for member in members if _marked(member)]
            if live:
                self._request(live)
        except BaseException as err:  # never leave a member waiting for ever
            for member in members:
                if not member.settled.is_set():
                    member.settle(err)
            raise

    def _request(self, members: list[_Member]) -> None:
        one = len(members) == 1
        body = mail_send_body(members[0].email) if one else _batch_body(members)
        try:
            response = self.post_mail_send(body, messages=len(members), delivers=False)
            if response.is_success:
                outcome: Outcome = accepted_message_id(response)
            elif response.status_code in SPLIT_STATUSES and len(members) > 1:
                outcome = SEND_ALONE
            else:
                outcome = classify(response)
        except (TransientSendError, PermanentSendError, AmbiguousSendError) as err:
            outcome = err
        for member in members:
            member.settle(outcome)


def _marked(member: _Member) -> bool:
    """Run the member's point of no return; False (and settled) when it must not go."""
    if member.mark is None:
        return True
    try:
        member.mark()
    except Exception as err:  # Superseded, or the database failing: the member's own outcome
        member.settle(err)
        return False
    return True


def _personalization(email: OutgoingEmail) -> dict[str, object] | None:
    """The email as one personalization of a batch, or None when it cannot be one."""
    tags = (TEXT_TAG, HTML_TAG)
    texts = (email.subject, email.text, email.html or "")
    if any(tag in text for tag in tags for text in texts) or "@" not in email.to:
        return None  # a tag in a message would be substituted; a bad address fails alone
    substitutions = {TEXT_TAG: email.text}
    if email.html is not None:
        substitutions[HTML_TAG] = email.html
    if sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items()) > (
        SUBSTITUTION_BYTES
    ):
        return None
    try:
        sender_address(email)
        headers, _ = message_headers(email)
    except PermanentSendError:
        return None  # a sender or Reply-To without an address: refused the usual way, alone
    personalization: dict[str, object] = {
        "to": [{"email": email.to}],
        "subject": email.subject,
        "headers": headers,
        "substitutions": substitutions,
    }
    if (custom_args := delivery_args(email)) is not None:
        personalization["custom_args"] = custom_args
    return personalization


def _batch_key(email: OutgoingEmail) -> tuple[str, ...]:
    """What members of one request share: sender, Reply-To and whether there is HTML."""
    reply_to = next((v for k, v in email.headers.items() if k.lower() == "reply-to"), "")
    return email.sender, reply_to, "html" if email.html is not None else "text"


def _batch_body(members: list[_Member]) -> dict[str, object]:
    first = members[0].email
    _, reply_to = message_headers(first)
    content = [{"type": "text/plain", "value": TEXT_TAG}]
    if first.html is not None:
        content.append({"type": "text/html", "value": HTML_TAG})
    body: dict[str, object] = {
        "personalizations": [member.personalization for member in members],
        "from": sender_address(first),
        "content": content,
    }
    if reply_to is not None:
        body["reply_to"] = reply_to
    return body
