"""Receipts: a provider's "accepted", kept the moment it comes, before the database hears of it.

Recording a send waits for the app database's write lock, and on SQLite
under load that wait is long. A worker killed during it would leave a
delivered message `sending`, which the next attempt must call uncertain. So
the send first writes a receipt, one small file in the data dir, and removes
it once the database has the result; the next attempt that finds a receipt
records the send as sent instead of guessing.

A receipt survives a killed process, not a power cut (it is not fsynced), and
only workers sharing the data dir see it: on one machine, as with SQLite.
Workers on several machines (PostgreSQL, whose commits do not queue behind
every other writer) fall back on the relay's record in that window.

A receipt covers the window after the provider's "accepted". The window
before it (the body on its way, the answer not yet back) is covered by the
provider's own record of what it accepted (`channels/relay_record.py`):
the next attempt asks it when there is no receipt. Without a receipt or a
record to ask, the delivery is `uncertain`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_message_id: str
    content_sha256: str
    """The message's digest, for the audit record the recovered send gets."""
    accepted_at: datetime


class Receipts:
    """One file per accepted send, named by a digest of the send's idempotency key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, idempotency_key: str, receipt: Receipt) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(idempotency_key)
        partial = path.with_suffix(".partial")
        fields = {**asdict(receipt), "accepted_at": receipt.accepted_at.isoformat()}
        partial.write_text(json.dumps(fields))
        os.replace(partial, path)  # a reader sees the whole receipt or none

    def find(self, idempotency_key: str) -> Receipt | None:
        try:
            fields = json.loads(self._path(idempotency_key).read_text())
        except FileNotFoundError:
            return None
        return Receipt(**{**fields, "accepted_at": datetime.fromisoformat(fields["accepted_at"])})

    def discard(self, idempotency_key: str) -> None:
        self._path(idempotency_key).unlink(missing_ok=True)

    def _path(self, idempotency_key: str) -> Path:
        return self.folder / f"{hashlib.sha256(idempotency_key.encode()).hexdigest()}.json"
