"""Checkpoints of file imports: how far each file (by content hash) has been imported."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from tidings.models.tables import ImportRecord


def find_import(*, session: Session, content_hash: str, kind: str) -> ImportRecord | None:
    return session.get(ImportRecord, (content_hash, kind))


def begin_import(
    *,
    session: Session,
    content_hash: str,
    kind: str,
    path: str,
    route: bool,
    rows_total: int,
    now: datetime,
    restart: bool,
) -> ImportRecord:
    """The import's checkpoint, made on its first run; `restart` sets it back to row 0."""
    record = find_import(session=session, content_hash=content_hash, kind=kind)
    if record is None:
        record = ImportRecord(
            content_hash=content_hash,
            kind=kind,
            path=path,
            route=route,
            rows_total=rows_total,
            started_at=now,
            updated_at=now,
        )
        session.add(record)
    elif restart:
        record.route = route
        record.rows_done = record.accepted = record.already_known = record.rejected = 0
        record.started_at = now
        record.finished_at = None
    record.path = path
    record.updated_at = now
    session.flush()
    return record


def save_checkpoint(
    *,
    session: Session,
    content_hash: str,
    kind: str,
    rows_done: int,
    accepted: int,
    already_known: int,
    rejected: int,
    now: datetime,
    finished: bool,
) -> None:
    """Rows up to `rows_done` are settled; the counts are totals since the import began."""
    record = find_import(session=session, content_hash=content_hash, kind=kind)
    assert record is not None, "an import is begun before it is checkpointed"
    record.rows_done = rows_done
    record.accepted = accepted
    record.already_known = already_known
    record.rejected = rejected
    record.updated_at = now
    if finished:
        record.finished_at = now
