"""`tidings audit verify|export`: the tamper-evident audit log, for investigators.

Both work on the app database alone (no Temporal server needed). `verify`
needs the secret the workers seal records with (TIDINGS_SECRET_KEY, or the
data dir that keeps it); it exits 1 when any record does not fit its chain.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from tidings.db.engine import Database
from tidings.starter import audit_admin
from tidings.starter.audit_admin import ExportFormat
from tidings.starter.cli_support import DataDir, friendly_errors, parse_moment_option, settings_for

R = TypeVar("R")

audit_app = typer.Typer(
    help="The audit log of every decision: verify its hash chains, export records.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _with(database: Database, work: Callable[[Database], R]) -> R:
    try:
        return work(database)
    finally:
        database.dispose()


@audit_app.command("verify")
@friendly_errors
def verify(
    chain: Annotated[
        str | None,
        typer.Option(help='One chain: a contact key, or "" for holds, batch gates and reviews.'),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Check every chain: no record missing, each linked to the one before it, each
    matching its hash. Exit status 1 if anything was changed."""
    settings = settings_for(data_dir)
    # Never a freshly made-up secret: every record would then look forged.
    database = Database(settings.database_url, audit_key=settings.audit_key(create=False))
    found = _with(database, lambda db: audit_admin.verify(db, chain=chain))
    scope = f" in {audit_admin.chain_name(chain)}" if chain is not None else ""
    typer.echo(f"checked {found.records} records in {found.chains} chains{scope}")
    if found.intact:
        typer.echo("intact: every chain is complete and every record matches its hash")
        return
    for broken in found.breaks:
        typer.echo(f"  {audit_admin.describe(broken)}")
    typer.echo(f"TAMPERED: {len(found.breaks)} records do not fit their chains", err=True)
    if found.wrong_key:
        typer.echo(
            "every record fails its hash and nothing else: most likely the secret differs "
            "from the one the workers used (TIDINGS_SECRET_KEY, or their data dir's)",
            err=True,
        )
    raise typer.Exit(1)


@audit_app.command("export")
@friendly_errors
def export(
    since: Annotated[
        str, typer.Option(help="From when: a duration back from now (24h, 7d) or an ISO time.")
    ],
    until: Annotated[
        str | None, typer.Option(help="Until when (excluded): a duration ago or an ISO time.")
    ] = None,
    contact: Annotated[str | None, typer.Option(help="One contact's records only.")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Records decided in a period, with their place in their chain and their hashes."""
    now = datetime.now(UTC)
    start = parse_moment_option("--since", since, now=now)
    end = parse_moment_option("--until", until, now=now) if until is not None else None
    database = Database(settings_for(data_dir).database_url)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(output.open("w", newline="")) if output else sys.stdout
        count = _with(
            database,
            lambda db: audit_admin.export(
                db, out, since=start, until=end, contact_key=contact, fmt=fmt
            ),
        )
    if output is not None:
        typer.echo(f"{count} records written to {output}", err=True)
