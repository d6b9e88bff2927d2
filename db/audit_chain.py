"""The audit log's integrity: records chained per contact and sealed with a key.

Each record names the one before it in its chain (`prev_hash`) and carries
`hash = HMAC-SHA256(audit key, prev_hash || canonical JSON of its fields)`.
An edited record no longer matches its hash; a deleted one leaves a gap in
`seq` and a `prev_hash` that points nowhere; a forged one needs the key,
which is derived from the service's secret (`Settings.audit_key()`) and is
not in the database, so database access alone cannot rewrite a chain.
Triggers refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE), so a change
takes dropping them first, and `tidings audit verify` still sees it.

What chains cannot show: records cut from the end of a chain, or a whole
chain removed (keep `tidings audit export` copies to compare against).

A chain is a contact's key, or "" for records about no one contact (holds,
batch approval gates, template reviews). Appends to one chain take turns (a
lock per chain, not a global one), and its unique (contact_key, seq) stops
any two records from taking one place: a chain cannot fork.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Connection, inspect, text
from sqlmodel import Session, col, select

from tidings.errors import TidingsError
from tidings.models.tables import AuditRecord

AUDIT_KEY_INFO = "tidings.audit_key"
"""Where a session carries the key its records are sealed with (`Session.info`);
`Database(url, audit_key=...)` puts it there."""
GENESIS = "0" * 64
"""The `prev_hash` of a chain's first record."""


class AuditKeyMissingError(TidingsError):
    def __init__(self) -> None:
        super().__init__(
            "this database was opened without the audit key, so it cannot write or check "
            "the audit log: open it with Database(url, audit_key=settings.audit_key())"
        )


@dataclass(frozen=True)
class Entry:
    """One decision to append; `contact_key` names its chain ("" for system-wide ones).

    Strings longer than their columns are cut here, before sealing, so the hash
    covers exactly what is stored. No personal data: keys, names, ids, digests.
    """

    contact_key: str
    kind: str
    action: str
    rule: str
    at: datetime
    detail: str = ""
    journey: str | None = None
    step_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def key_of(session: Session) -> bytes:
    key = session.info.get(AUDIT_KEY_INFO)
    if not isinstance(key, bytes) or not key:
        raise AuditKeyMissingError()
    return key


def append(session: Session, entry: Entry) -> AuditRecord:
    """Add `entry` at the end of its chain, sealed, in the session's transaction."""
    key = key_of(session)
    _take_turn(session, entry.contact_key)
    seq, prev_hash = _end_of(session, entry.contact_key)
    record = _record(entry, seq=seq + 1, prev_hash=prev_hash)
    record.hash = seal(key, record)
    session.add(record)
    session.flush()  # a second append in this transaction reads this one as the end
    return record


