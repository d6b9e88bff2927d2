"""OpenTelemetry metrics of provider hand-overs: how long they take and how they end.

The delivery rows say what happened to each message; these say how the
providers behave right now, cheaply enough to alert on (a rising share of
`transient` errors from one provider, a p99 creeping up) without querying
the app database.

Instruments come from the global meter provider by default, so an
application that installs an SDK `MeterProvider` (with its exporter) gets
them without further wiring; instruments made before it did so forward to it
once it does. `use_meter_provider` points them at another provider: the
global one can be set only once per process, which tests and embedders
cannot rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opentelemetry import metrics

Outcome = Literal["sent", "deferred", "failed", "uncertain"]
"""How one hand-over ended: as the delivery row records it (deferred: retried later)."""
ErrorClass = Literal["transient", "permanent", "ambiguous"]
"""Which provider error ended it: retry, never retry, or may have been sent."""

METER_NAME = "tidings"
DURATION = "tidings.send.duration"
OUTCOMES = "tidings.send.outcomes"
DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)
"""From a local inbox write to a provider call that runs into its timeout (10 s for
the HTTP providers, 30 s for SMTP); OpenTelemetry's default buckets stop at 10 s."""


@dataclass(frozen=True)
class _Instruments:
    duration: metrics.Histogram
    outcomes: metrics.Counter


def _instruments(meter: metrics.Meter) -> _Instruments:
    return _Instruments(
        duration=meter.create_histogram(
            DURATION,
            unit="ms",
            description="Time a provider took to take (or refuse) one message.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS,
        ),
        outcomes=meter.create_counter(
            OUTCOMES,
            unit="{send}",
            description="Provider hand-overs by outcome and, for errors, error class.",
        ),
    )


meter = metrics.get_meter(METER_NAME)
"""The module's meter, from the global provider (a proxy until one is installed)."""
_current = _instruments(meter)


def use_meter_provider(provider: metrics.MeterProvider | None) -> None:
    """Record into `provider` from now on; None goes back to the global provider.

    Sends already recording finish with the instruments they started with.
    """
    global _current
    chosen = metrics.get_meter(METER_NAME, meter_provider=provider)
    _current = _instruments(chosen)


def record_send(
    channel: str,
    provider: str,
    outcome: Outcome,
    seconds: float,
    error_class: ErrorClass | None = None,
) -> None:
    """Record one hand-over: its duration (ms) and its outcome.

    `error_class` is left off the attributes when None (a success) rather
    than set to a placeholder, as OpenTelemetry's `error.type` is. Attribute
    values are few and fixed (no contact, address or message id), so series
    stay few.
    """
    attributes: dict[str, str] = {"channel": channel, "provider": provider, "outcome": outcome}
    instruments = _current
    instruments.duration.record(seconds * 1000, attributes)
    if error_class is not None:
        attributes["error_class"] = error_class
    instruments.outcomes.add(1, attributes)
