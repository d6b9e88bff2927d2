"""`tidings consent|suppress|unsuppress|preferences|blackouts|inbound-sms|explain`.

These work on the app database alone: no running Temporal server is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from tidings.catalog import load_policy
from tidings.db.engine import Database
from tidings.models.policy import Channel, ConsentBasis, SuppressionReason
from tidings.settings import Settings
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    parse_pairs,
    settings_for,
)
from tidings.starter.policy_admin import PolicyAdmin

R = TypeVar("R")

consent_app = typer.Typer(help="The consent ledger: grant, revoke, show.", no_args_is_help=True)
blackouts_app = typer.Typer(help="The blackout calendar.", no_args_is_help=True)
preferences_app = typer.Typer(help="Topic preferences (subscription center).", no_args_is_help=True)

Key = Annotated[str, typer.Argument(help="The contact's key.")]
ChannelOption = Annotated[Channel, typer.Option(help="email, sms, voice, push, chat, in_app.")]
PurposeOption = Annotated[
    str, typer.Option(help="marketing, service, transactional, critical, or all.")
]
TopicOption = Annotated[str | None, typer.Option(help="One topic; leave out for every topic.")]
SourceOption = Annotated[str, typer.Option(help="Where it came from (form, checkout, support).")]


def register(app: typer.Typer) -> None:
    app.add_typer(consent_app, name="consent")
    app.add_typer(blackouts_app, name="blackouts")
    app.add_typer(preferences_app, name="preferences")
    app.command("suppress")(suppress)
    app.command("unsuppress")(unsuppress)
    app.command("inbound-sms")(inbound_sms)
    app.command("explain")(explain)


def _admin(settings: Settings, work: Callable[[PolicyAdmin], Awaitable[R]]) -> R:
    async def run() -> R:
        database = await asyncio.to_thread(Database, settings.database_url)
        try:
            policy = load_policy(settings.policy_file)
            return await work(PolicyAdmin(database, sms_help_text=policy.sms_help_text))
        finally:
            database.dispose()

    return asyncio.run(run())


def _purpose(value: str) -> str | None:
    return None if value == "all" else value


@consent_app.command("grant")
@friendly_errors
def consent_grant(
    key: Key,
    channel: ChannelOption,
    basis: Annotated[ConsentBasis, typer.Option(help="The legal basis.")],
    purpose: PurposeOption = "marketing",
    topic: TopicOption = None,
    source: SourceOption = "cli",
    proof: Annotated[
        list[str] | None, typer.Option(help="What the contact saw and did, as k=v (repeatable).")
    ] = None,
    expires: Annotated[datetime | None, typer.Option(help="When the consent lapses.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Record consent, with its legal basis and proof."""
    evidence = parse_pairs("--proof", proof or [])
    entry = _admin(
        settings_for(data_dir),
        lambda admin: admin.grant(
            key,
            channel=channel,
            basis=basis,
            purpose=_purpose(purpose),
            topic=topic,
            source=source,
            proof=evidence,
            expires_at=_aware(expires) if expires else None,
        ),
    )
    lapse = f", expires {entry.expires_at:%Y-%m-%d}" if entry.expires_at else ""
    typer.echo(f"granted {channel}/{purpose}/{topic or 'all'} ({basis}{lapse}), entry {entry.id}")


