"""`tidings contacts resolve|merge|merges`: who a reference names, and merges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tidings.db.identities import resolve
from tidings.db.merges import merges_of
from tidings.errors import InputError
from tidings.models.merges import MergeOutcome
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    in_session,
    settings_for,
)
from tidings.starter.client import TidingsClient

R = TypeVar("R")

contacts_app = typer.Typer(
    help="Contacts: resolve a reference (email:..., external:stripe:...), merge, merges.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")


def _with_client(data_dir: DataDir, work: Callable[[TidingsClient], Awaitable[R]]) -> R:
    async def run() -> R:
        client = await TidingsClient.connect(settings_for(data_dir))
        try:
            return await work(client)
        finally:
            client.close()

    return asyncio.run(run())


@contacts_app.command("resolve")
@friendly_errors
def resolve_reference(
    reference: Annotated[
        str,
        typer.Argument(help="A key, or kind:value: email:..., phone:+..., external:stripe:ID."),
    ],
    data_dir: DataDir = None,
) -> None:
    """Print the key of the contact a reference names (a merged key gives the survivor)."""
    region = settings_for(data_dir).default_phone_region or None
    typer.echo(
        in_session(
            settings_for(data_dir),
            lambda s: resolve(session=s, ref=reference, default_region=region),
        )
    )


@contacts_app.command("merge")
@friendly_errors
def merge(
    survivor: Annotated[str, typer.Argument(help="The contact that stays (key or reference).")],
    merged: Annotated[str, typer.Argument(help="The contact merged into it.")],
    evidence: Annotated[
        str, typer.Option(help="Why they are one person, e.g. 'same Stripe customer'.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Merge two contacts found to be one person; refused if they have different ids in
    one source system. Running again is safe: it tells the journeys again."""
    outcome = _with_client(
        data_dir, lambda client: client.merge(survivor, merged, evidence=evidence)
    )
    if as_json:
        echo_json(outcome.model_dump(mode="json"))
        return
    if outcome.already:
        typer.echo(f"{outcome.merged} was already merged into {outcome.survivor}:")
    for line in describe(outcome):
        typer.echo(line)


@contacts_app.command("merges")
@friendly_errors
def merges(
    key: Annotated[str, typer.Argument(help="The contact's key (survivor or merged).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """The merges a contact took part in, on either side, with their evidence."""
    found = in_session(settings_for(data_dir), lambda session: merges_of(session=session, key=key))
    if as_json:
        echo_json([m.model_dump(mode="json") for m in found])
        return
    if not found:
        typer.echo(f"contact {key} was never merged")
    for outcome in found:
        for line in describe(outcome):
            typer.echo(line)


def parse_external(pairs: list[str]) -> dict[str, str]:
    """`--external stripe=cus_42` pairs, the id taken as written (never as JSON)."""
    ids = {}
    for pair in pairs:
        source, sep, external_id = pair.partition("=")
        if not sep or not source or not external_id:
            raise InputError(
                f"--external {pair!r}: expected SOURCE=ID, e.g. --external stripe=cus_42"
            )
        ids[source] = external_id
    return ids


def describe(outcome: MergeOutcome) -> list[str]:
    moved = outcome.moved
    counts = [
        f"{count} {name.replace('_', ' ')}"
        for name, count in (
            ("identities", moved.identities),
            ("consent_lines", moved.consent_lines),
            ("suppressions", moved.suppressions),
            ("preferences", moved.preferences),
            ("deliveries", moved.deliveries),
            ("events", moved.events),
            ("inbox_messages", moved.inbox_messages),
            ("earlier_merges", moved.earlier_merges),
        )
        if count
    ]
    lines = [
        f"{outcome.merged_at:%Y-%m-%d %H:%M} UTC  merge {outcome.id}: "
        f"{outcome.merged} into {outcome.survivor}",
        f"  evidence: {outcome.evidence}",
        f"  moved: {', '.join(counts) or 'nothing'}",
    ]
    if moved.traits:
        lines.append(f"  traits from {outcome.merged}: {', '.join(moved.traits)}")
    journeys = [f"{name} continues" for name in sorted(moved.journeys_continued.values())] + [
        f"{name} ended ({outcome.survivor} is in it)"
        for name in sorted(moved.journeys_ended.values())
    ]
    if journeys:
        lines.append(f"  journeys: {'; '.join(journeys)}")
    return lines
