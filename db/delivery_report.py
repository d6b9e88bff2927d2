"""Figures per channel and provider over a time window: what `tidings report deliveries` shows.

Which deliveries belong to the window: those whose attempt happened in
`since <= t < now`, where `t` is `counted_at` (when the send was claimed) for
rows that were handed to a provider, and `updated_at` (when the row was
written) for rows that never were (skipped, or failed before sending). The
window is half-open so consecutive reports never count a delivery twice.

Event figures (delivered, bounced, complained) follow the deliveries, not the
events' own times: a bounce that arrives two days after a message was sent
still counts against the window the message was sent in. Only events received
before `now` count, so a report about the past can be repeated.

Hand-over latency is `sent_at - counted_at` of sent deliveries. `counted_at`
is the policy's clock for the attempt, which is the attempt's start on the
Temporal server's clock, so the figure covers compose, the policy check, the
claim, the provider call and recording the result, plus any skew between the
server's clock and the worker's (which writes `sent_at`).

Percentiles are computed in Python over the rows, not in SQL: SQLite has no
percentile function and PostgreSQL's `percentile_disc` would make the query
dialect-specific. Keep the window proportionate (days, not years): every sent
row's two timestamps are read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, distinct, func, or_
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session, col, select

from tidings.db.deliveries import CLAIMED, DEFERRED, FAILED, SENDING, SENT, SKIPPED, UNCERTAIN
from tidings.errors import InputError
from tidings.models.tables import Delivery, DeliveryEventRecord

BOUNCE_EVENTS = ("bounced", "failed")
"""Provider events that mean a handed-over message did not arrive."""

Key = tuple[str, str | None]


@dataclass(frozen=True)
class ProviderFigures:
    """One line of the report: a channel with one provider.

    `provider` is None where the delivery row names none: skipped deliveries,
    and failed or uncertain ones (`deliveries.finish` records the provider
    only with `sent`, so a provider's failures are counted here, not under
    its name).
    """

    channel: str
    provider: str | None
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    pending: int = 0
    """Still sending, or deferred for a retry: the outcome is not known yet."""
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    """Hand-over latency of sent messages: `sent_at - counted_at`, nearest rank."""
    delivered: int = 0
    """Sent messages with at least one `delivered` event."""
    bounced: int = 0
    """Sent messages with at least one `bounced` or `failed` event."""
    complaints: int = 0
    """Sent messages with at least one `complained` event (a spam report)."""

    @property
    def delivery_rate(self) -> float | None:
        """delivered / sent; None when nothing was sent (no rate, rather than 0%)."""
        return self.delivered / self.sent if self.sent else None

    @property
    def bounce_rate(self) -> float | None:
        """bounced / sent; None when nothing was sent."""
        return self.bounced / self.sent if self.sent else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with the rates."""
        values = asdict(self)
        values["delivery_rate"] = self.delivery_rate
        values["bounce_rate"] = self.bounce_rate
        return values


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least p% of values <= it.

    Always one of the values (never interpolated), so a p99 of 20 sends is
    the slowest send, not a value no send took. None for no values.
    """
    if not 0 <= p <= 100:
        raise InputError(f"a percentile is between 0 and 100, not {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def in_window(since: datetime, now: datetime) -> ColumnElement[bool]:
    """Deliveries attempted in `since <= t < now` (see the module docstring)."""
    counted, updated = col(Delivery.counted_at), col(Delivery.updated_at)
    return or_(
        and_(counted.is_not(None), counted >= since, counted < now),
        and_(counted.is_(None), updated >= since, updated < now),
    )


def report(session: Session, since: datetime, now: datetime) -> list[ProviderFigures]:
    """One line per (channel, provider) with a delivery in the window, sorted by both."""
    if since >= now:
        raise InputError(f"the report's window is empty: {since:%Y-%m-%d %H:%M} is not before now")
    window = in_window(since, now)
    statuses: dict[Key, dict[str, int]] = defaultdict(dict)
    for channel, provider, status, count in session.exec(
        select(Delivery.channel, Delivery.provider, Delivery.status, func.count())
        .where(window)
        .group_by(col(Delivery.channel), col(Delivery.provider), col(Delivery.status))
    ).all():
        statuses[(channel, provider)][status] = count

    latencies: dict[Key, list[float]] = defaultdict(list)
    for channel, provider, counted_at, sent_at in session.exec(
        select(Delivery.channel, Delivery.provider, Delivery.counted_at, Delivery.sent_at).where(
            window,
            col(Delivery.status) == SENT,
            col(Delivery.counted_at).is_not(None),
            col(Delivery.sent_at).is_not(None),
        )
    ).all():
        assert counted_at is not None and sent_at is not None
        # Not clamped at zero: a negative figure shows the workers' clocks
        # disagree with the Temporal server's (counted_at is the server's).
        latencies[(channel, provider)].append((sent_at - counted_at).total_seconds() * 1000)

    events: dict[Key, dict[str, int]] = defaultdict(dict)
    for channel, provider, status, count in session.exec(
        select(
            Delivery.channel,
            Delivery.provider,
            DeliveryEventRecord.status,
            func.count(distinct(col(Delivery.id))),
        )
        .join(DeliveryEventRecord, col(DeliveryEventRecord.delivery_id) == col(Delivery.id))
        .where(
            window,
            col(Delivery.status) == SENT,
            col(DeliveryEventRecord.at) < now,
            col(DeliveryEventRecord.status).in_(("delivered", "complained")),
        )
        .group_by(col(Delivery.channel), col(Delivery.provider), col(DeliveryEventRecord.status))
    ).all():
        events[(channel, provider)][status] = count
    # Counted apart: a message with both a `bounced` and a `failed` event is one bounce.
    for channel, provider, count in session.exec(
        select(Delivery.channel, Delivery.provider, func.count(distinct(col(Delivery.id))))
        .join(DeliveryEventRecord, col(DeliveryEventRecord.delivery_id) == col(Delivery.id))
        .where(
            window,
            col(Delivery.status) == SENT,
            col(DeliveryEventRecord.at) < now,
            col(DeliveryEventRecord.status).in_(BOUNCE_EVENTS),
        )
        .group_by(col(Delivery.channel), col(Delivery.provider))
    ).all():
        events[(channel, provider)]["bounced"] = count

    lines = []
    for key in sorted(statuses, key=lambda k: (k[0], k[1] is None, k[1] or "")):
        counts, times, seen = statuses[key], latencies[key], events[key]
        lines.append(
            ProviderFigures(
                channel=key[0],
                provider=key[1],
                sent=counts.get(SENT, 0),
                failed=counts.get(FAILED, 0),
                uncertain=counts.get(UNCERTAIN, 0),
                skipped=counts.get(SKIPPED, 0),
                pending=sum(counts.get(status, 0) for status in (CLAIMED, SENDING, DEFERRED)),
                p50_ms=percentile(times, 50),
                p95_ms=percentile(times, 95),
                p99_ms=percentile(times, 99),
                delivered=seen.get("delivered", 0),
                bounced=seen.get("bounced", 0),
                complaints=seen.get("complained", 0),
            )
        )
    return lines
