"""The `tidings` command line: thin typer commands over the client and the dev stack."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tidings.catalog import Catalog, validate_files
from tidings.connection import connect
from tidings.content.files import load_library
from tidings.logs import configure_logging
from tidings.segment_files import load_segments
from tidings.settings import Settings
from tidings.starter import (
    cli_approvals,
    cli_audit,
    cli_bounces,
    cli_contacts,
    cli_deliveries,
    cli_escalations,
    cli_holds,
    cli_import,
    cli_inbox,
    cli_ingest,
    cli_policy,
    cli_report,
    cli_segments,
    cli_templates,
)
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    parse_pairs,
    settings_for,
)
from tidings.starter.client import TidingsClient
from tidings.starter.dev import DevPorts, run_dev
from tidings.starter.outbox import read_email_outbox, read_provider_outbox
from tidings.starter.replay import ReplayReport, replay_live

app = typer.Typer(
    name="tidings",
    help="Durable customer journeys and lifecycle messaging on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
journeys_app = typer.Typer(help="Journey files: validate and list.", no_args_is_help=True)
app.add_typer(journeys_app, name="journeys")
cli_policy.register(app)
cli_templates.register(app)
cli_inbox.register(app)
cli_report.register(app)
cli_bounces.register(app)
cli_holds.register(app)
cli_import.register(app)
cli_ingest.register(app)
cli_approvals.register(app)
cli_audit.register(app)
cli_escalations.register(app)
cli_contacts.register(app)
cli_deliveries.register(app)
cli_segments.register(app)

R = TypeVar("R")


def _with_client(settings: Settings, work: Callable[[TidingsClient], Awaitable[R]]) -> R:
    async def run() -> R:
        client = await TidingsClient.connect(settings)
        try:
            return await work(client)
        finally:
            client.close()

    return asyncio.run(run())


@app.command()
@friendly_errors
def dev(
    data_dir: DataDir = None,
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port.")] = 8233,
    smtp_port: Annotated[int, typer.Option(help="Port of the local SMTP server.")] = 1025,
    http_port: Annotated[
        int, typer.Option(help="Port of the HTTP service (unsubscribe links).")
    ] = 8080,
    metrics_port: Annotated[
        int, typer.Option(help="Port of the worker's Prometheus endpoint (/metrics).")
    ] = 9464,
) -> None:
    """Run Temporal, a local SMTP server, the database and the worker, in the foreground."""
    settings = settings_for(data_dir)
    configure_logging(pretty=True)
    ports = DevPorts(
        temporal=temporal_port, ui=ui_port, smtp=smtp_port, http=http_port, metrics=metrics_port
    )
    _run_until_signal(lambda stop: run_dev(settings, ports, stop, announce=typer.echo))
    typer.echo("tidings dev stopped")


@app.command()
@friendly_errors
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the HTTP service (unsubscribe links) in the foreground."""
    from tidings.starter.service import serve_forever

    settings = settings_for(data_dir)
    configure_logging(pretty=True)
    host, port = host or settings.http_host, port or settings.http_port
    typer.echo(f"tidings HTTP service on http://{host}:{port} (Ctrl-C stops it)")
    _run_until_signal(lambda stop: serve_forever(settings, host=host, port=port, stop=stop))


@app.command()
@friendly_errors
def worker() -> None:
    """Run the worker alone, against the Temporal server envconfig points at."""
    from tidings.worker import run

    run()


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