@consent_app.command("revoke")
@friendly_errors
def consent_revoke(
    key: Key,
    channel: ChannelOption,
    purpose: PurposeOption = "marketing",
    topic: TopicOption = None,
    source: SourceOption = "cli",
    objection: Annotated[
        bool, typer.Option(help="A GDPR objection to direct marketing (absolute).")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Revoke consent (at once), or record an objection to direct marketing."""
    entry = _admin(
        settings_for(data_dir),
        lambda admin: admin.revoke(
            key,
            channel=channel,
            purpose=_purpose(purpose),
            topic=topic,
            source=source,
            objection=objection,
        ),
    )
    verb = "objection recorded for" if objection else "revoked"
    typer.echo(f"{verb} {channel}/{purpose}/{topic or 'all'}, entry {entry.id}")


@consent_app.command("show")
@friendly_errors
def consent_show(
    key: Key,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Where the contact stands, scope by scope, with the ledger behind it."""
    report = _admin(settings_for(data_dir), lambda admin: admin.report(key))
    if as_json:
        echo_json(report.model_dump(mode="json"))
        return
    typer.echo(
        f"{key}: jurisdiction {report.jurisdiction or 'unknown'} ({', '.join(report.packs)})"
    )
    for scope in report.scopes:
        lapse = f", expires {scope.expires_at:%Y-%m-%d}" if scope.expires_at else ""
        basis = f" ({scope.basis})" if scope.basis else ""
        typer.echo(
            f"  {scope.channel}/{scope.purpose or 'all'}/{scope.topic or 'all'}: "
            f"{scope.state}{basis} since {scope.since:%Y-%m-%d}{lapse} [entry {scope.entry}]"
        )
    for item in report.suppressions:
        where = item.address or f"contact on {item.channel or 'every channel'}"
        typer.echo(f"  suppressed {where}: {item.reason} [suppression {item.id}]")
    for preference in report.preferences:
        state = "subscribed to" if preference.subscribed else "unsubscribed from"
        typer.echo(f"  {state} {preference.topic} on {preference.channel}")
    if not (report.scopes or report.suppressions or report.preferences):
        typer.echo("  no consent recorded")


@friendly_errors
def suppress(
    key: Annotated[str | None, typer.Argument(help="The contact's key.")] = None,
    reason: Annotated[SuppressionReason, typer.Option(help="Why.")] = "manual",
    address: Annotated[str | None, typer.Option(help="An email or phone instead of a key.")] = None,
    channel: Annotated[Channel | None, typer.Option(help="Only this channel.")] = None,
    note: Annotated[str, typer.Option(help="A note for the record.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Stop all sends to a contact or an address (hard bounce, complaint, legal, manual)."""
    item = _admin(
        settings_for(data_dir),
        lambda admin: admin.suppress(
            key, reason=reason, address=address, channel=channel, note=note
        ),
    )
    typer.echo(f"suppression {item.id}: {item.address or item.contact_key} ({item.reason})")


@friendly_errors
def unsuppress(
    suppression_id: Annotated[int, typer.Argument(help="The suppression's number.")],
    data_dir: DataDir = None,
) -> None:
    """Lift a suppression."""
    item = _admin(settings_for(data_dir), lambda admin: admin.lift_suppression(suppression_id))
    typer.echo(f"suppression {item.id} lifted")


@preferences_app.command("set")
@friendly_errors
def preferences_set(
    key: Key,
    channel: ChannelOption,
    topic: Annotated[str, typer.Option(help="The topic.")],
    subscribe: Annotated[bool, typer.Option("--subscribe/--unsubscribe")] = True,
    data_dir: DataDir = None,
) -> None:
    """Subscribe a contact to a topic on a channel, or unsubscribe them."""
    preference = _admin(
        settings_for(data_dir),
        lambda admin: admin.set_preference(key, channel=channel, topic=topic, subscribed=subscribe),
    )
    state = "subscribed to" if preference.subscribed else "unsubscribed from"
    typer.echo(f"{key} {state} {preference.topic} on {preference.channel}")


@blackouts_app.command("add")
@friendly_errors
def blackouts_add(
    name: Annotated[str, typer.Argument(help="What it is: a holiday, an incident.")],
    starts: Annotated[datetime, typer.Option("--from", help="Start (ISO, UTC if no offset).")],
    ends: Annotated[datetime, typer.Option("--until", help="End (ISO, UTC if no offset).")],
    region: Annotated[
        list[str] | None, typer.Option(help="Jurisdiction or country (repeatable); none: all.")
    ] = None,
    purpose: Annotated[
        list[str] | None, typer.Option(help="Purpose (repeatable); none: all but critical.")
    ] = None,
    skip: Annotated[bool, typer.Option(help="Skip sends instead of deferring them.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Defer (or skip) matching sends during a period."""
    blackout = _admin(
        settings_for(data_dir),
        lambda admin: admin.add_blackout(
            name,
            starts_at=_aware(starts),
            ends_at=_aware(ends),
            regions=region,
            purposes=purpose,
            action="skip" if skip else "defer",
        ),
    )
    typer.echo(f"blackout {blackout.id}: {blackout.name}")


@blackouts_app.command("list")
@friendly_errors
def blackouts_list(data_dir: DataDir = None) -> None:
    """Every blackout, past and future."""
    for item in _admin(settings_for(data_dir), lambda admin: admin.blackouts()):
        regions = ", ".join(item.regions) or "everywhere"
        purposes = ", ".join(item.purposes) or "all but critical"
        typer.echo(
            f"{item.id:>4}  {item.starts_at:%Y-%m-%d %H:%M} .. {item.ends_at:%Y-%m-%d %H:%M} UTC  "
            f"{item.action:5}  {item.name} ({regions}; {purposes})"
        )


@blackouts_app.command("remove")
@friendly_errors
def blackouts_remove(
    blackout_id: Annotated[int, typer.Argument(help="The blackout's number.")],
    data_dir: DataDir = None,
) -> None:
    """Remove a blackout."""
    _admin(settings_for(data_dir), lambda admin: admin.remove_blackout(blackout_id))
    typer.echo(f"blackout {blackout_id} removed")


@friendly_errors
def inbound_sms(
    sender: Annotated[str, typer.Argument(metavar="FROM", help="The sender's number.")],
    text: Annotated[str, typer.Argument(help="The message.")],
    data_dir: DataDir = None,
) -> None:
    """Act on an inbound SMS: STOP (and variants) opt out at once, START restores, HELP."""
    result = _admin(settings_for(data_dir), lambda admin: admin.inbound_sms(sender, text))
    if result.keyword is None:
        typer.echo("not a keyword; nothing to do")
        return
    who = result.contact_key or "no known contact"
    typer.echo(f"{result.keyword.upper()} from {who}")
    if result.reply:
        typer.echo(f"reply: {result.reply}")


@friendly_errors
def explain(
    key: Key,
    journey: Annotated[str | None, typer.Option(help="Only this journey.")] = None,
    limit: Annotated[int, typer.Option(help="The latest this many lines.")] = 40,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """A contact's timeline: entries, policy decisions with their rule, sends, consent."""
    lines = _admin(
        settings_for(data_dir), lambda admin: admin.explain(key, journey=journey, limit=limit)
    )
    if as_json:
        echo_json([line.model_dump(mode="json") for line in lines])
        return
    for line in lines:
        where = "/".join(part for part in (line.journey, line.step) if part) or "-"
        typer.echo(f"{line.at:%Y-%m-%d %H:%M}  {where:32}  {line.what}")


def _aware(moment: datetime) -> datetime:
    """Command-line times without an offset are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
