"""The relay's own record of what it accepted: did a message whose send was cut short arrive?

A send cut short after its point of no return (`handover.py`) leaves the
delivery `sending`: the worker cannot tell whether the SMTP server got the
final dot. The server can. Every relay keeps a record of what it took into
its queue, and this module reads two kinds:

- `maildir:PATH`, a Maildir the relay archives every accepted message into
  (Postfix `always_bcc` to an archive mailbox, an Exchange journal mailbox
  synced to disk, the `tidings dev` SMTP sink's outbox), matched on the
  Message-ID and the recipient (Delivered-To, X-Original-To or To);
- `postfix-log:PATH`, a Postfix mail log (and its first rotation, PATH.1):
  a queue id with a `cleanup` line naming the Message-ID and then a `qmgr`
  `(queue active)` line was committed to the queue. A `cleanup` line alone
  means the client hung up before the final dot and Postfix dropped the
  queue file (smtpd logs "lost connection after DATA").

An answer is `found`, `absent` or `unknown` (the record cannot be read, or
does not reach back to the hand-over): only `found` and `absent` settle
anything. `absent` is trusted only once the hand-over is old enough that its
connection is certainly gone (`ProviderRecord.absent_after`); the caller
waits until then.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import IO, Literal, Protocol

from tidings.activities.channels.smtp import SmtpProvider

SETTING = "TIDINGS_SMTP_RECORD"
FORMS = (
    "maildir:PATH (a Maildir the relay archives every accepted message into) "
    "or postfix-log:PATH (a Postfix mail log)"
)

Verdict = Literal["found", "absent", "unknown"]

MARGIN = timedelta(seconds=30)
"""Beyond the client's timeout: the relay's own commit and logging, and clocks a little apart."""


@dataclass(frozen=True)
class HandedOver:
    """The question: a message that may have reached the relay."""

    message_id: str
    recipient: str
    marked_at: datetime
    """When the sender passed its point of no return."""


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    relay_id: str | None = None
    """The relay's name for its copy: the Maildir file, the Postfix queue id."""
    detail: str = ""


class DeliveryRecord(Protocol):
    """A relay's record of the messages it accepted."""

    @property
    def where(self) -> str:
        """The record as configured (`maildir:/var/mail/archive`), for messages."""
        ...

    def look_up(self, sent: HandedOver) -> Answer: ...


@dataclass(frozen=True)
class ProviderRecord:
    """A provider's record and how long after a hand-over its `absent` can be trusted."""

    record: DeliveryRecord
    absent_after: timedelta
    """The provider's connection timeout plus `MARGIN`: by then the attempt that
    marked the hand-over has sent the final dot or given up."""


def parse(value: str, *, setting: str = SETTING) -> DeliveryRecord | None:
    """The record a setting names; None when it is empty (no record: `uncertain` stays)."""
    kind, _, path = value.strip().partition(":")
    if not value.strip():
        return None
    if not path or kind not in ("maildir", "postfix-log"):
        raise ValueError(f"{setting}={value!r}: expected {FORMS}")
    if kind == "maildir":
        return MaildirRecord(Path(path).expanduser())
    return PostfixLogRecord(Path(path).expanduser())


def smtp_records(value: str, providers: Iterable[object]) -> dict[str, ProviderRecord]:
    """The SMTP provider's record (`TIDINGS_SMTP_RECORD`, `value`) by provider name, if
    one is configured and SMTP is among `providers` (its timeout sets `absent_after`)."""
    record = parse(value)
    return {
        provider.name: ProviderRecord(
            record, timedelta(seconds=provider.config.timeout_seconds) + MARGIN
        )
        for provider in providers
        if record is not None and isinstance(provider, SmtpProvider)
    }


def _key(message_id: str) -> str:
    """A Message-ID by its local part: tidings' is a digest of the delivery's key, unique
    on its own, so a copy is found even after the sender's domain (its right side) changed."""
    return message_id.strip().strip("<>").partition("@")[0]


def _address(value: str) -> str:
    return value.strip().strip("<>").lower()