@app.command()
@friendly_errors
def identify(
    key: Annotated[str, typer.Argument(help="The contact's pseudonymous key.")],
    email: Annotated[list[str] | None, typer.Option(help="An email address (repeatable).")] = None,
    phone: Annotated[list[str] | None, typer.Option(help="A phone number (repeatable).")] = None,
    push_token: Annotated[
        list[str] | None, typer.Option(help="A device's push token (repeatable).")
    ] = None,
    device: Annotated[list[str] | None, typer.Option(help="A device id (repeatable).")] = None,
    anonymous_id: Annotated[
        list[str] | None, typer.Option(help="An anonymous (pre-login) id (repeatable).")
    ] = None,
    external: Annotated[
        list[str] | None,
        typer.Option(help="An id in a source system as SOURCE=ID, e.g. stripe=cus_42."),
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone.")] = None,
    locale: Annotated[str | None, typer.Option(help="BCP 47 locale, e.g. fr-CA.")] = None,
    jurisdiction: Annotated[
        str | None, typer.Option(help="Country and region whose law applies: US-FL, CA-ON, DE.")
    ] = None,
    trait: Annotated[list[str] | None, typer.Option(help="A trait as k=v (repeatable).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create or update a contact and its identities."""
    traits = parse_pairs("--trait", trait or [])
    view = _with_client(
        settings_for(data_dir),
        lambda client: client.identify(
            key,
            emails=email or [],
            phones=phone or [],
            push_tokens=push_token or [],
            devices=device or [],
            anonymous_ids=anonymous_id or [],
            external_ids=cli_contacts.parse_external(external or []),
            timezone=timezone,
            locale=locale,
            jurisdiction=jurisdiction,
            traits=traits,
        ),
    )
    typer.echo(f"{'created' if view.created else 'updated'} contact {view.key}")


@app.command()
@friendly_errors
def track(
    key: Annotated[
        str, typer.Argument(help="The contact's key, or a reference: email:..., phone:+...")
    ],
    event: Annotated[str, typer.Argument(help="The event name, e.g. signed_up.")],
    prop: Annotated[list[str] | None, typer.Option(help="A property as k=v (repeatable).")] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Idempotency id: the same id twice counts once.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Send an event: it starts the journeys it triggers and wakes those waiting for it."""
    properties = parse_pairs("--prop", prop or [])
    result = _with_client(
        settings_for(data_dir),
        lambda client: client.track(key, event, properties, event_id=event_id),
    )
    if result.duplicate:
        typer.echo(f"event {result.event_id} was already tracked; nothing to do")
        return
    typer.echo(f"tracked {event} ({result.event_id})")
    for name in result.triggered:
        typer.echo(f"  triggered journey {name}")
    for name in result.woke:
        typer.echo(f"  delivered to running journey {name}")
    for name, why in result.skipped.items():
        typer.echo(f"  skipped journey {name}: {why}")


@app.command()
@friendly_errors
def status(
    key: Annotated[str, typer.Argument(help="The contact's key.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """The journeys a contact is in: step, and what each one waits for."""
    journeys = _with_client(settings_for(data_dir), lambda client: client.status(key))
    if as_json:
        echo_json([j.model_dump(mode="json") for j in journeys])
        return
    if not journeys:
        typer.echo(f"contact {key} is in no journey")
    for item in journeys:
        if item.status is None:
            typer.echo(f"{item.journey}: {item.state}")
            continue
        status = item.status
        typer.echo(f"{item.journey} v{status.version} (entry {status.entry}, {status.sends} sent)")
        typer.echo(f"  step {status.step_id} ({status.step_kind}): {status.details}")


@app.command()
@friendly_errors
def outbox(
    to: Annotated[str | None, typer.Option(help="Only messages to this address.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """What the dev channels received: the local SMTP server and the vendor stand-ins."""
    settings = settings_for(data_dir)
    messages = sorted(
        read_email_outbox(settings.outbox_dir, to=to)
        + read_provider_outbox(settings.provider_outbox, to=to),
        key=lambda m: m.received_at,
    )
    if as_json:
        echo_json([m.model_dump(mode="json") for m in messages])
        return
    if not messages:
        typer.echo("the outbox is empty")
    for message in messages:
        typer.echo(
            f"{message.received_at:%Y-%m-%d %H:%M:%S}  {message.channel:5}  "
            f"{message.to:30}  {message.subject}"
        )


@app.command()
@friendly_errors
def replay(
    query: Annotated[
        str,
        typer.Option(help="A visibility query, e.g. 'Journey=\"onboarding\"'; empty: all."),
    ] = 'ExecutionStatus="Running"',
    limit: Annotated[int, typer.Option(help="Replay at most this many histories.")] = 100,
    data_dir: DataDir = None,
) -> None:
    """Replay live histories from the server with this code: run it before a deploy.

    Exits 1 when any history would fail with this code (a nondeterministic
    change not guarded by workflow.patched)."""
    settings = settings_for(data_dir)

    async def run() -> ReplayReport:
        return await replay_live(await connect(settings), query, limit)

    report = asyncio.run(run())
    for workflow_id, run_id, error in report.failures:
        typer.echo(f"FAILS  {workflow_id} (run {run_id}): {error}")
    typer.echo(
        f"replayed {report.replayed} histories: {report.replayed - len(report.failures)} ok, "
        f"{len(report.failures)} would fail with this code"
    )
    if not report.ok:
        raise typer.Exit(1)


@journeys_app.command("validate")
@friendly_errors
def journeys_validate(
    paths: Annotated[list[Path], typer.Argument(help="Journey files to check.")],
    data_dir: DataDir = None,
) -> None:
    """Check journey files (the templates they send, the segments they name) without
    starting anything."""
    settings = settings_for(data_dir)
    problems = validate_files(
        paths,
        load_library(settings.templates_dir).templates,
        segments=load_segments(settings.segments_dir),
    )
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    for path in paths:
        typer.echo(f"ok {path}")


@journeys_app.command("list")
@friendly_errors
def journeys_list(data_dir: DataDir = None) -> None:
    """The journeys in the journeys directory."""
    settings = settings_for(data_dir)
    catalog = Catalog.from_settings(settings)
    for name, journey in sorted(catalog.journeys.items()):
        where = f" where {journey.trigger.where}" if journey.trigger.where else ""
        typer.echo(
            f"{name:20} v{journey.version:<3} on {journey.trigger.event}{where}; "
            f"{len(journey.steps)} steps  ({catalog.journey_files[name]})"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
