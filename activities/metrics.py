"""tidings' own OpenTelemetry metrics: sends, policy decisions, journeys.

The database rows say what happened to each message and contact; these say
how things behave right now, cheaply enough to alert on (a rising share of
`transient` errors from one provider, a p99 creeping up, a rule suddenly
skipping every send) without querying the app database. Attribute values
are few and fixed (never a contact, address or message id), so series stay
few. They are recorded in activities, which run once per attempt: workflow
code is replayed, and a counter there would count every replay again.

Instruments come from the global meter provider by default, so a process
that installs an SDK `MeterProvider` (`tidings.telemetry` does, for the
worker's Prometheus endpoint) gets them without further wiring; instruments
made before it did so forward to it once it does. `use_meter_provider`
points them at another provider: the global one can be set only once per
process, which tests and embedders cannot rely on.
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
LAG = "tidings.send.lag"
DECISIONS = "tidings.policy.decisions"
JOURNEYS_ENTERED = "tidings.journeys.entered"
JOURNEYS_FINISHED = "tidings.journeys.finished"
PROVIDER_REQUESTS = "tidings.provider.request_messages"
REQUEST_MESSAGES_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000)
"""Messages per vendor API request: 1 for a single send, up to SendGrid's 1,000
personalizations for a batch."""
DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)
"""From a local inbox write to a provider call that runs into its timeout (10 s for
the HTTP providers, 30 s for SMTP); OpenTelemetry's default buckets stop at 10 s."""
LAG_BUCKETS_S = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3_600, 4 * 3_600, 24 * 3_600)
"""From a send being due to the provider taking it: a queue under a rate limit, a
provider retried with backoff, a worker that was down."""


@dataclass(frozen=True)
class _Instruments:
    duration: metrics.Histogram
    outcomes: metrics.Counter
    lag: metrics.Histogram
    decisions: metrics.Counter
    entered: metrics.Counter
    finished: metrics.Counter
    request_messages: metrics.Histogram


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
            description="Provider hand-overs by channel, purpose, outcome and error class.",
        ),
        lag=meter.create_histogram(
            LAG,
            unit="s",
            description="Delivery latency: from the send being due to the provider taking it.",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS_S,
        ),
        decisions=meter.create_counter(
            DECISIONS,
            unit="{decision}",
            description="Contact-policy decisions by stage (plan, send), action and rule kind.",
        ),
        entered=meter.create_counter(
            JOURNEYS_ENTERED,
            unit="{journey}",
            description="Journey entries by journey and whether the contact was admitted.",
        ),
        finished=meter.create_counter(
            JOURNEYS_FINISHED,
            unit="{journey}",
            description="Journey entries ended, by journey and outcome (completed, converted, "
            "exited, missing_data).",
        ),
        request_messages=meter.create_histogram(
            PROVIDER_REQUESTS,
            unit="{message}",
            description="Messages per API request to a provider that batches (SendGrid): "
            "its count is requests made, its sum messages carried.",
            explicit_bucket_boundaries_advisory=REQUEST_MESSAGES_BUCKETS,
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
    *,
    purpose: str = "",
) -> None:
    """Record one hand-over: its duration (ms) and its outcome.

    `error_class` is left off the attributes when None (a success) rather
    than set to a placeholder, as OpenTelemetry's `error.type` is.
    """
    attributes: dict[str, str] = {"channel": channel, "provider": provider, "outcome": outcome}
    instruments = _current
    instruments.duration.record(seconds * 1000, attributes)
    if purpose:
        attributes["purpose"] = purpose
    if error_class is not None:
        attributes["error_class"] = error_class
    instruments.outcomes.add(1, attributes)


def record_lag(channel: str, purpose: str, seconds: float) -> None:
    """A message the provider took, `seconds` after it was due."""
    _current.lag.record(max(seconds, 0.0), {"channel": channel, "purpose": purpose})


def record_decision(stage: str, action: str, kind: str, channel: str) -> None:
    """One policy decision: `kind` names the rule family (consent, quiet_hours, ...);
    a rule's own text can carry numbers and names, too many series for a metric."""
    _current.decisions.add(1, {"stage": stage, "action": action, "rule": kind, "channel": channel})


def record_entry(journey: str, admitted: bool) -> None:
    _current.entered.add(1, {"journey": journey, "admitted": str(admitted).lower()})


def record_exit(journey: str, outcome: str) -> None:
    _current.finished.add(1, {"journey": journey, "outcome": outcome})


def record_provider_request(provider: str, messages: int) -> None:
    """One API request to `provider` that carried `messages` messages (a batch, or 1)."""
    _current.request_messages.record(messages, {"provider": provider})