def _take_turn(session: Session, chain: str) -> None:
    """Wait for other transactions appending to this chain to end, so that this one
    reads the chain's true end. SQLite lets one writer in at a time already; on
    PostgreSQL a transaction-scoped advisory lock per chain does it (racing for the
    place instead, losers retrying, starves under a burst of one contact's journeys).
    Lock order: the send path locks the contact's row, then its chain; nothing takes
    them the other way round.

    Elsewhere (untested databases) the unique (contact_key, seq) still refuses the
    second of two racing appends: its transaction fails, and its activity retries."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(b"tidings-audit-chain:" + chain.encode()).digest()
        lock = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})


def canonical(record: AuditRecord) -> bytes:
    """The sealed fields as stable bytes: the same after a round trip through SQLite
    or PostgreSQL (times in microsecond ISO UTC, JSON with sorted keys)."""
    fields = {
        "at": record.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "contact_key": record.contact_key,
        "seq": record.seq,
        "journey": record.journey,
        "step_id": record.step_id,
        "kind": record.kind,
        "action": record.action,
        "rule": record.rule,
        "detail": record.detail,
        "data": record.data,
    }
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def seal(key: bytes, record: AuditRecord) -> str:
    message = record.prev_hash.encode() + canonical(record)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Break:
    """A record that does not fit its chain, and every way in which it does not."""

    record: AuditRecord
    problems: tuple[str, ...]


@dataclass
class Verification:
    chains: int = 0
    records: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks

    @property
    def wrong_key(self) -> bool:
        """Every record fails its hash and nothing else: most likely sealed with
        another key (a changed TIDINGS_SECRET_KEY) rather than tampered with."""
        return (
            self.records > 0
            and len(self.breaks) == self.records
            and all(b.problems == (_HASH_MISMATCH,) for b in self.breaks)
        )


_HASH_MISMATCH = "its hash does not match its contents (edited, or sealed with another key)"


def verify(session: Session, key: bytes, *, chain: str | None = None) -> Verification:
    """Walk every chain (or one) in order: gaps in `seq`, links to the wrong
    record, contents that no longer match their hash."""
    query = select(AuditRecord).order_by(
        col(AuditRecord.contact_key), col(AuditRecord.seq), col(AuditRecord.id)
    )
    if chain is not None:
        query = query.where(AuditRecord.contact_key == chain)
    found = Verification()
    current: str | None = None
    previous: AuditRecord | None = None
    for record in session.exec(query.execution_options(yield_per=1000)):
        if record.contact_key != current:
            current, previous = record.contact_key, None
            found.chains += 1
        found.records += 1
        problems = tuple(_problems(key, record, previous))
        if problems:
            found.breaks.append(Break(record, problems))
        previous = record
    return found


def _problems(key: bytes, record: AuditRecord, previous: AuditRecord | None) -> Iterator[str]:
    expected = previous.seq + 1 if previous is not None else 1
    if record.seq > expected:
        missing = f"{expected}" if record.seq == expected + 1 else f"{expected}-{record.seq - 1}"
        yield f"seq {missing} missing before it (deleted records)"
    elif record.seq < expected:
        yield f"seq {record.seq} repeats or goes back (expected {expected})"
    if previous is None and record.prev_hash != GENESIS:
        yield "prev_hash does not start the chain, yet no record comes before it"
    elif previous is not None and record.prev_hash != previous.hash:
        yield f"prev_hash does not match the hash of the record before it (seq {previous.seq})"
    if not hmac.compare_digest(seal(key, record), record.hash):
        yield _HASH_MISMATCH


def _end_of(session: Session, chain: str) -> tuple[int, str]:
    last = session.exec(
        select(AuditRecord.seq, AuditRecord.hash)
        .where(AuditRecord.contact_key == chain)
        .order_by(col(AuditRecord.seq).desc())
        .limit(1)
    ).first()
    return (last[0], last[1]) if last is not None else (0, GENESIS)


def _record(entry: Entry, *, seq: int, prev_hash: str) -> AuditRecord:
    # The data as JSON will give it back (tuples as lists, keys as strings), so
    # the hash sealed now is the hash recomputed from the stored row.
    data = json.loads(json.dumps(dict(entry.data), allow_nan=False))
    return AuditRecord(
        at=entry.at.astimezone(UTC),
        contact_key=entry.contact_key,
        seq=seq,
        prev_hash=prev_hash,
        hash="",
        journey=_fit("journey", entry.journey),
        step_id=_fit("step_id", entry.step_id),
        kind=_fit("kind", entry.kind),
        action=_fit("action", entry.action),
        rule=_fit("rule", entry.rule),
        detail=_fit("detail", entry.detail),
        data=data,
    )


_WIDTHS: dict[str, int | None] = {
    column.key: getattr(column.type, "length", None) for column in inspect(AuditRecord).columns
}


@overload
def _fit(column: str, value: str) -> str: ...
@overload
def _fit(column: str, value: None) -> None: ...
def _fit(column: str, value: str | None) -> str | None:
    """Cut to the column's width (PostgreSQL refuses longer strings)."""
    width = _WIDTHS[column]
    return value[:width] if value is not None and width else value


_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {verb} refused'); END"""
    for verb in ("UPDATE", "DELETE")
]
# No '%' in these: the driver would read it as a parameter marker.
_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused';
    END $$""",
    """CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
]


def install_append_only(connection: Connection) -> None:
    """Refuse UPDATE and DELETE on the audit log (with the schema, in its transaction).
    Other databases get no triggers: the hash chains still show any change."""
    statements = {"sqlite": _SQLITE_TRIGGERS, "postgresql": _POSTGRES_TRIGGERS}
    for statement in statements.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)
