"""The audit log for investigators: check its hash chains, export a period.

    verification = verify(database)            # the database opened with the audit key
    count = export(database, out, since=..., fmt="csv")

Both read the app database alone (no Temporal server needed).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from tidings.db import audit
from tidings.db.audit_chain import AuditKeyMissingError, Break, Verification
from tidings.db.audit_chain import verify as verify_chains
from tidings.db.engine import Database
from tidings.models.tables import AuditRecord

ExportFormat = Literal["jsonl", "csv"]
COLUMNS = (
    "id",
    "at",
    "contact_key",
    "seq",
    "journey",
    "step_id",
    "kind",
    "action",
    "rule",
    "detail",
    "data",
    "prev_hash",
    "hash",
)
"""What an export holds of each record: its fields, its place in its chain, its hashes."""


def verify(database: Database, *, chain: str | None = None) -> Verification:
    """Walk every chain (or the one given: a contact key, "" for the system chain)."""
    if database.audit_key is None:
        raise AuditKeyMissingError()
    key = database.audit_key
    with database.session() as session:
        return verify_chains(session, key, chain=chain)


def describe(found: Break) -> str:
    """One line per broken record: where it is, what it says, what is wrong."""
    record = found.record
    return (
        f"{chain_name(record.contact_key)} seq {record.seq} (id {record.id}, "
        f"{record.at:%Y-%m-%d %H:%M:%S} UTC, {record.kind} {record.action}): "
        + "; ".join(found.problems)
    )


def chain_name(contact_key: str) -> str:
    return f"chain {contact_key!r}" if contact_key else "system chain"


def export(
    database: Database,
    out: TextIO,
    *,
    since: datetime,
    until: datetime | None = None,
    contact_key: str | None = None,
    fmt: ExportFormat = "jsonl",
) -> int:
    """Write the records decided in [since, until) with their hashes; returns how many."""
    with database.session() as session:
        records = audit.between(session=session, since=since, until=until, contact_key=contact_key)
        return _write(out, (row(r) for r in records), fmt)


def row(record: AuditRecord) -> dict[str, Any]:
    fields = record.model_dump()
    fields["at"] = record.at.astimezone(UTC).isoformat()
    return {name: fields[name] for name in COLUMNS}


def _write(out: TextIO, rows: Iterable[dict[str, Any]], fmt: ExportFormat) -> int:
    count = 0
    if fmt == "jsonl":
        for fields in rows:
            out.write(json.dumps(fields, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for fields in rows:
        writer.writerow({**fields, "data": json.dumps(fields["data"], sort_keys=True)})
        count += 1
    return count
