"""The delivery report (figures, window, CLI) and the send metrics, on hand-made rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from support import points
from typer.testing import CliRunner

from tidings.activities.metrics import record_send, use_meter_provider
from tidings.db.delivery_report import ProviderFigures, percentile, report
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.models.tables import Delivery, DeliveryEventRecord
from tidings.starter import cli_report

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@dataclass
class Rows:
    """Deliveries and events written straight into the tables, as the send activity would."""

    database: Database

    def delivery(
        self,
        status: str,
        *,
        channel: str = "sms",
        provider: str | None = None,
        counted_at: datetime | None = None,
        latency_ms: float | None = None,
        updated_at: datetime | None = None,
    ) -> str:
        delivery_id = uuid.uuid4().hex
        sent_at = None
        if latency_ms is not None:
            assert counted_at is not None
            sent_at = counted_at + timedelta(milliseconds=latency_ms)
        moment = counted_at or updated_at or NOW
        row = Delivery(
            id=delivery_id,
            idempotency_key=f"journey/j/c/1/{delivery_id}/1",
            contact_key="c1",
            journey="j",
            step_id="s",
            channel=channel,
            template="t",
            purpose="marketing",
            status=status,
            provider=provider,
            provider_message_id=f"m-{delivery_id}" if provider else None,
            scheduled_at=moment,
            counted_at=counted_at,
            sent_at=sent_at,
            updated_at=updated_at or sent_at or moment,
        )
        with self.database.session() as session:
            session.add(row)
        return delivery_id

    def sent(
        self, latency_ms: float, *, at: datetime, channel: str = "sms", provider: str = "twilio"
    ) -> str:
        return self.delivery(
            "sent", channel=channel, provider=provider, counted_at=at, latency_ms=latency_ms
        )

    def event(
        self, delivery_id: str, status: str, *, at: datetime, provider: str = "twilio"
    ) -> None:
        with self.database.session() as session:
            session.add(
                DeliveryEventRecord(
                    delivery_id=delivery_id,
                    status=status,
                    provider=provider,
                    provider_status=status,
                    provider_event_id=uuid.uuid4().hex,
                    at=at,
                )
            )


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def rows(database: Database) -> Rows:
    return Rows(database)


def figures(database: Database, since: datetime, now: datetime = NOW) -> list[ProviderFigures]:
    with database.session() as session:
        return report(session, since, now)


# Percentiles


def test_percentiles_are_nearest_rank_and_always_one_of_the_values() -> None:
    ten = [float(n) for n in range(10, 0, -1)]  # order does not matter
    assert [percentile(ten, p) for p in (0, 10, 50, 51, 90, 95, 99, 100)] == [
        1.0,
        1.0,
        5.0,
        6.0,
        9.0,
        10.0,
        10.0,
        10.0,
    ]
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None
    hundred = [float(n) for n in range(1, 101)]
    assert (percentile(hundred, 50), percentile(hundred, 95), percentile(hundred, 99)) == (
        50.0,
        95.0,
        99.0,
    )
    with pytest.raises(InputError):
        percentile(ten, 101)


# The report


def test_report_counts_latencies_and_rates_per_channel_and_provider(
    database: Database, rows: Rows
) -> None:
    at = NOW - timedelta(hours=2)
    d1 = rows.sent(100, at=at)
    d2 = rows.sent(200, at=at)
    d3 = rows.sent(300, at=at)
    d4 = rows.sent(1000, at=at)
    rows.event(d1, "queued", at=at)
    rows.event(d1, "delivered", at=at + timedelta(minutes=1))
    rows.event(d2, "delivered", at=at)
    rows.event(d2, "delivered", at=at + timedelta(seconds=5))  # the same news twice: one message
    rows.event(d3, "bounced", at=at)
    rows.event(d3, "failed", at=at)  # a bounce reported twice over: one bounce
    rows.event(d4, "delivered", at=at)
    rows.event(d4, "complained", at=at + timedelta(hours=1))
    rows.event(d1, "bounced", at=NOW + timedelta(minutes=1))  # after the report's now
    rows.sent(40, at=at, provider="vonage")
    # No provider is recorded for failures, skips and uncertain sends.
    rows.delivery("failed", counted_at=at, updated_at=at)
    rows.delivery("uncertain", counted_at=at, updated_at=at)
    rows.delivery("skipped", updated_at=at)
    rows.delivery("skipped", updated_at=at)
    rows.sent(50, at=at, channel="chat", provider="slack")
    rows.delivery("deferred", channel="chat", counted_at=at, updated_at=at)
    rows.delivery("sending", channel="chat", counted_at=at, updated_at=at)

    found = figures(database, NOW - DAY)

    assert [(f.channel, f.provider) for f in found] == [
        ("chat", "slack"),
        ("chat", None),
        ("sms", "twilio"),
        ("sms", "vonage"),
        ("sms", None),
    ]
    chat, chat_none, twilio, vonage, sms_none = found
    assert (twilio.sent, twilio.failed, twilio.uncertain, twilio.skipped) == (4, 0, 0, 0)
    # Nearest rank over 100, 200, 300, 1000 ms: p50 is the 2nd, p95 and p99 the 4th.
    assert (twilio.p50_ms, twilio.p95_ms, twilio.p99_ms) == pytest.approx((200, 1000, 1000))
    assert (twilio.delivered, twilio.bounced, twilio.complaints) == (3, 1, 1)
    assert twilio.delivery_rate == pytest.approx(0.75)
    assert twilio.bounce_rate == pytest.approx(0.25)
    assert vonage.sent == 1
    assert (vonage.p50_ms, vonage.p99_ms) == pytest.approx((40, 40))
    assert (vonage.delivery_rate, vonage.bounce_rate, vonage.complaints) == (0, 0, 0)
    assert (sms_none.sent, sms_none.failed, sms_none.uncertain, sms_none.skipped) == (0, 1, 1, 2)
    assert (sms_none.p50_ms, sms_none.delivery_rate, sms_none.bounce_rate) == (None, None, None)
    assert (chat.sent, chat.pending) == (1, 0)
    assert chat.p99_ms == pytest.approx(50)
    assert (chat_none.sent, chat_none.pending) == (0, 2)
    as_json = twilio.as_dict()
    assert as_json["delivery_rate"] == pytest.approx(0.75)
    assert as_json["bounce_rate"] == pytest.approx(0.25)
    assert json.loads(json.dumps(as_json))["p95_ms"] == pytest.approx(1000)


def test_the_window_is_since_up_to_now_by_claim_time_or_else_write_time(
    database: Database, rows: Rows
) -> None:
    rows.sent(10, at=NOW - 3 * DAY)
    rows.sent(20, at=NOW - timedelta(hours=30))
    rows.sent(30, at=NOW - timedelta(hours=1))
    rows.sent(40, at=NOW - DAY)  # exactly at `since`: in
    rows.sent(50, at=NOW)  # exactly at `now`: out (the next window's)
    # Claimed before the window, settled inside it: the claim decides.
    rows.delivery("failed", counted_at=NOW - 2 * DAY, updated_at=NOW - timedelta(hours=1))
    rows.delivery("skipped", updated_at=NOW - timedelta(hours=1))
    rows.delivery("skipped", updated_at=NOW - 3 * DAY)

    [last_day, *_] = figures(database, NOW - DAY)
    [last_two_days, none] = figures(database, NOW - 2 * DAY)
    [last_hour, *_] = figures(database, NOW - timedelta(hours=1))

    assert (last_day.provider, last_day.sent) == ("twilio", 2)
    assert last_day.p50_ms == pytest.approx(30)
    assert last_two_days.sent == 3
    assert (none.failed, none.skipped) == (1, 1)
    assert last_hour.sent == 1
    assert figures(database, NOW - timedelta(minutes=30)) == []
    with pytest.raises(InputError, match="window is empty"):
        figures(database, NOW)


def test_a_negative_latency_is_reported_as_is(database: Database, rows: Rows) -> None:
    # The claim time is the Temporal server's clock, sent_at the worker's: a worker
    # clock running behind shows up as a negative figure instead of being hidden.
    rows.sent(-15, at=NOW - timedelta(hours=1))

    [line] = figures(database, NOW - DAY)

    assert line.p50_ms == pytest.approx(-15)


# The command


runner = CliRunner()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    cli_report.register(app)

    @app.callback()
    def main() -> None:
        """Keeps `report` a subcommand (a one-group app would collapse into it)."""

    return app


def test_the_command_prints_a_table_per_channel_and_provider(
    cli: typer.Typer, database: Database, database_url: str, rows: Rows, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    rows.sent(120, at=now - timedelta(hours=1))
    delivered = rows.sent(80, at=now - timedelta(hours=2))
    rows.event(delivered, "delivered", at=now - timedelta(hours=2))
    rows.sent(99, at=now - 3 * DAY)
    rows.delivery("skipped", channel="in_app", updated_at=now - timedelta(hours=3))
    env = {"TIDINGS_DATABASE_URL": database_url}

    table = runner.invoke(cli, ["report", "deliveries", "--data-dir", str(tmp_path)], env=env)
    week = runner.invoke(
        cli,
        ["report", "deliveries", "--since", "7d", "--json", "--data-dir", str(tmp_path)],
        env=env,
    )

    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith("deliveries of the last 1d (")
    words = [" ".join(line.split()) for line in lines[1:4]]
    assert words == [
        "channel provider sent failed uncert. skipped pending p50 ms p95 ms p99 ms deliv. bounce "
        "compl.",
        "in_app (none) 0 0 0 1 0 - - - - - 0",
        "sms twilio 2 0 0 0 0 80.0 120.0 120.0 50.0% 0.0% 0",
    ]
    assert lines[4].startswith("(none): no provider recorded")
    assert week.exit_code == 0, week.output
    shown = json.loads(week.output)
    assert [(p["channel"], p["provider"], p["sent"]) for p in shown["providers"]] == [
        ("in_app", None, 0),
        ("sms", "twilio", 3),
    ]
    assert shown["providers"][1]["p99_ms"] == pytest.approx(120)
    assert shown["providers"][1]["delivery_rate"] == pytest.approx(1 / 3)
    assert datetime.fromisoformat(shown["until"]) - datetime.fromisoformat(
        shown["since"]
    ) == timedelta(days=7)


def test_the_command_says_when_there_is_nothing_and_refuses_a_bad_duration(
    cli: typer.Typer, tmp_path: Path
) -> None:
    empty = runner.invoke(
        cli, ["report", "deliveries", "--since", "90m", "--data-dir", str(tmp_path)]
    )
    bad = runner.invoke(cli, ["report", "deliveries", "--since", "3x", "--data-dir", str(tmp_path)])
    negative = runner.invoke(
        cli, ["report", "deliveries", "--since", "-1d", "--data-dir", str(tmp_path)]
    )

    assert empty.exit_code == 0, empty.output
    assert empty.output.splitlines()[1:] == ["  none"]
    assert "last 1h30m" in empty.output
    assert bad.exit_code == 1
    assert "error: --since '3x': '3x' is not a duration" in bad.output
    assert negative.exit_code == 1
    assert "must be a positive duration" in negative.output


def test_the_command_registers_on_the_tidings_app() -> None:
    from tidings.starter.cli import app

    if not any(group.name == "report" for group in app.registered_groups):
        cli_report.register(app)  # until cli.py does it itself
    result = runner.invoke(app, ["report", "deliveries", "--help"])
    assert result.exit_code == 0, result.output
    assert "--since" in result.output


# Metrics


def attrs(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_send_durations_and_outcomes_are_recorded_with_their_attributes(
    reader: InMemoryMetricReader,
) -> None:
    record_send("sms", "twilio", "sent", 0.120)
    record_send("sms", "twilio", "sent", 0.080)
    record_send("sms", "twilio", "deferred", 2.5, error_class="transient")
    record_send("sms", "vonage", "failed", 0.3, error_class="permanent")
    record_send("chat", "slack", "uncertain", 10.0, error_class="ambiguous")

    durations = points(reader, "tidings.send.duration")
    outcomes = points(reader, "tidings.send.outcomes")

    sent = durations[attrs(channel="sms", provider="twilio", outcome="sent")]
    assert isinstance(sent, HistogramDataPoint)
    assert (sent.count, sent.min, sent.max) == (2, 80, 120)
    assert sent.sum == pytest.approx(200)
    assert sent.explicit_bounds[:4] == (5, 10, 25, 50)
    slow = durations[attrs(channel="chat", provider="slack", outcome="uncertain")]
    assert isinstance(slow, HistogramDataPoint) and slow.sum == pytest.approx(10_000)
    assert len(durations) == 4  # no error_class on the histogram
    counts = {key: p.value for key, p in outcomes.items() if isinstance(p, NumberDataPoint)}
    assert counts == {
        attrs(channel="sms", provider="twilio", outcome="sent"): 2,
        attrs(channel="sms", provider="twilio", outcome="deferred", error_class="transient"): 1,
        attrs(channel="sms", provider="vonage", outcome="failed", error_class="permanent"): 1,
        attrs(channel="chat", provider="slack", outcome="uncertain", error_class="ambiguous"): 1,
    }


def test_the_metric_units_and_a_provider_switch(reader: InMemoryMetricReader) -> None:
    record_send("in_app", "inbox", "sent", 0.002)
    data = reader.get_metrics_data()
    assert data is not None
    units = {
        metric.name: metric.unit
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert units == {"tidings.send.duration": "ms", "tidings.send.outcomes": "{send}"}

    other = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[other])
    use_meter_provider(provider)
    record_send("in_app", "inbox", "sent", 0.004)
    try:
        [moved] = points(other, "tidings.send.outcomes").values()
        [kept] = points(reader, "tidings.send.outcomes").values()
        assert isinstance(moved, NumberDataPoint) and isinstance(kept, NumberDataPoint)
        assert (moved.value, kept.value) == (1, 1)
    finally:
        provider.shutdown()
