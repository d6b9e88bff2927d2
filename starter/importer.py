"""`tidings import contacts|events FILE`: a file's rows through identify and track, one
by one, with rejected rows reported, and a checkpoint that lets an interrupted import
continue where it stopped.

An import is known by the file's content hash. Every `batch_size` rows the count of
settled rows is saved (table `imports`); a re-run of the same file starts after the
last saved row, so at most one batch is applied again. That is harmless: identify is
an upsert, and every imported event has an id (its `event_id`, or the file's hash and
its row number), which `track` records once. So even a crash between an event being
recorded and the checkpoint duplicates nothing.

Events are recorded only, by default: a backfill of last year's events must not start
journeys and send messages about them. `route=True` routes them like `track` does.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session
from temporalio.service import RPCError

from tidings.db import contacts, events, identities, imports
from tidings.errors import InputError, TidingsError, UnknownContactError
from tidings.identities import is_reference, parse_reference
from tidings.models.contact import IdentifyContact
from tidings.models.events import JourneyEvent
from tidings.models.tables import ImportRecord
from tidings.starter.client import TidingsClient
from tidings.starter.import_files import (
    FileFormat,
    FileSurvey,
    RejectsFile,
    SourceRow,
    file_format,
    read_rows,
    survey,
)
from tidings.starter.import_rows import (
    EventRow,
    ImportKind,
    Problem,
    RowRejected,
    check_columns,
    contact_from_row,
    event_from_row,
)

CREATED_KEY_PREFIX = "imported-"
"""Keys of contacts an events import creates for references nobody has (random, so
they say nothing about the address)."""
KEPT_REJECTIONS = 1000
"""Rejections kept for the report on screen; the rejects file has them all."""


@dataclass(frozen=True)
class ImportOptions:
    kind: ImportKind
    path: Path
    format: str | None = None
    """csv or jsonl; None: from the file's extension."""
    dry_run: bool = False
    restart: bool = False
    route: bool | None = None
    """Events: route into journeys; None: as the import began, or not for a new one."""
    create_contacts: bool = False
    """Events: create contacts the file names and nobody has, instead of rejecting."""
    rejects: Path | None = None
    batch_size: int = 100


@dataclass(frozen=True)
class Rejection:
    row: int
    problems: list[Problem]


@dataclass
class ImportReport:
    kind: ImportKind
    path: Path
    format: FileFormat
    content_hash: str
    rows_total: int
    dry_run: bool
    route: bool
    resumed_after: int = 0
    """Rows settled by earlier runs, skipped by this one."""
    already_finished: datetime | None = None
    """When an earlier run imported the whole file (nothing was done this time)."""
    rows_done: int = 0
    accepted: int = 0
    already_known: int = 0
    rejected: int = 0
    created_contacts: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    """This run's, the first KEPT_REJECTIONS of them."""


class ImportStopped(TidingsError):
    """The import could not go on (Temporal unreachable while routing); re-run it."""


class _Rehearsal(Exception):
    """Rolls a dry run's transaction back after it has done its checks."""


