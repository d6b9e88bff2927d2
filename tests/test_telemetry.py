"""Traces, metrics and logs of a real journey: one trace from track() to the provider
call, tidings' own metrics, log lines bound to the run and free of personal data."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import points, running_stack
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tidings import telemetry
from tidings.activities import metrics
from tidings.errors import TidingsError
from tidings.logs import configure_logging
from tidings.starter.smtp_sink import SmtpSink

QUICK_JOURNEYS = Path(__file__).parent / "fixtures" / "quick-journeys"
EMAIL = "trace-me@example.com"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    yield exporter
    telemetry.use_tracer_provider(None)
    provider.shutdown()


def traced_client(env: WorkflowEnvironment) -> Client:
    """A client of the test server with the interceptors `connect()` adds when tracing."""
    interceptors = telemetry.tracing_interceptors()
    assert interceptors, "a tracer provider is in use, so the tracing interceptor is added"
    return Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=env.client.data_converter,
        interceptors=interceptors,
    )


def counts(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Counter values, and histograms' counts, by attributes."""
    found: dict[frozenset[tuple[str, str]], float] = {}
    for key, point in points(reader, name).items():
        if isinstance(point, HistogramDataPoint):
            found[key] = float(point.count)
        elif isinstance(point, NumberDataPoint):
            found[key] = float(point.value)
    return found


async def test_one_trace_runs_from_track_through_the_journey_to_the_provider_call(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    contact_key: str,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=QUICK_JOURNEYS,
        temporal=traced_client(time_skipping),
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=[EMAIL])
        await stack.client.track(contact_key, "ping")
        result = await stack.result("quick", contact_key)
    assert (result.outcome, result.sends) == ("completed", 2)

    finished = spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished if span.context}
    track = next(s for s in finished if s.name == "tidings.track")
    provider_calls = [s for s in finished if s.name == "tidings.provider.send"]
    assert len(provider_calls) == 2

    def ancestry(span: ReadableSpan) -> list[str]:
        names = [span.name]
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    assert track.context is not None
    for call in provider_calls:
        assert call.context is not None
        assert call.context.trace_id == track.context.trace_id
        chain = ancestry(call)
        # provider call ← the activity run ← its scheduling in the workflow ←
        # the workflow's start by track().
        assert chain == [
            "tidings.provider.send",
            "RunActivity:send_email",
            "StartActivity:send_email",
            "SignalWithStartWorkflow:Journey",
            "tidings.track",
        ]
        assert dict(call.attributes or {})["tidings.channel"] == "email"
    rendered = json.dumps([json.loads(s.to_json()) for s in finished])
    assert EMAIL not in rendered

    entered = counts(reader, metrics.JOURNEYS_ENTERED)
    assert entered[frozenset({("journey", "quick"), ("admitted", "true")})] == 1
    ended = counts(reader, metrics.JOURNEYS_FINISHED)
    assert ended[frozenset({("journey", "quick"), ("outcome", "completed")})] == 1
    decisions = counts(reader, metrics.DECISIONS)
    sends_allowed = frozenset(
        {("stage", "send"), ("action", "send"), ("rule", "allowed"), ("channel", "email")}
    )
    assert decisions[sends_allowed] == 2
    outcomes = counts(reader, metrics.OUTCOMES)
    sent = frozenset(
        {("channel", "email"), ("provider", "smtp"), ("outcome", "sent"), ("purpose", "service")}
    )
    assert outcomes[sent] == 2
    lag = counts(reader, metrics.LAG)
    assert lag[frozenset({("channel", "email"), ("purpose", "service")})] == 2


async def test_log_lines_name_the_run_and_the_contact_and_no_address(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    contact_key: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging(pretty=False)
    try:
        async with running_stack(
            time_skipping, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=QUICK_JOURNEYS
        ) as stack:
            await stack.client.identify(contact_key, jurisdiction="US", emails=[EMAIL])
            await stack.client.track(contact_key, "ping")
            await stack.result("quick", contact_key)
    finally:
        structlog.reset_defaults()
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in (out + err).splitlines() if line.startswith("{")]
    sent = [line for line in lines if line.get("event") == "sent"]
    assert len(sent) == 2
    for line in sent:
        assert line["contact_key"] == contact_key
        assert line["workflow_id"] == f"journey/quick/{contact_key}"
        assert line["run_id"]
        assert line["activity"] == "send_email"
        assert line["attempt"] == 1
    assert EMAIL not in out + err


def test_the_trace_exporter_is_chosen_by_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert telemetry._trace_exporters() == []

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    (exporter,) = telemetry._trace_exporters()
    assert isinstance(exporter, OTLPSpanExporter)

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert [type(e) for e in telemetry._trace_exporters()] == [
        ConsoleSpanExporter,
        OTLPSpanExporter,
    ]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry._trace_exporters() == []

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(TidingsError, match=r"'zipkin'.*use otlp, console or none"):
        telemetry._trace_exporters()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(TidingsError, match=r"'grpc'.*http/protobuf"):
        telemetry._trace_exporters()


def test_a_bad_metrics_address_names_the_variable_and_the_form() -> None:
    with pytest.raises(TidingsError, match=r"TIDINGS_METRICS_BIND.*host:port"):
        telemetry.parse_bind("9464")
    assert telemetry.parse_bind("0.0.0.0:9464") == ("0.0.0.0", 9464)


def test_addresses_quoted_by_an_error_are_masked_in_every_log_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging(pretty=False)
    try:
        structlog.get_logger("tidings.test").warning(
            "send failed", error="smtp: 550 5.1.1 <ada.l@example.co.uk>: unknown user"
        )
        logging.getLogger("temporalio.workflow").warning("step sms: invalid +44 7700 900123")
    finally:
        structlog.reset_defaults()
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in (out + err).splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["send failed", "step sms: invalid <phone>"]
    assert lines[0]["error"] == "smtp: 550 5.1.1 <<email>>: unknown user"
    assert "example.co.uk" not in out + err and "900123" not in out + err
