"""`tidings escalations list|ack`: escalations and their tiers; acknowledge one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import typer

from tidings.connection import connect
from tidings.db.engine import Database
from tidings.models.escalations import Acknowledged, EscalationRow
from tidings.starter.cli_support import DataDir, echo_json, friendly_errors, settings_for
from tidings.starter.escalation_admin import EscalationAdmin, acknowledgment

R = TypeVar("R")

escalations_app = typer.Typer(
    help="Escalations: who was asked about which contact, and who took it.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(escalations_app, name="escalations")


def _run(data_dir: DataDir, work: Callable[[EscalationAdmin], Awaitable[R]]) -> R:
    """Run `work` over the database; it connects to Temporal itself when it must."""
    settings = settings_for(data_dir)

    async def run() -> R:
        database = await asyncio.to_thread(Database, settings.database_url)
        try:
            return await work(EscalationAdmin(database))
        finally:
            database.dispose()

    return asyncio.run(run())


@escalations_app.command("list")
@friendly_errors
def list_escalations(
    open_only: Annotated[bool, typer.Option("--open", help="Only those still open.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Escalations, newest first, with each tier's outcome."""
    rows = _run(data_dir, lambda admin: admin.list(open_only=open_only))
    if as_json:
        echo_json([row.model_dump(mode="json") for row in rows])
        return
    if not rows:
        typer.echo("no open escalations" if open_only else "no escalations")
    for row in rows:
        for line in describe(row):
            typer.echo(line)


@escalations_app.command("ack")
@friendly_errors
def acknowledge(
    escalation: Annotated[
        str, typer.Argument(help="Its number (see `tidings escalations list`) or workflow id.")
    ],
    user: Annotated[str, typer.Option("--as", help="Your login in the staff directory.")],
    comment: Annotated[str, typer.Option(help="What you will do about it.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Take the escalation: it stops, and no further tier is asked."""

    async def work(admin: EscalationAdmin) -> Acknowledged:
        # A malformed login or an unknown escalation is refused before connecting.
        acknowledgment(user, comment)
        await admin.show(escalation)
        connected = EscalationAdmin(admin.database, await connect(settings_for(data_dir)))
        return await connected.acknowledge(escalation, user=user, comment=comment)

    done = _run(data_dir, work)
    typer.echo(
        f"acknowledged escalation {escalation} as {done.user} ({done.role}, tier {done.tier})"
    )


def describe(row: EscalationRow) -> list[str]:
    """An escalation in a few lines: what, where it stands, then one line per tier."""
    if row.status == "open":
        where = f"tier {row.tier}/{row.tier_count}"
    elif row.status == "acknowledged":
        where = f"by {row.acknowledged_by}"
    elif row.status == "resolved":
        where = f"by {row.resolved_event}"
    else:
        where = f"after {row.tier_count} tiers"
    lines = [
        f"#{row.number:<4} {row.status:<12} {where:<16} {row.journey}/{row.step_id}  "
        f"contact {row.contact_key}  opened {_when(row.opened_at)}"
    ]
    for tier in row.tiers:
        told = ", ".join(tier.notified) or "nobody"
        by = f" by {tier.acknowledged_by}" if tier.acknowledged_by else ""
        missed = f"; not reached: {', '.join(tier.unreachable)}" if tier.unreachable else ""
        lines.append(
            f"      tier {tier.tier} {tier.role} ({tier.channel}): {tier.outcome}{by}; "
            f"notified {told}{missed}; due {_when(tier.due_at)}"
        )
    if row.comment:
        lines.append(f"      comment: {row.comment}")
    return lines


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
