"""`tidings templates push|list|lint|submit|approve|reject|retire|history|diff|preview`.

These work on the template files and the app database alone: no running
Temporal server is needed.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from tidings.activities.compose import Composed
from tidings.connection import connect
from tidings.db.engine import Database
from tidings.db.templates import Record
from tidings.directory import load_directory
from tidings.models.approvals import GateRow
from tidings.models.primitives import Purpose
from tidings.models.tables import TranslationRecord
from tidings.settings import Settings
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    parse_pairs,
    settings_for,
)
from tidings.starter.content_review import start_review
from tidings.starter.template_admin import TemplateAdmin

R = TypeVar("R")

templates_app = typer.Typer(
    help="The template repository: push, review, history, preview.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="The template's name (its file name).")]
Actor = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Who does it, as the history records it. Default: $TIDINGS_USER, else your login.",
    ),
]
VersionOption = Annotated[
    int | None, typer.Option("--version", help="The version (default: the one it applies to).")
]
LocaleOption = Annotated[
    str | None, typer.Option(help="A translation's locale, to act on the translation.")
]
Comment = Annotated[str | None, typer.Option(help="A note kept in the history.")]


def register(app: typer.Typer) -> None:
    app.add_typer(templates_app, name="templates")


def _actor(given: str | None) -> str:
    return given or os.environ.get("TIDINGS_USER") or getpass.getuser()


def _admin(data_dir: DataDir, work: Callable[[TemplateAdmin], R]) -> R:
    settings = settings_for(data_dir)
    database = Database(settings.database_url)
    try:
        return work(TemplateAdmin(database, settings))
    finally:
        database.dispose()


def _done(verb: str, record: Record) -> None:
    if isinstance(record, TranslationRecord):
        what = (
            f"{record.template} {record.locale} translation revision {record.revision} "
            f"(of version {record.source_version})"
        )
    else:
        what = f"{record.template} version {record.version}"
    typer.echo(f"{verb} {what}: now {record.status}")


@templates_app.command("push")
@friendly_errors
def push(actor: Actor = None, data_dir: DataDir = None) -> None:
    """Store the template files as drafts (all of them, or none if one is bad)."""
    results = _admin(data_dir, lambda admin: admin.push(_actor(actor)))
    for item in results:
        what = f"{item.template} v{item.version}"
        if item.locale is not None:
            what = f"{item.template} {item.locale} revision {item.revision} (of v{item.version})"
        stale = f"  stale: version {item.stale_of} is newer" if item.stale_of else ""
        typer.echo(f"{item.change:9} {what}  {item.status}{stale}")


@templates_app.command("list")
@friendly_errors
def list_versions(
    name: Annotated[str | None, typer.Argument(help="Only this template.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Versions and translations in the repository, with their status."""
    rows = _admin(data_dir, lambda admin: admin.versions(name))
    if not rows:
        typer.echo("the repository is empty: tidings templates push")
    newest: dict[str, int] = {}
    for record, _ in rows:
        newest[record.template] = record.version
    for record, translations in rows:
        decided = f"  approved by {record.decided_by}" if record.status == "approved" else ""
        typer.echo(f"{record.template:24} v{record.version:<3} {record.status:10}{decided}")
        for t in translations:
            stale = (
                f"  stale (source is v{newest[t.template]})"
                if t.source_version < newest[t.template]
                else ""
            )
            typer.echo(f"{'':24}   {t.locale:6} rev {t.revision:<3} {t.status:10}{stale}")


@templates_app.command("lint")
@friendly_errors
def lint_files(data_dir: DataDir = None) -> None:
    """Compliance lint over the template files, as submitting them would check them."""
    results = _admin(data_dir, lambda admin: admin.lint_files())
    errors = 0
    for path, findings in results.items():
        for finding in findings:
            typer.echo(f"{path}: {finding}", err=finding.severity == "error")
            errors += finding.severity == "error"
    if errors:
        raise typer.Exit(1)
    typer.echo(f"ok: {len(results)} files pass compliance lint")


@templates_app.command("submit")
@friendly_errors
def submit(
    name: Name,
    version: VersionOption = None,
    locale: LocaleOption = None,
    actor: Actor = None,
    data_dir: DataDir = None,
) -> None:
    """Send a draft for review; compliance lint errors keep it a draft.

    With `content_review` in the approver directory, the version then goes
    through the review stages (`tidings approvals list`)."""
    settings = settings_for(data_dir)
    review = load_directory(settings.directory_file).content_review
    if review is None:
        record = _admin(
            data_dir,
            lambda admin: admin.submit(name, number=version, locale=locale, actor=_actor(actor)),
        )
        _done("submitted", record)
        return
    gate = asyncio.run(_submit_for_review(settings, name, version, locale, _actor(actor)))
    typer.echo(
        f"submitted {name}: review gate {gate.id}, {' -> '.join(gate.roles)}; "
        f"{gate.pending_roles[0]} decides first (tidings approvals show {gate.id})"
    )


