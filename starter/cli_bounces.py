"""`tidings bounces scan MAILDIR`: bounce reports (DSNs) and complaints (ARF) from a
mailbox, into the delivery history and the suppression list."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tidings.activities.channels.bounces import Bounce, scan_maildir
from tidings.db import delivery_reports
from tidings.db.engine import Database
from tidings.starter.cli_support import DataDir, friendly_errors, settings_for

bounces_app = typer.Typer(help="Bounce mail: read DSNs and complaints.", no_args_is_help=True)

STATUSES = {"failed": "bounced", "delayed": "queued", "complained": "complained"}


def register(app: typer.Typer) -> None:
    app.add_typer(bounces_app, name="bounces")


def report(bounce: Bounce, at: datetime) -> delivery_reports.DeliveryReport:
    """A report as a line of the delivery's history (the same report twice is one line)."""
    failed = bounce.action == "failed"
    return delivery_reports.DeliveryReport(
        delivery_id=bounce.delivery_id,
        provider_message_id=None,
        status=STATUSES[bounce.action],
        provider_status=f"bounce:{bounce.bounce_class}" if failed else bounce.action,
        event_id=f"dsn:{bounce.recipient}:{bounce.action}:{bounce.status}",
        code=bounce.status or None,
        suppress=bounce.suppress_reason(),
        at=at,
    )


@bounces_app.command("scan")
@friendly_errors
def scan(
    maildir: Annotated[Path, typer.Argument(help="The bounce mailbox, in Maildir format.")],
    data_dir: DataDir = None,
) -> None:
    """Apply every DSN and complaint in MAILDIR; reports for unknown mail are counted."""
    found = scan_maildir(maildir)
    database = Database(settings_for(data_dir).database_url)
    applied = unknown = 0
    try:
        for bounce in found:
            with database.session() as session:
                done = delivery_reports.record(
                    session=session, report=report(bounce, datetime.now(UTC)), provider="smtp"
                )
            applied += done
            unknown += not done
    finally:
        database.dispose()
    typer.echo(
        f"{len(found)} reports: {applied} applied, {unknown} for mail tidings does not know "
        "or already applied"
    )