class MaildirRecord:
    """Every message in a Maildir, indexed by Message-ID; each look-up reads only files
    that appeared since the last one (the relay only adds files)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._by_message_id: dict[str, list[tuple[str, frozenset[str]]]] = {}
        self._parser = BytesHeaderParser()

    @property
    def where(self) -> str:
        return f"maildir:{self.path}"

    def look_up(self, sent: HandedOver) -> Answer:
        try:
            with self._lock:
                self._scan()
                copies = self._by_message_id.get(_key(sent.message_id), [])
        except OSError as err:
            return Answer(
                "unknown",
                detail=f"the relay's record {self.where} cannot be read ({err}); make it a "
                f"Maildir (cur/ and new/) this worker may read, or correct {SETTING}",
            )
        recipient = _address(sent.recipient)
        for name, recipients in copies:
            if recipient in recipients:
                return Answer("found", relay_id=name, detail=f"kept in {self.where} as {name}")
        return Answer("absent", detail=f"no copy in {self.where}")

    def _scan(self) -> None:
        for sub in ("new", "cur"):
            folder = self.path / sub
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a directory")
            for entry in os.scandir(folder):
                # A message moved from new/ to cur/ gets ":2,flags" added to its name.
                name = entry.name.partition(":")[0]
                if name in self._seen or name.startswith("."):
                    continue
                try:
                    with open(entry.path, "rb") as handle:
                        headers = self._parser.parse(handle)
                except FileNotFoundError:
                    continue  # moved to cur/ meanwhile: read there
                self._seen.add(name)
                message_id = (headers.get("Message-ID") or "").strip()
                fields = [
                    *headers.get_all("Delivered-To", []),
                    *headers.get_all("X-Original-To", []),
                    *headers.get_all("To", []),
                ]
                recipients = frozenset(_address(a) for _, a in getaddresses(fields) if a)
                self._by_message_id.setdefault(_key(message_id), []).append((name, recipients))


_CLEANUP = re.compile(
    r"\bpostfix[\w.-]*/cleanup\[\d+\]: (?P<queue_id>[0-9A-Za-z]+): message-id=(?P<message_id>\S*)"
)
_QUEUED = re.compile(
    r"\bpostfix[\w.-]*/qmgr\[\d+\]: (?P<queue_id>[0-9A-Za-z]+): "
    r"from=<[^>]*>, size=\d+, nrcpt=\d+ \(queue active\)"
)
_REMOVED = re.compile(r"\bpostfix[\w.-]*/\w+\[\d+\]: (?P<queue_id>[0-9A-Za-z]+): removed$")
_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s")
_SYSLOG_TIME = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)\s")


@dataclass
class _Followed:
    """One log file, read on from where the last look-up stopped."""

    handle: IO[bytes]
    inode: int
    partial: bytes = b""
    """The end of a line the logger has not finished writing."""


@dataclass
class _PostfixState:
    pending: dict[str, str] = field(default_factory=dict)
    """Queue ids whose Message-ID cleanup logged, not yet committed."""
    committed: dict[str, list[str]] = field(default_factory=dict)
    """Message-ID -> the queue ids it was committed under."""
    starts_at: datetime | None = None
    """The first moment the log read covers."""


class PostfixLogRecord:
    """A Postfix mail log, followed across rotation: the open file is read to its end
    before the new one at the same path is opened."""

    def __init__(self, path: Path, *, now: datetime | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._state = _PostfixState()
        self._file: _Followed | None = None
        self._now = now

    @property
    def where(self) -> str:
        return f"postfix-log:{self.path}"

    def look_up(self, sent: HandedOver) -> Answer:
        try:
            with self._lock:
                self._read()
                queue_ids = list(self._state.committed.get(_key(sent.message_id), []))
                starts_at = self._state.starts_at
        except OSError as err:
            return Answer(
                "unknown",
                detail=f"the relay's record {self.where} cannot be read ({err}); give this "
                f"worker read access to the mail log, or correct {SETTING}",
            )
        if queue_ids:
            return Answer(
                "found", relay_id=queue_ids[-1], detail=f"queued as {queue_ids[-1]} ({self.where})"
            )
        if starts_at is None or starts_at > sent.marked_at:
            return Answer(
                "unknown",
                detail=f"{self.where} (with {self.path.name}.1) does not reach back to "
                f"{sent.marked_at:%Y-%m-%d %H:%M:%S} UTC; search the older logs for "
                f"{sent.message_id} by hand",
            )
        return Answer("absent", detail=f"never committed to the queue ({self.where})")

    def _read(self) -> None:
        if self._file is None:
            rotated = self.path.with_name(self.path.name + ".1")
            if rotated.is_file():
                with open(rotated, "rb") as old:
                    self._lines(old.read(), first=True)
            self._file = self._open()
        self._consume(self._file)
        if self._file.inode != os.stat(self.path).st_ino:
            # Rotated since the last look-up: the old file is read to its end above.
            self._file.handle.close()
            self._file = self._open()
            self._consume(self._file)

    def _open(self) -> _Followed:
        handle = open(self.path, "rb")  # noqa: SIM115 - kept open to follow the file
        return _Followed(handle, os.fstat(handle.fileno()).st_ino)

    def _consume(self, followed: _Followed) -> None:
        data = followed.partial + followed.handle.read()
        complete, _, followed.partial = data.rpartition(b"\n")
        if complete or data.endswith(b"\n"):
            self._lines(complete, first=self._state.starts_at is None)

    def _lines(self, data: bytes, *, first: bool) -> None:
        lines = data.decode("utf-8", errors="replace").splitlines()
        if first and lines and self._state.starts_at is None:
            self._state.starts_at = self._timestamp(lines[0])
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        state = self._state
        if cleanup := _CLEANUP.search(line):
            state.pending[cleanup["queue_id"]] = cleanup["message_id"]
        elif queued := _QUEUED.search(line):
            message_id = state.pending.pop(queued["queue_id"], None)
            if message_id is not None:
                state.committed.setdefault(_key(message_id), []).append(queued["queue_id"])
        elif removed := _REMOVED.search(line):
            state.pending.pop(removed["queue_id"], None)

    def _timestamp(self, line: str) -> datetime | None:
        """When a log line was written: ISO 8601 (rsyslog's high-precision format), or
        the traditional syslog "Nov 24 05:54:16" in this machine's time zone, in the
        latest year that puts it in the past."""
        if iso := _ISO_TIME.match(line):
            moment = datetime.fromisoformat(iso[1].replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.astimezone()
        if syslog := _SYSLOG_TIME.match(line):
            now = self._now or datetime.now(UTC)
            for year in (now.year, now.year - 1):
                try:
                    local = datetime.strptime(f"{year} {syslog[1]}", "%Y %b %d %H:%M:%S")
                except ValueError:  # Feb 29 in a year that has none
                    continue
                moment = local.astimezone()
                if moment <= now + MARGIN:
                    return moment
        return None