async def _submit_for_review(
    settings: Settings, name: str, version: int | None, locale: str | None, actor: str
) -> GateRow:
    client = await connect(settings)  # before anything is written: no review without Temporal
    database = Database(settings.database_url)
    try:
        directory = load_directory(settings.directory_file)
        assert directory.content_review is not None
        TemplateAdmin(database, settings).submit(name, number=version, locale=locale, actor=actor)
        return await start_review(
            client=client,
            database=database,
            directory=directory,
            review=directory.content_review,
            template=name,
            number=version,
            locale=locale,
        )
    finally:
        database.dispose()


@templates_app.command("approve")
@friendly_errors
def approve(
    name: Name,
    version: VersionOption = None,
    locale: LocaleOption = None,
    actor: Actor = None,
    comment: Comment = None,
    data_dir: DataDir = None,
) -> None:
    """Approve a version in review (not by its author: four eyes)."""
    record = _admin(
        data_dir,
        lambda admin: admin.approve(
            name, number=version, locale=locale, actor=_actor(actor), comment=comment
        ),
    )
    _done("approved", record)


@templates_app.command("reject")
@friendly_errors
def reject(
    name: Name,
    comment: Annotated[str, typer.Option(help="Why, so the author can fix it.")],
    version: VersionOption = None,
    locale: LocaleOption = None,
    actor: Actor = None,
    data_dir: DataDir = None,
) -> None:
    """Reject a version in review, saying why."""
    record = _admin(
        data_dir,
        lambda admin: admin.reject(
            name, number=version, locale=locale, actor=_actor(actor), comment=comment
        ),
    )
    _done("rejected", record)


@templates_app.command("retire")
@friendly_errors
def retire(
    name: Name,
    version: Annotated[int, typer.Option("--version", help="The approved version to retire.")],
    locale: LocaleOption = None,
    actor: Actor = None,
    comment: Comment = None,
    data_dir: DataDir = None,
) -> None:
    """Take an approved version out of use (sends fall back to the previous approved one)."""
    record = _admin(
        data_dir,
        lambda admin: admin.retire(
            name, number=version, locale=locale, actor=_actor(actor), comment=comment
        ),
    )
    _done("retired", record)


@templates_app.command("history")
@friendly_errors
def history(name: Name, data_dir: DataDir = None) -> None:
    """Who created, edited, submitted, approved, rejected or retired what, and when."""
    for event in _admin(data_dir, lambda admin: admin.history(name)):
        what = f"v{event.version}" + (f" {event.locale}" if event.locale else "")
        note = f"  ({event.comment})" if event.comment else ""
        typer.echo(f"{event.at:%Y-%m-%d %H:%M:%S}  {event.action:9} {what:10} {event.actor}{note}")


@templates_app.command("diff")
@friendly_errors
def diff(
    name: Name,
    old: Annotated[int, typer.Argument(help="The older version.")],
    new: Annotated[int, typer.Argument(help="The newer version.")],
    data_dir: DataDir = None,
) -> None:
    """A unified diff of two versions (parts, declarations, included partials)."""
    typer.echo(_admin(data_dir, lambda admin: admin.diff(name, old, new)) or "no difference")


@templates_app.command("preview")
@friendly_errors
def preview(
    name: Name,
    contact: Annotated[str, typer.Option(help="The contact's key.")],
    locale: Annotated[str | None, typer.Option(help="Instead of the contact's locale.")] = None,
    channel: Annotated[str, typer.Option(help="email, sms, push, chat, in_app.")] = "email",
    purpose: Annotated[
        Purpose | None, typer.Option(help="As the step sends it (default: the template's).")
    ] = None,
    topic: Annotated[str, typer.Option(help="As the step sends it.")] = "general",
    version: VersionOption = None,
    prop: Annotated[
        list[str] | None, typer.Option(help="An event property as k=v (repeatable).")
    ] = None,
    drafts: Annotated[
        bool, typer.Option(help="Preview the newest draft too (as `tidings dev` sends).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Render exactly what a send to the contact would be, without sending it."""
    properties = parse_pairs("--prop", prop or [])
    composed = _admin(
        data_dir,
        lambda admin: admin.preview(
            name,
            contact_key=contact,
            channel=channel,
            locale=locale,
            purpose=purpose,
            topic=topic,
            version=version,
            properties=properties,
            allow_drafts=drafts or None,
        ),
    )
    if as_json:
        echo_json(composed.model_dump(mode="json"))
        return
    _print_preview(composed)


def _print_preview(composed: Composed) -> None:
    revision = (
        f", translation revision {composed.translation_revision}"
        if composed.translation_revision
        else ""
    )
    typer.echo(
        f"{composed.template} version {composed.version}{revision}, {composed.locale}, "
        f"{composed.channel} to {composed.to or composed.channel + ' of the contact'}"
    )
    for note in composed.audit_notes():
        typer.echo(f"note: {note}")
    for header, value in composed.headers.items():
        typer.echo(f"{header}: {value}")
    for part, text in composed.parts.items():
        typer.echo(f"\n--- {part} ---\n{text.rstrip()}")
    if composed.sms is not None:
        size = composed.sms
        typer.echo(
            f"\nSMS: {size.encoding}, {size.units} units, "
            f"{size.segments} segment{'s' if size.segments != 1 else ''}"
        )
