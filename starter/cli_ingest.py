"""`tidings ingest list|retry`: what the HTTP event API accepted, and what became of it.

Works on the app database alone. Messages are listed by queue id, kind, write
key and state, with the error a pending one last met or the reason a dead one
can never route; never with their traits or properties (personal data).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from tidings.db import ingest_queue
from tidings.db.engine import Database
from tidings.models.tables import IngestMessage
from tidings.starter.cli_support import DataDir, echo_json, friendly_errors, settings_for

ingest_app = typer.Typer(
    help="The HTTP event API's queue: list what was accepted, retry dead messages.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")


def _line(message: IngestMessage) -> str:
    what = message.payload.get("event") or message.kind
    line = (
        f"{message.id:>6}  {message.state:7}  {message.received_at:%Y-%m-%d %H:%M:%S} UTC  "
        f"{message.write_key}  {what}  (attempts: {message.attempts})"
    )
    if message.last_error:
        line += f"\n        {message.last_error}"
    return line


@ingest_app.command("list")
@friendly_errors
def list_messages(
    state: Annotated[
        str | None, typer.Option(help="pending, routed or dead (default: all).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Accepted messages, newest first, with each one's state and last error."""
    database = Database.for_settings(settings_for(data_dir))
    try:
        with database.session() as session:
            counts = ingest_queue.counts(session=session)
            found = ingest_queue.listing(session=session, state=state, limit=limit)
    finally:
        database.dispose()
    if as_json:
        echo_json(
            {
                "counts": counts,
                "messages": [
                    message.model_dump(mode="json", exclude={"payload", "stream"})
                    for message in found
                ],
            }
        )
        return
    typer.echo(", ".join(f"{number} {name}" for name, number in counts.items()))
    for message in found:
        typer.echo(_line(message))


@ingest_app.command("retry")
@friendly_errors
def retry(
    ids: Annotated[list[int], typer.Argument(help="Queue ids of dead messages.")],
    data_dir: DataDir = None,
) -> None:
    """Route dead messages again, once what refused them (a journey, a contact) is fixed."""
    database = Database.for_settings(settings_for(data_dir))
    try:
        with database.session() as session:
            count = ingest_queue.requeue_dead(session=session, ids=ids, now=datetime.now(UTC))
    finally:
        database.dispose()
    typer.echo(f"{count} queued again; a running `tidings serve` or `tidings dev` routes them")
