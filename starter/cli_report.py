"""`tidings report deliveries`: sends, failures, latency and provider feedback per channel.

Works on the app database alone (no Temporal server needed), so it answers
"is Twilio slow today?" or "did the bounce rate jump?" even while the
workers are down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from tidings.db.delivery_report import ProviderFigures, report
from tidings.models.primitives import format_duration
from tidings.starter.cli_support import (
    DataDir,
    echo_json,
    friendly_errors,
    in_session,
    parse_duration_option,
    settings_for,
)

report_app = typer.Typer(help="Reports over the app database.", no_args_is_help=True)

COLUMNS = (
    ("channel", 8),
    ("provider", 10),
    ("sent", 7),
    ("failed", 7),
    ("uncert.", 7),
    ("skipped", 7),
    ("pending", 7),
    ("p50 ms", 8),
    ("p95 ms", 8),
    ("p99 ms", 8),
    ("deliv.", 7),
    ("bounce", 7),
    ("compl.", 6),
)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def parse_since(value: str) -> timedelta:
    """`--since` as the journey files write durations (90m, 24h, 7d, 1w), positive."""
    return parse_duration_option("--since", value)


@report_app.command("deliveries")
@friendly_errors
def deliveries(
    since: Annotated[
        str, typer.Option(help="How far back: a duration such as 90m, 24h, 7d or 1w.")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Per channel and provider: sent, failed, uncertain, skipped, hand-over latency
    (p50/p95/p99 from the attempt's start to sent), delivery and bounce rates, complaints."""
    window = parse_since(since)
    now = datetime.now(UTC)
    start = now - window
    lines = in_session(settings_for(data_dir), lambda session: report(session, start, now))
    if as_json:
        echo_json(
            {
                "since": start.isoformat(),
                "until": now.isoformat(),
                "providers": [line.as_dict() for line in lines],
            }
        )
        return
    typer.echo(
        f"deliveries of the last {format_duration(window)} "
        f"({start:%Y-%m-%d %H:%M} .. {now:%Y-%m-%d %H:%M} UTC)"
    )
    if not lines:
        typer.echo("  none")
        return
    typer.echo(render_table(lines))
    if any(line.provider is None for line in lines):
        typer.echo(
            "(none): no provider recorded: skipped, failed and uncertain deliveries (a "
            "delivery names its provider once it is sent)"
        )


def render_table(lines: list[ProviderFigures]) -> str:
    """Aligned columns; `-` where there is no figure (no sends, so no latency or rate)."""
    rows = [[name for name, _ in COLUMNS], *([_cells(line) for line in lines])]
    widths = [max(width, *(len(row[i]) for row in rows)) for i, (_, width) in enumerate(COLUMNS)]
    text = []
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)


def _cells(line: ProviderFigures) -> list[str]:
    return [
        line.channel,
        line.provider or "(none)",
        str(line.sent),
        str(line.failed),
        str(line.uncertain),
        str(line.skipped),
        str(line.pending),
        _ms(line.p50_ms),
        _ms(line.p95_ms),
        _ms(line.p99_ms),
        _rate(line.delivery_rate),
        _rate(line.bounce_rate),
        str(line.complaints),
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
