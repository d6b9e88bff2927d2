"""Send windows in the contact's local time: is one open now, and when does it next open."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tidings.models.policy import SendWindow
from tidings.workflows.schedule import resolve_local, weekday_numbers


def is_open(window: SendWindow, moment: datetime, tz: str) -> bool:
    local = moment.astimezone(ZoneInfo(tz))
    days = weekday_numbers(window.weekdays)
    now = local.time().replace(tzinfo=None)
    if window.start < window.end:
        return (days is None or local.weekday() in days) and window.start <= now < window.end
    # An overnight window (22:00-06:00) belongs to the day it starts on.
    if now >= window.start:
        return days is None or local.weekday() in days
    if now < window.end:
        return days is None or (local.weekday() - 1) % 7 in days
    return False


def next_start(window: SendWindow, moment: datetime, tz: str) -> datetime:
    """The first time after `moment` that the window opens."""
    days = weekday_numbers(window.weekdays)
    today = moment.astimezone(ZoneInfo(tz)).date()
    for offset in range(0, 9):
        day = today + timedelta(days=offset)
        if days is not None and day.weekday() not in days:
            continue
        start = resolve_local(day, window.start, tz)
        if start > moment:
            return start
    raise ValueError(f"window {window.label()} never opens")


def next_open(windows: list[SendWindow], moment: datetime, tz: str) -> datetime:
    """The first moment from `moment` on at which every window is open."""
    candidate = moment
    for _ in range(64):
        closed = [w for w in windows if not is_open(w, candidate, tz)]
        if not closed:
            return candidate
        candidate = max(next_start(w, candidate, tz) for w in closed)
    raise ValueError(
        "these send windows are never open together: " + ", ".join(w.label() for w in windows)
    )
