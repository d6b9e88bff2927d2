"""`tidings hold set|lift|list`: legal holds, pauses and kill switches.

`set` and `list` work on the app database alone. `lift` (and `set --kill`)
also asks Temporal to wake held journeys at once; if Temporal cannot be
reached the change still stands and held journeys check again on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tidings.catalog import Catalog
from tidings.connection import connect
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.models.holds import SCOPE_FORMS, Hold
from tidings.settings import Settings
from tidings.starter.cli_support import DataDir, echo_json, friendly_errors, settings_for
from tidings.starter.hold_admin import HELD, HoldAdmin, HoldChange

R = TypeVar("R")

hold_app = typer.Typer(
    help="Legal holds, pauses and kill switches: set, lift, list.", no_args_is_help=True
)

Actor = Annotated[
    str, typer.Option("--as", help="Who does it (a login), as the audit log records it.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(hold_app, name="hold")


def _admin(settings: Settings, work: Callable[[HoldAdmin], Awaitable[R]]) -> R:
    async def run() -> R:
        database = await asyncio.to_thread(Database.for_settings, settings)
        try:
            # Scopes naming a journey or template are checked against the files; a
            # broken file must not stop a legal hold, so then names go unchecked.
            catalog = Catalog.from_settings(settings)
            journeys: set[str] | None = set(catalog.journeys)
            templates: set[str] | None = set(catalog.templates)
        except TidingsError:
            journeys = templates = None
        try:
            admin = HoldAdmin(database, temporal=connect, journeys=journeys, templates=templates)
            return await work(admin)
        finally:
            database.dispose()

    return asyncio.run(run())


def _line(hold: Hold) -> str:
    what = "KILL" if hold.action == "kill" else "hold"
    line = (
        f"{hold.id:>4}  {what:4}  {hold.scope:28}  set by {hold.set_by} "
        f"{hold.set_at:%Y-%m-%d %H:%M} UTC: {hold.reason}"
    )
    if hold.lifted_at is not None:
        why = f": {hold.lift_reason}" if hold.lift_reason else ""
        line += f"\n      lifted by {hold.lifted_by} {hold.lifted_at:%Y-%m-%d %H:%M} UTC{why}"
    return line


def _report(change: HoldChange) -> None:
    if change.batch_job_id:
        typer.echo(f"held journeys woken to check again (batch job {change.batch_job_id})")
    if change.warning:
        typer.echo(f"warning: {change.warning}", err=True)


@hold_app.command("set")
@friendly_errors
def hold_set(
    scope: Annotated[str, typer.Argument(help=f"What it covers: {SCOPE_FORMS}.")],
    reason: Annotated[str, typer.Option(help="Why (the audit log and held journeys show it).")],
    actor: Actor,
    kill: Annotated[
        bool, typer.Option("--kill", help="End covered journeys at their next send instead.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Hold every journey in scope at its next send (or end it there, with --kill)."""
    change = _admin(
        settings_for(data_dir),
        lambda admin: admin.set(scope, reason=reason, by=actor, action="kill" if kill else "hold"),
    )
    hold = change.hold
    if kill:
        typer.echo(f"kill switch {hold.id} set on {hold.scope}: journeys end at their next send")
    else:
        typer.echo(
            f"hold {hold.id} set on {hold.scope}: journeys wait at their next send "
            f'(WaitingFor="{HELD}"); `tidings hold lift {hold.id} --as USER` resumes them'
        )
    _report(change)


@hold_app.command("lift")
@friendly_errors
def hold_lift(
    hold_id: Annotated[int, typer.Argument(metavar="ID", help="The hold's number.")],
    actor: Actor,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Lift a hold: the journeys it held send where they stopped."""
    change = _admin(
        settings_for(data_dir), lambda admin: admin.lift(hold_id, by=actor, reason=reason)
    )
    typer.echo(f"{change.hold.label()} lifted")
    _report(change)


@hold_app.command("list")
@friendly_errors
def hold_list(
    everything: Annotated[bool, typer.Option("--all", help="Lifted holds too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Active holds and kill switches (with --all, every one ever set)."""
    found = _admin(settings_for(data_dir), lambda admin: admin.list(include_lifted=everything))
    if as_json:
        echo_json([hold.model_dump(mode="json") for hold in found])
        return
    if not found:
        typer.echo("no holds" if everything else "no active holds")
    for hold in found:
        typer.echo(_line(hold))
