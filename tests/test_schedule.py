"""Calendar math in the contact's time zone, at the edges: DST gaps, folds, weekdays."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from tidings.workflows.schedule import next_time_of_day, trait_moment, weekday_numbers

NY = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2027, 1, 4, 13, 59), utc(2027, 1, 4, 14, 0)),  # 08:59 EST: today at 09:00
        (utc(2027, 1, 4, 14, 0), utc(2027, 1, 5, 14, 0)),  # 09:00 sharp: tomorrow
        (utc(2027, 3, 13, 15, 0), utc(2027, 3, 14, 13, 0)),  # over spring-forward: 09:00 EDT
        (utc(2027, 11, 6, 14, 0), utc(2027, 11, 7, 14, 0)),  # over fall-back: 09:00 EST
    ],
)
def test_next_nine_o_clock_in_new_york(now: datetime, expected: datetime) -> None:
    assert next_time_of_day(now, NY, time(9)) == expected


def test_a_time_in_the_spring_forward_gap_falls_after_it() -> None:
    # 02:30 does not exist on 2027-03-14 in New York; it means 03:30 EDT.
    assert next_time_of_day(utc(2027, 3, 14, 5, 0), NY, time(2, 30)) == utc(2027, 3, 14, 7, 30)


def test_an_ambiguous_time_on_fall_back_day_is_its_first_occurrence() -> None:
    # 01:30 happens twice on 2027-11-07; the first is EDT (UTC-4).
    assert next_time_of_day(utc(2027, 11, 7, 4, 0), NY, time(1, 30)) == utc(2027, 11, 7, 5, 30)


def test_weekdays_skip_to_monday() -> None:
    friday_ten = utc(2027, 1, 8, 15, 0)  # Friday 10:00 EST
    workdays = weekday_numbers(["mon", "tue", "wed", "thu", "fri"])
    assert next_time_of_day(friday_ten, NY, time(9), workdays) == utc(2027, 1, 11, 14, 0)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(days=-30), utc(2027, 2, 18, 14, 0)),
        (timedelta(days=-7), utc(2027, 3, 13, 14, 0)),  # the day before DST starts: EST
        (timedelta(days=-1), utc(2027, 3, 19, 13, 0)),  # after: EDT
        (timedelta(0), utc(2027, 3, 20, 13, 0)),
    ],
)
def test_a_date_trait_minus_an_offset_is_nine_local_that_day(
    offset: timedelta, expected: datetime
) -> None:
    moment = trait_moment("2027-03-20", offset=offset, at=None, tz=NY)
    assert moment == expected


def test_a_compact_date_is_a_date() -> None:
    moment = trait_moment("20270320", offset=timedelta(days=-1), at=None, tz=NY)
    assert moment == utc(2027, 3, 19, 13, 0)


def test_a_date_time_trait_keeps_its_time_unless_at_is_given() -> None:
    value = "2027-06-01T17:45:00+00:00"
    assert trait_moment(value, offset=timedelta(hours=-1), at=None, tz=NY) == utc(
        2027, 6, 1, 16, 45
    )
    assert trait_moment(value, offset=timedelta(0), at=time(8), tz=NY) == utc(2027, 6, 1, 12, 0)


def test_a_trait_moment_moves_to_an_allowed_weekday() -> None:
    sunday = "2027-01-10"
    workdays = weekday_numbers(["mon", "tue", "wed", "thu", "fri"])
    moment = trait_moment(sunday, offset=timedelta(0), at=None, tz=NY, weekdays=workdays)
    assert moment == utc(2027, 1, 11, 14, 0)


@pytest.mark.parametrize("value", [None, 20270320, "soon", "2027-13-01", ["2027-03-20"]])
def test_a_trait_that_is_not_a_date_gives_no_moment(value: object) -> None:
    assert trait_moment(value, offset=timedelta(0), at=None, tz=NY) is None  # type: ignore[arg-type]
