"""`tidings segments list|show|check|members`: named segments, and who is in them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from tidings.catalog import Catalog
from tidings.db import segments as membership
from tidings.errors import InputError
from tidings.models.segment import Segment, segment_uses
from tidings.segment_files import load_segments, segment_file
from tidings.settings import Settings
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    in_session,
    parse_moment_option,
    settings_for,
)

R = TypeVar("R")

segments_app = typer.Typer(
    help="Segments: named sets of contacts, by traits and recent events.", no_args_is_help=True
)

At = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Evaluate at this moment instead of now: an ISO date or time (UTC unless it "
        "names an offset), or a duration back from now (7d).",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(segments_app, name="segments")


@segments_app.command("list")
@friendly_errors
def list_segments(
    tag: Annotated[str | None, typer.Option(help="Only segments with this tag.")] = None,
    data_dir: DataDir = None,
) -> None:
    """The defined segments: name, owner, tags and description."""
    settings = settings_for(data_dir)
    found = [
        s for s in load_segments(settings.segments_dir).values() if tag is None or tag in s.tags
    ]
    if not found:
        typer.echo(f"no segments{f' tagged {tag}' if tag else ''} in {settings.segments_dir}")
    for segment in sorted(found, key=lambda s: s.name):
        tags = ", ".join(segment.tags) or "-"
        typer.echo(f"{segment.name:20} {segment.owner:20} [{tags}]")
        typer.echo(f"  {' '.join(segment.description.split())}")


@segments_app.command("show")
@friendly_errors
def show(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    data_dir: DataDir = None,
) -> None:
    """A segment's definition, its conditions in words, and the journeys that use it."""
    settings = settings_for(data_dir)
    catalog = Catalog.from_settings(settings)
    segment = _segment(catalog.segments, name, settings)
    typer.echo(f"segment {segment.name}  ({segment_file(settings.segments_dir, name)})")
    typer.echo(f"  owner: {segment.owner}")
    typer.echo(f"  tags: {', '.join(segment.tags) or '-'}")
    typer.echo(f"  description: {' '.join(segment.description.split())}")
    typer.echo("  a contact is a member when all of these hold:")
    for condition in segment.conditions():
        typer.echo(f"    - {condition}")
    uses = [
        f"{journey.name} ({where})"
        for journey in catalog.journeys.values()
        for where, used in segment_uses(journey)
        if used == name
    ]
    typer.echo(f"  used by: {'; '.join(sorted(uses)) or 'no journey'}")


@segments_app.command("check")
@friendly_errors
def check(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    key: Annotated[str, typer.Argument(help="The contact's key.")],
    at: At = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Whether a contact is in a segment, and why: each condition, with what was found."""
    settings = settings_for(data_dir)
    segment = _segment(load_segments(settings.segments_dir), name, settings)
    now = _moment(at)
    result = in_session(
        settings,
        lambda session: membership.explain(
            session=session, segment=segment, contact_key=key, now=now
        ),
    )
    if as_json:
        echo_json(
            {
                "segment": result.segment,
                "contact_key": result.contact_key,
                "member": result.member,
                "at": now.isoformat(),
                "checks": [vars(check) for check in result.checks],
            }
        )
        return
    verdict = "is a member of" if result.member else "is not a member of"
    typer.echo(f"contact {key} {verdict} {name} at {now:%Y-%m-%d %H:%M} UTC")
    for item in result.checks:
        typer.echo(f"  {'ok  ' if item.passed else 'FAIL'} {item.condition}: {item.found}")


@segments_app.command("members")
@friendly_errors
def members(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    after: Annotated[
        str | None, typer.Option(help="Start after this contact key (the next page).")
    ] = None,
    at: At = None,
    data_dir: DataDir = None,
) -> None:
    """The keys of the segment's members, in key order, a page at a time."""
    settings = settings_for(data_dir)
    segment = _segment(load_segments(settings.segments_dir), name, settings)
    now = _moment(at)
    page = in_session(
        settings,
        lambda session: membership.members(
            session=session, segment=segment, now=now, limit=limit, after=after
        ),
    )
    for member in page.keys:
        typer.echo(member)
    if not page.keys:
        typer.echo(f"no members{' after ' + after if after else ''}", err=True)
    if page.next_after is not None:
        typer.echo(
            f"more: tidings segments members {name} --limit {limit} --after {page.next_after}",
            err=True,
        )


def _segment(segments: Mapping[str, Segment], name: str, settings: Settings) -> Segment:
    if name not in segments:
        known = ", ".join(sorted(segments)) or "none"
        raise InputError(
            f"no segment {name!r} in {settings.segments_dir} (known: {known}); "
            "`tidings segments list` shows them"
        )
    return segments[name]


def _moment(at: str | None) -> datetime:
    now = datetime.now(UTC)
    return now if at is None else parse_moment_option("--at", at, now=now)
