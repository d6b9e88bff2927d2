"""`tidings inbox list|read|archive|unarchive|token|purge`: the in-app inbox from the shell.

The layout is `tidings inbox list KEY`, not `tidings inbox KEY`: a click group
that takes an argument of its own reads the first word after `inbox` as that
argument, so `tidings inbox read KEY ID` would list the inbox of a contact
called "read". Subcommands only keep every command unambiguous.

These work on the app database alone: no running Temporal server is needed.
`purge` is for operators (from cron): it deletes, for every contact, the
messages expired for longer than a grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tidings.db import inbox
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.models.primitives import format_duration
from tidings.settings import Settings
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    parse_duration_option,
    settings_for,
)
from tidings.starter.inbox_admin import InboxAdmin, InboxEntry, inbox_token

R = TypeVar("R")

inbox_app = typer.Typer(
    help="The in-app inbox: list, mark read, archive, mint app tokens, purge expired messages.",
    no_args_is_help=True,
)

Key = Annotated[str, typer.Argument(help="The contact's key.")]


def register(app: typer.Typer) -> None:
    app.add_typer(inbox_app, name="inbox")


def _admin(settings: Settings, work: Callable[[InboxAdmin], Awaitable[R]]) -> R:
    async def run() -> R:
        database = await asyncio.to_thread(Database, settings.database_url)
        try:
            return await work(InboxAdmin(database))
        finally:
            database.dispose()

    return asyncio.run(run())


@inbox_app.command("list")
@friendly_errors
def list_inbox(
    key: Key,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread messages.")] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Archived messages too (expired ones never show).")
    ] = False,
    archived: Annotated[
        bool, typer.Option("--archived", help="Only archived messages (to unarchive one).")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """The contact's messages, newest first, with the unread count."""

    async def read(admin: InboxAdmin) -> tuple[list[InboxEntry], int]:
        found = await admin.list(
            key,
            unread_only=unread,
            include_archived=everything,
            archived_only=archived,
            limit=limit,
        )
        return found, await admin.unread_count(key)

    messages, unread_count = _admin(settings_for(data_dir), read)
    if as_json:
        echo_json(
            {
                "unread": unread_count,
                "messages": [message.model_dump(mode="json") for message in messages],
            }
        )
        return
    typer.echo(f"{key}: {unread_count} unread")
    for message in messages:
        marks = ("*" if message.unread else " ") + ("a" if message.archived_at else " ")
        typer.echo(f"  {marks} {message.id}  {message.created_at:%Y-%m-%d %H:%M}  {message.title}")
    if not messages:
        typer.echo("  no messages")


@inbox_app.command("read")
@friendly_errors
def read(
    key: Key,
    message_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="The message's id (see `inbox list`).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every unread message.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Mark one message (ID) or every message (--all) read."""
    if (message_id is None) == (not every):
        raise InputError("name one message ID, or --all for every unread message (not both)")
    settings = settings_for(data_dir)
    if message_id is None:
        marked = _admin(settings, lambda admin: admin.mark_all_read(key))
        typer.echo(f"{marked} message{'' if marked == 1 else 's'} marked read")
        return
    entry = _admin(settings, lambda admin: admin.mark_read(key, message_id))
    typer.echo(f"{entry.id} read")


@inbox_app.command("archive")
@friendly_errors
def archive(
    key: Key,
    message_id: Annotated[str, typer.Argument(metavar="ID", help="The message's id.")],
    data_dir: DataDir = None,
) -> None:
    """Put a message away: it leaves the inbox list and the unread count."""
    entry = _admin(settings_for(data_dir), lambda admin: admin.archive(key, message_id))
    typer.echo(f"{entry.id} archived")


@inbox_app.command("unarchive")
@friendly_errors
def unarchive(
    key: Key,
    message_id: Annotated[
        str, typer.Argument(metavar="ID", help="The message's id (see `inbox list --archived`).")
    ],
    data_dir: DataDir = None,
) -> None:
    """Bring an archived message back to the inbox list."""
    entry = _admin(settings_for(data_dir), lambda admin: admin.unarchive(key, message_id))
    typer.echo(f"{entry.id} unarchived")


@inbox_app.command("purge")
@friendly_errors
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            help="Keep messages expired less than this long ago: a duration such as 12h, 30d or 8w."
        ),
    ] = format_duration(inbox.PURGE_GRACE),
    data_dir: DataDir = None,
) -> None:
    """Delete every contact's messages that expired longer ago than --older-than.

    Expired messages are never listed, but they stay in the database until this
    runs; run it daily from cron. It deletes in batches of 1000 rows, each its
    own short transaction.
    """
    grace = parse_duration_option("--older-than", older_than)
    purged = _admin(settings_for(data_dir), lambda admin: admin.purge_expired(older_than=grace))
    typer.echo(
        f"{purged} message{'' if purged == 1 else 's'} deleted "
        f"(expired more than {format_duration(grace)} ago)"
    )


@inbox_app.command("token")
@friendly_errors
def token(key: Key, data_dir: DataDir = None) -> None:
    """Print an inbox token for KEY, to try the HTTP API (Authorization: Bearer ...).

    It is signed with the service's key (TIDINGS_SECRET_KEY, or the one in the
    data dir), and the HTTP API accepts it for 30 days. Whoever holds it can
    read that contact's inbox: do not paste it anywhere shared.
    """
    typer.echo(inbox_token(settings_for(data_dir).signing_key(), key))
