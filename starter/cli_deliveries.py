"""`tidings deliveries reconcile`: settle `uncertain` sends from the relay's own record.

A send cut short after its hand-over, with no record to ask at the time (or
one that could not answer), is `uncertain`. Once the relay's record is
configured (`TIDINGS_SMTP_RECORD`) and readable, this command asks it about
each: found there, the delivery was sent; not there, it never reached the
relay and is `failed`, with an error saying so; no answer, it stays. Works
on the app database and the record alone (no Temporal server needed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlmodel import Session, col, select

from tidings.activities.channels.relay_record import HandedOver, ProviderRecord, smtp_records
from tidings.activities.send import RELAY_FOUND, email_message_id
from tidings.db import deliveries, delivery_events
from tidings.models.tables import Delivery
from tidings.settings import Settings
from tidings.starter.cli_support import (
    DataDir,
    friendly_errors,
    in_session,
    parse_duration_option,
    settings_for,
)

deliveries_app = typer.Typer(help="Deliveries in the app database.", no_args_is_help=True)

NEVER_RECEIVED = (
    "never reached the relay ({detail}): not sent. If it is still wanted, send it "
    "again, e.g. by tracking the journey's trigger event for the contact once more"
)


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")


@dataclass(frozen=True)
class Reconciled:
    delivery: Delivery
    verdict: str
    """found, absent, too recent, unknown, no record."""
    action: str
    """What happened (or would, in a dry run) to the row."""
    detail: str


def reconcile_rows(
    session: Session,
    records: dict[str, ProviderRecord],
    sender: str,
    *,
    since: datetime,
    now: datetime,
    dry_run: bool,
) -> list[Reconciled]:
    """Ask each provider's record about the `uncertain` deliveries settled since `since`."""
    rows = session.exec(
        select(Delivery)
        .where(col(Delivery.status) == deliveries.UNCERTAIN, col(Delivery.updated_at) >= since)
        .order_by(col(Delivery.updated_at))
    ).all()
    return [_reconcile(session, row, records, sender, now, dry_run) for row in rows]


def _reconcile(
    session: Session,
    row: Delivery,
    records: dict[str, ProviderRecord],
    sender: str,
    now: datetime,
    dry_run: bool,
) -> Reconciled:
    known = records.get(row.provider or "")
    if known is None:
        why = f"no record configured for provider {row.provider or '(not recorded)'}"
        return Reconciled(row, "no record", "left uncertain", why)
    message_id = email_message_id(row.idempotency_key, sender)
    # The hand-over came after the claim and before the row turned uncertain: the
    # record must reach back to the claim, and `absent` wait until after the latter.
    handed_over = row.counted_at or row.updated_at
    answer = known.record.look_up(HandedOver(message_id, row.to_address or "", handed_over))
    if answer.verdict == "unknown":
        return Reconciled(row, "unknown", "left uncertain", answer.detail)
    if answer.verdict == "absent" and now - row.updated_at < known.absent_after:
        return Reconciled(row, "too recent", "left uncertain", "ask again in a minute")
    found = answer.verdict == "found"
    status = deliveries.SENT if found else deliveries.FAILED
    if dry_run:
        return Reconciled(row, answer.verdict, f"would be {status}", answer.detail)
    settled = deliveries.resolve(
        session=session,
        delivery=row,
        status=status,
        now=now,
        error=None if found else NEVER_RECEIVED.format(detail=answer.detail),
        provider_message_id=message_id,
    )
    if not settled:
        return Reconciled(row, answer.verdict, "left: changed meanwhile", answer.detail)
    delivery_events.record(
        session=session,
        delivery=row,
        provider=row.provider,
        status="sent" if found else "failed",
        provider_status=RELAY_FOUND if found else "not in the relay's record",
        provider_event_id=f"{row.id}:reconciled",
        error_code=None,
        at=now,
    )
    return Reconciled(row, answer.verdict, status, answer.detail)


def records_for(settings: Settings) -> dict[str, ProviderRecord]:
    from tidings.worker import smtp_provider  # the worker's own SMTP settings

    return smtp_records(settings.smtp_record, [smtp_provider(settings)])


@deliveries_app.command("reconcile")
@friendly_errors
def reconcile(
    since: Annotated[
        str, typer.Option(help="Uncertain deliveries settled this far back: 90m, 24h, 7d.")
    ] = "7d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Ask the record, change nothing.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Settle `uncertain` deliveries from the relay's record (TIDINGS_SMTP_RECORD):
    found there → sent; not there → failed (never sent); no answer → left as they are."""
    now = datetime.now(UTC)
    start = now - parse_duration_option("--since", since)
    settings = settings_for(data_dir)
    records = records_for(settings)
    if not records:
        typer.echo(
            "no relay record configured: set TIDINGS_SMTP_RECORD to maildir:PATH or "
            "postfix-log:PATH (see the README's configuration table)",
            err=True,
        )
        raise typer.Exit(1)
    lines = in_session(
        settings,
        lambda session: reconcile_rows(
            session, records, settings.email_from, since=start, now=now, dry_run=dry_run
        ),
    )
    typer.echo(
        f"uncertain deliveries since {start:%Y-%m-%d %H:%M} UTC"
        f"{' (dry run: nothing changed)' if dry_run else ''}"
    )
    for line in lines:
        row = line.delivery
        typer.echo(
            f"  {row.id}  {row.journey}/{row.step_id}  {line.verdict:<10}  {line.action:<16}  "
            f"{line.detail}"
        )
    counts = Counter(line.verdict for line in lines)
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    typer.echo(f"{len(lines)} uncertain: {summary or 'none'}")
