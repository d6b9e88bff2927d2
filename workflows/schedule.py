"""Pure calendar math in a contact's time zone; safe to run in workflow code.

Time zones are passed by IANA name and built here, outside the workflow
sandbox's proxies. Wall-clock times are resolved with zoneinfo: a time that does not exist on a
spring-forward day (02:30) falls after the gap (03:30), and an ambiguous one
on a fall-back day means its first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import JsonValue

DEFAULT_TIME_OF_DAY = time(9, 0)


def resolve_local(day: date, at: time, tz: str) -> datetime:
    """The UTC instant at which clocks in `tz` show `at` on `day`."""
    return datetime.combine(day, at).replace(tzinfo=ZoneInfo(tz), fold=0).astimezone(UTC)


def next_time_of_day(
    now: datetime, tz: str, at: time, weekdays: frozenset[int] | None = None
) -> datetime:
    """The first moment after `now` when the local clock shows `at` on an allowed weekday."""
    today = now.astimezone(ZoneInfo(tz)).date()
    for offset in range(0, 9):
        day = today + timedelta(days=offset)
        if weekdays is not None and day.weekday() not in weekdays:
            continue
        moment = resolve_local(day, at, tz)
        if moment > now:
            return moment
    raise ValueError("no allowed weekday")  # unreachable with a non-empty weekday set


def trait_moment(
    value: JsonValue,
    *,
    offset: timedelta,
    at: time | None,
    tz: str,
    weekdays: frozenset[int] | None = None,
) -> datetime | None:
    """The moment a date trait names, moved by a calendar offset; None if not a date.

    A date (`2026-12-31`) means `at` (09:00 unless given) local time that day;
    a date-time keeps its own time unless `at` is given. The offset is applied
    to local wall-clock time, so "-30d at 09:00" is 09:00 even across DST.
    """
    local = _local_date_time(value, at, tz) if isinstance(value, str) else None
    if local is None:
        return None
    local += offset
    if weekdays is not None:
        while local.weekday() not in weekdays:
            local += timedelta(days=1)
    return resolve_local(local.date(), local.time(), tz)


def _local_date_time(value: str, at: time | None, tz: str) -> datetime | None:
    """A date (2026-12-31 or 20261231) at `at`, or a date-time in `tz`'s wall clock.

    A date-time with an offset is converted to the contact's wall clock first:
    midnight UTC is the evening before in the Americas. Store plain dates for
    days that mean the same everywhere.
    """
    try:
        return datetime.combine(date.fromisoformat(value), at or DEFAULT_TIME_OF_DAY)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return datetime.combine(parsed.date(), at) if at else parsed


def local_label(moment: datetime, tz: str) -> str:
    """How a moment reads to an operator: `Tue 2026-11-24 09:00 America/Chicago`."""
    return f"{moment.astimezone(ZoneInfo(tz)):%a %Y-%m-%d %H:%M} {tz}"


def weekday_numbers(names: Sequence[str] | None) -> frozenset[int] | None:
    order = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return None if names is None else frozenset(order.index(name) for name in names)
