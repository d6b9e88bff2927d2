"""`tidings import contacts|events FILE`: CSV or JSON Lines files through identify and
track, with a report of rejected rows, a progress bar, resumption and a dry run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from tidings.connection import connect
from tidings.settings import Settings
from tidings.starter.cli_support import DataDir, friendly_errors, settings_for
from tidings.starter.client import TidingsClient
from tidings.starter.importer import ImportOptions, ImportReport, run_import

SHOWN_REJECTIONS = 50
"""Rejected rows listed on screen; the rejects file (--rejects) has every one."""

import_app = typer.Typer(
    help="Import contacts or events from CSV or JSON Lines files.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


FileArg = Annotated[
    Path, typer.Argument(help="A .csv or .jsonl file (or name the format with --format).")
]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="csv or jsonl; default: the file's extension.")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Check every row and report; write nothing.")
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart", help="Import the file from its first row again, not after the checkpoint."
    ),
]
Rejects = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        help="Write the rejected rows here, in the file's format, each with its row number "
        "and reason: fix them and import that file.",
    ),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", help="Rows between two checkpoints.", min=1)
]


@import_app.command("contacts")
@friendly_errors
def import_contacts(
    file: FileArg,
    file_format: FormatOption = None,
    dry_run: DryRun = False,
    restart: Restart = False,
    rejects: Rejects = None,
    batch_size: BatchSize = 100,
    data_dir: DataDir = None,
) -> None:
    """Create or update contacts, one per row, as `tidings identify` does.

    Columns: key (required), emails, phones, push_tokens, devices, anonymous_ids
    (several in one CSV cell separated by ;, a list in JSON Lines), timezone, locale,
    jurisdiction, ids in source systems (an external.<source> column each in CSV, an
    external_ids object in JSON Lines), and traits: a trait.<name> column each in CSV,
    a traits object in JSON Lines. Empty cells
    change nothing; a CSV cell that reads as JSON (42, true, null) is JSON, and a
    null trait is removed.
    """
    options = ImportOptions(
        kind="contacts",
        path=file,
        format=file_format,
        dry_run=dry_run,
        restart=restart,
        rejects=rejects,
        batch_size=batch_size,
    )
    _run(settings_for(data_dir), options)


@import_app.command("events")
@friendly_errors
def import_events(
    file: FileArg,
    file_format: FormatOption = None,
    route: Annotated[
        bool | None,
        typer.Option(
            "--route/--no-route",
            help="Route the events into journeys as `tidings track` does (they start and "
            "wake journeys), or only record them. Default: record only (a backfill must "
            "not start journeys); a resumed import keeps its first run's choice.",
            show_default=False,
        ),
    ] = None,
    create_contacts: Annotated[
        bool,
        typer.Option(
            "--create-contacts",
            help="Create contacts the file names and nobody has, instead of rejecting those rows.",
        ),
    ] = False,
    dry_run: DryRun = False,
    restart: Restart = False,
    rejects: Rejects = None,
    batch_size: BatchSize = 100,
    data_dir: DataDir = None,
) -> None:
    """Record events, one per row, as `tidings track` does.

    Columns: contact (a key, or a reference like email:ada@example.com), event,
    occurred_at (ISO 8601 with an offset), event_id (optional: without one, the file's
    hash and the row number make it, so no re-run records an event twice), and
    properties: prop.<name> columns and/or a properties cell holding a JSON object in
    CSV, a properties object in JSON Lines.
    """
    options = ImportOptions(
        kind="events",
        path=file,
        format=file_format,
        dry_run=dry_run,
        restart=restart,
        route=route,
        create_contacts=create_contacts,
        rejects=rejects,
        batch_size=batch_size,
    )
    _run(settings_for(data_dir), options)


def _run(settings: Settings, options: ImportOptions) -> None:
    report = asyncio.run(_import(settings, options))
    _print_report(report, options)
    if report.rejected:
        raise typer.Exit(1)


async def _import(settings: Settings, options: ImportOptions) -> ImportReport:
    # Only routing talks to Temporal: contacts, recording and dry runs need the
    # database alone, so they work while Temporal is down.
    needs_temporal = options.kind == "events" and bool(options.route) and not options.dry_run
    client = await TidingsClient.connect(
        settings, temporal=None if needs_temporal else await connect(settings, lazy=True)
    )
    try:
        with _progress() as progress:
            return await run_import(
                client, options, on_start=progress.start, on_row=progress.advance
            )
    finally:
        client.close()


class _Bar:
    """A progress bar on a terminal; nothing at all when output goes to a file or pipe."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def start(self, report: ImportReport) -> None:
        if report.resumed_after:
            typer.echo(
                f"continuing the import of {report.path} after row {report.resumed_after} "
                f"of {report.rows_total}"
            )
        if self.progress is not None:
            verb = "checking" if report.dry_run else "importing"
            self.task = self.progress.add_task(
                f"{verb} {report.kind}",
                total=report.rows_total,
                completed=report.resumed_after,
            )

    def advance(self, row: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=row)


@contextmanager
def _progress() -> Iterator[_Bar]:
    if not sys.stderr.isatty():
        yield _Bar(None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        yield _Bar(progress)


def _print_report(report: ImportReport, options: ImportOptions) -> None:
    if report.already_finished is not None:
        typer.echo(
            f"{report.path} was imported already, on {report.already_finished:%Y-%m-%d %H:%M} "
            f"UTC: {_counts(report)}. Nothing to do; --restart imports it again"
        )
        return
    for rejection in report.rejections[:SHOWN_REJECTIONS]:
        for problem in rejection.problems:
            where = f", {problem.field}" if problem.field else ""
            typer.echo(f"row {rejection.row}{where}: {problem.message}", err=True)
    this_run = len(report.rejections)
    if report.rejected > min(this_run, SHOWN_REJECTIONS):
        more = (
            f"; all of them are in {options.rejects}"
            if options.rejects
            else "; --rejects FILE writes them all to a file"
        )
        typer.echo(
            f"... {report.rejected} rejected rows in all, {min(this_run, SHOWN_REJECTIONS)} "
            f"listed above{more}",
            err=True,
        )
    if report.dry_run:
        typer.echo(f"dry run, nothing written: {_counts(report)}")
    else:
        typer.echo(f"imported {report.kind} from {report.path}: {_counts(report)}")
    if report.kind == "events":
        if report.route:
            typer.echo("events were routed into journeys (started and woke them)")
        else:
            typer.echo("events were recorded only, not routed into journeys (--route routes them)")
    if report.created_contacts:
        typer.echo(f"{report.created_contacts} contacts created for rows naming unknown ones")
    if options.rejects is not None and report.rejected:
        typer.echo(f"rejected rows are in {options.rejects}: fix them and import that file")


def _counts(report: ImportReport) -> str:
    known = f" ({report.already_known} recorded before)" if report.already_known else ""
    verb = "would be accepted" if report.dry_run else "accepted"
    return (
        f"{report.rows_done} of {report.rows_total} rows, {report.accepted} {verb}{known}, "
        f"{report.rejected} rejected"
    )
