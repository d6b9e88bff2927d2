"""Where traces and metrics go: OpenTelemetry set up from the standard variables, and
the worker's Prometheus endpoint.

Traces. temporalio's `TracingInterceptor` carries one trace from `track()`
through the journey workflow to the send activity, where tidings adds a span
around the provider call. The exporter is chosen the standard way:
`OTEL_TRACES_EXPORTER` = `otlp`, `console` or `none` (comma-separated for
several); unset, it is `otlp` when an OTLP endpoint is configured
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT`) and `none` otherwise,
so a process nobody asked to trace pays nothing. The OTLP exporter reads its
own `OTEL_EXPORTER_OTLP_*` variables; `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` name the process.

Metrics. tidings' instruments (`activities/metrics.py`) use the OpenTelemetry
API. A worker given a metrics address serves them on `/metrics` in the
Prometheus format, and the Temporal SDK's runtime metrics (task latencies,
slots, polls, schedule-to-start) beside them: the SDK hands its updates over
through a `MetricBuffer`, and they are recorded into the same meter provider.
One endpoint to scrape, one naming scheme.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from prometheus_client import CollectorRegistry, start_http_server
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetric,
    MetricBuffer,
    Runtime,
    TelemetryConfig,
)

from tidings.activities.metrics import use_meter_provider
from tidings.errors import TidingsError

log = structlog.get_logger(__name__)

SERVICE_NAME = "tidings"
SDK_BUFFER_SIZE = 20_000
"""SDK metric updates held between drains; the core drops updates beyond it."""
DRAIN_SECONDS = 1.0


# Traces


def _trace_exporters() -> list[SpanExporter]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            raise TidingsError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which tidings does not ship; "
                "use otlp, console or none"
            )
    return exporters


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise TidingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL is {protocol!r}; tidings ships the http/protobuf "
            "exporter: set it to http/protobuf and point the endpoint at the collector's "
            "HTTP port (4318)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


_tracing_configured = False
_provider: TracerProvider | None = None
"""Where tidings' spans go; None: nowhere (no exporter configured)."""


def configure_tracing() -> None:
    """Install a tracer provider as the OTEL_* variables say, once per process.

    A provider the embedding application installed itself is used as it is.
    """
    global _tracing_configured, _provider
    if _tracing_configured:
        return
    _tracing_configured = True
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        _provider = _provider or installed
        return
    exporters = _trace_exporters()
    if not exporters:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = _provider or provider


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Send tidings' spans to `provider` (clients connected from now on): the global
    provider can be set only once per process, which tests and embedders cannot rely on."""
    global _provider
    _provider = provider


def tracer(name: str) -> trace.Tracer:
    """A tracer for tidings' own spans (a no-op one while nothing is exported)."""
    configure_tracing()
    return trace.get_tracer(name, tracer_provider=_provider or trace.NoOpTracerProvider())


def tracing_interceptors() -> list[Interceptor]:
    """Temporal's tracing interceptor when this process exports traces, else none
    (a client's interceptors reach the workers built on it)."""
    configure_tracing()
    if _provider is None:
        return []
    return [TracingInterceptor(_provider.get_tracer("temporalio"))]


# Metrics


@dataclass
class _SdkMetricsBridge:
    """Records the Temporal SDK's buffered metric updates into an OpenTelemetry meter."""

    buffer: MetricBuffer
    meter: metrics.Meter

    def __post_init__(self) -> None:
        self._instruments: dict[int, Callable[[Any, dict[str, Any]], None]] = {}

    def drain(self) -> int:
        updates = self.buffer.retrieve_updates()
        for update in updates:
            record = self._instruments.get(id(update.metric))
            if record is None:
                record = self._instrument(update.metric)
                self._instruments[id(update.metric)] = record
            record(update.value, dict(update.attributes))
        return len(updates)

    def _instrument(self, metric: BufferedMetric) -> Callable[[Any, dict[str, Any]], None]:
        name, unit, description = metric.name, metric.unit or "", metric.description or ""
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            return self.meter.create_counter(name, unit=unit, description=description).add
        if metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            return self.meter.create_histogram(name, unit=unit, description=description).record
        return self.meter.create_gauge(name, unit=unit, description=description).set


@dataclass(frozen=True)
class MetricsEndpoint:
    """A running `/metrics`: connect the worker's client with `runtime`."""

    runtime: Runtime
    host: str
    port: int
    drain: Callable[[], int]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise TidingsError(
            f"TIDINGS_METRICS_BIND is {bind!r}; give host:port, e.g. 0.0.0.0:9464 "
            "(port 0 picks a free one), or leave it empty for no endpoint"
        )
    return host, int(port)


@contextlib.asynccontextmanager
async def metrics_endpoint(bind: str) -> AsyncIterator[MetricsEndpoint]:
    """Serve tidings' metrics and the SDK's on `bind` (host:port) while the block runs."""
    host, port = parse_bind(bind)
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": SERVICE_NAME})
    )
    buffer = MetricBuffer(SDK_BUFFER_SIZE)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    bridge = _SdkMetricsBridge(buffer, provider.get_meter("temporalio"))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        provider.shutdown()
        raise TidingsError(
            f"cannot serve metrics on {bind}: {err}; free the port or set TIDINGS_METRICS_BIND"
        ) from err

    async def keep_draining() -> None:
        while True:
            await asyncio.sleep(DRAIN_SECONDS)
            bridge.drain()

    draining = asyncio.create_task(keep_draining())
    use_meter_provider(provider)
    endpoint = MetricsEndpoint(
        runtime=runtime, host=host, port=int(server.server_port), drain=bridge.drain
    )
    log.info("metrics endpoint", url=endpoint.url)
    try:
        yield endpoint
    finally:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        use_meter_provider(None)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        provider.shutdown()


@contextlib.asynccontextmanager
async def worker_metrics(bind: str) -> AsyncIterator[Runtime | None]:
    """The runtime a worker's client should use: one exporting to `bind`, or the
    SDK's default (no metrics) when `bind` is empty."""
    if not bind:
        yield None
        return
    async with metrics_endpoint(bind) as endpoint:
        yield endpoint.runtime