async def run_import(
    client: TidingsClient,
    options: ImportOptions,
    *,
    on_start: Callable[[ImportReport], None] | None = None,
    on_row: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the file (or, with `dry_run`, check every row and write nothing).

    `on_start` sees the report before the first row (total, where it resumes);
    `on_row` is called with each row's number once the row is settled.
    """
    fmt = file_format(options.path, options.format)
    found = survey(options.path, fmt)
    if fmt == "csv":
        check_columns(options.kind, found.columns, where=str(options.path))
    if options.rejects is not None and options.rejects.resolve() == options.path.resolve():
        raise InputError(
            "--rejects names the file being imported; give the rejects a file of their own"
        )
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: must be 1 or more")
    report = ImportReport(
        kind=options.kind,
        path=options.path,
        format=fmt,
        content_hash=found.content_hash,
        rows_total=found.rows,
        dry_run=options.dry_run,
        route=bool(options.route) and options.kind == "events",
    )
    if not options.dry_run:
        await _begin(client, options, found, report)
        if report.already_finished is not None:
            return report
    if on_start is not None:
        on_start(report)
    rejects = (
        RejectsFile(options.rejects, fmt, found.columns, kept_up_to=report.resumed_after)
        if options.rejects is not None
        else None
    )
    try:
        await _import_rows(client, options, report, fmt, rejects, on_row)
    finally:
        if rejects is not None:
            rejects.close()
    return report


async def _begin(
    client: TidingsClient, options: ImportOptions, found: FileSurvey, report: ImportReport
) -> None:
    """Find or make the import's checkpoint; the report then starts from its counts."""

    def begin(session: Session) -> None:
        earlier = imports.find_import(
            session=session, content_hash=found.content_hash, kind=options.kind
        )
        if earlier is not None and not options.restart:
            if earlier.finished_at is not None:
                report.already_finished = earlier.finished_at
                _take_counts(report, earlier)
                return
            if (
                options.kind == "events"
                and options.route is not None
                and options.route != earlier.route
            ):
                began = "--route" if earlier.route else "--no-route"
                raise InputError(
                    f"the import of {options.path} began with {began} and stopped after row "
                    f"{earlier.rows_done}; continue it with {began} (or without either), "
                    "or pass --restart to import it again from the first row (events "
                    "already recorded are neither recorded nor routed again)"
                )
            report.route = earlier.route
        record = imports.begin_import(
            session=session,
            content_hash=found.content_hash,
            kind=options.kind,
            path=str(options.path),
            route=report.route,
            rows_total=found.rows,
            now=_now(),
            restart=options.restart,
        )
        _take_counts(report, record)
        report.resumed_after = record.rows_done

    await client.database.run(begin)


def _take_counts(report: ImportReport, record: ImportRecord) -> None:
    report.rows_done = record.rows_done
    report.accepted = record.accepted
    report.already_known = record.already_known
    report.rejected = record.rejected


async def _import_rows(
    client: TidingsClient,
    options: ImportOptions,
    report: ImportReport,
    fmt: FileFormat,
    rejects: RejectsFile | None,
    on_row: Callable[[int], None] | None,
) -> None:
    importer = _RowImporter(client, options, report, fmt)
    unsaved = 0
    for row in read_rows(options.path, fmt, after=report.resumed_after):
        try:
            await importer.settle(row)
        except RowRejected as rejected:
            report.rejected += 1
            if len(report.rejections) < KEPT_REJECTIONS:
                report.rejections.append(Rejection(row.number, rejected.problems))
            if rejects is not None:
                rejects.add(row, str(rejected))
        except RPCError as err:
            # Temporal went away while routing: the row's event is recorded and a
            # re-run routes it, so stopping here loses nothing.
            raise ImportStopped(
                f"the import of {options.path} stopped at row {row.number}: Temporal "
                f"refused or could not be reached ({err.message}). Run the same command "
                "again to continue; rows already imported are not imported twice"
            ) from err
        else:
            report.accepted += 1
        report.rows_done = row.number
        unsaved += 1
        if on_row is not None:
            on_row(row.number)
        if not options.dry_run and unsaved >= options.batch_size:
            await _checkpoint(client, report, finished=False)
            unsaved = 0
    report.rows_done = report.rows_total
    if not options.dry_run:
        await _checkpoint(client, report, finished=True)


async def _checkpoint(client: TidingsClient, report: ImportReport, *, finished: bool) -> None:
    await client.database.run(
        lambda session: imports.save_checkpoint(
            session=session,
            content_hash=report.content_hash,
            kind=report.kind,
            rows_done=report.rows_done,
            accepted=report.accepted,
            already_known=report.already_known,
            rejected=report.rejected,
            now=_now(),
            finished=finished,
        )
    )


class _RowImporter:
    """Checks one row and applies it (or, in a dry run, rehearses it and rolls back)."""

    def __init__(
        self,
        client: TidingsClient,
        options: ImportOptions,
        report: ImportReport,
        fmt: FileFormat,
    ) -> None:
        self.client = client
        self.options = options
        self.report = report
        self.fmt = fmt
        self.phone_region = client.settings.default_phone_region

    async def settle(self, row: SourceRow) -> None:
        """Apply the row; RowRejected (with the columns at fault) when it cannot be."""
        if row.unreadable is not None:
            raise RowRejected([Problem("", f"row {row.unreadable}")])
        if self.options.kind == "contacts":
            await self._contact(row)
        else:
            await self._event(row)

    async def _contact(self, row: SourceRow) -> None:
        data = contact_from_row(row.values, self.fmt, phone_region=self.phone_region)
        try:
            if self.options.dry_run:
                await self._rehearse(
                    lambda session: contacts.upsert_contact(session=session, data=data, now=_now())
                )
                return
            await self.client.identify(
                data.key,
                emails=data.emails,
                phones=data.phones,
                push_tokens=data.push_tokens,
                devices=data.devices,
                anonymous_ids=data.anonymous_ids,
                external_ids=data.external_ids,
                timezone=data.timezone,
                locale=data.locale,
                jurisdiction=data.jurisdiction,
                traits=data.traits,
            )
        except InputError as err:
            raise RowRejected([Problem("", str(err))]) from None

    async def _event(self, row: SourceRow) -> None:
        parsed = event_from_row(
            row.values,
            self.fmt,
            catalog=self.client.catalog,
            default_event_id=f"import-{self.report.content_hash[:32]}-{row.number}",
            phone_region=self.phone_region,
        )
        try:
            if self.options.dry_run:
                await self._rehearse(lambda session: self._record(session, parsed))
            elif self.report.route:
                key = await self.client.database.run(lambda s: self._contact_key(s, parsed))
                event = parsed.event
                result = await self.client.track(
                    key,
                    event.name,
                    event.properties,
                    event_id=event.event_id,
                    occurred_at=event.occurred_at,
                )
                self.report.already_known += result.duplicate
            else:
                known = await self.client.database.run(lambda s: self._record(s, parsed))
                self.report.already_known += known
        except UnknownContactError as err:
            raise RowRejected(
                [
                    Problem(
                        "contact",
                        f"{err}; or import the contacts first (tidings import contacts), "
                        "or pass --create-contacts",
                    )
                ]
            ) from None
        except InputError as err:
            raise RowRejected([Problem("", str(err))]) from None

    def _record(self, session: Session, row: EventRow) -> bool:
        """Record the event without routing it; True when its id was recorded before.

        It is marked routed (settled), so nothing routes it later: a `track` of the
        same id, from the live system, is then a no-op too."""
        key = self._contact_key(session, row)
        now = _now()
        event = row.event
        incoming = JourneyEvent(
            event_id=event.event_id or "",
            name=event.name,
            properties=event.properties,
            occurred_at=event.occurred_at or now,
        )
        recorded = events.record_event(session=session, contact_key=key, event=incoming, now=now)
        events.mark_routed(session=session, event_id=incoming.event_id, now=now)
        return recorded.already_routed

    def _contact_key(self, session: Session, row: EventRow) -> str:
        region = self.phone_region or None
        try:
            return identities.resolve(session=session, ref=row.contact, default_region=region)
        except UnknownContactError:
            if not self.options.create_contacts:
                raise
        self.report.created_contacts += 1
        now = _now()
        if not is_reference(row.contact):
            data = IdentifyContact(key=row.contact)
            return contacts.upsert_contact(session=session, data=data, now=now).key
        identity = parse_reference(row.contact, default_region=region)
        if identity.kind == "anonymous":
            return identities.create_anonymous(
                session=session, anonymous_id=identity.value, now=now
            )
        key = f"{CREATED_KEY_PREFIX}{uuid.uuid4().hex[:16]}"
        contacts.upsert_contact(session=session, data=IdentifyContact(key=key), now=now)
        contacts.add_identity(session=session, contact_key=key, identity=identity, now=now)
        return key

    async def _rehearse(self, work: Callable[[Session], object]) -> None:
        def rehearse(session: Session) -> None:
            work(session)
            raise _Rehearsal

        with contextlib.suppress(_Rehearsal):
            await self.client.database.run(rehearse)


def _now() -> datetime:
    return datetime.now(UTC)
