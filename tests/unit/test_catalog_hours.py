"""Opening hours: overnight spans, closures, time zones and DST."""

from __future__ import annotations

import datetime as dt

import pytest

from servers.catalog.hours import Span, is_open, span_problem, zone

LA = "America/Los_Angeles"


def at(tz: str, y: int, m: int, d: int, hh: int, mm: int = 0) -> dt.datetime:
    """An aware instant given as local wall-clock time in ``tz``."""
    return dt.datetime(y, m, d, hh, mm, tzinfo=zone(tz)).astimezone(dt.UTC)


# 2026-03-06 is a Friday (ISO 5); 2026-03-07 a Saturday.
LUNCH_AND_LATE = (Span(5, 11 * 60, 14 * 60), Span(5, 18 * 60, 26 * 60))  # Fri 11-14, Fri 18-02


@pytest.mark.parametrize(
    ("hh", "mm", "day", "expected"),
    [
        (10, 59, 6, False),
        (11, 0, 6, True),
        (13, 59, 6, True),
        (14, 0, 6, False),  # close is exclusive
        (23, 30, 6, True),
        (1, 59, 7, True),  # Saturday early morning: Friday's span runs past midnight
        (2, 0, 7, False),
        (12, 0, 7, False),  # Saturday noon: no Saturday hours
    ],
)
def test_overnight_spans_run_into_the_next_day(hh: int, mm: int, day: int, expected: bool) -> None:
    assert is_open(at(LA, 2026, 3, day, hh, mm), LA, LUNCH_AND_LATE) is expected


def test_a_sunday_span_past_midnight_runs_into_monday() -> None:
    hours = (Span(7, 20 * 60, 25 * 60),)  # Sunday 20:00 - Monday 01:00
    assert is_open(at(LA, 2026, 3, 9, 0, 30), LA, hours)  # Monday 00:30
    assert not is_open(at(LA, 2026, 3, 9, 1, 0), LA, hours)


def test_a_closure_cancels_the_spans_that_start_that_day_but_not_last_nights_tail() -> None:
    closed_friday = ["2026-03-06"]
    assert not is_open(at(LA, 2026, 3, 6, 12), LA, LUNCH_AND_LATE, closed_friday)
    assert not is_open(at(LA, 2026, 3, 6, 23), LA, LUNCH_AND_LATE, closed_friday)
    assert not is_open(at(LA, 2026, 3, 7, 1), LA, LUNCH_AND_LATE, closed_friday)
    closed_saturday = ["2026-03-07"]
    assert is_open(at(LA, 2026, 3, 7, 1), LA, LUNCH_AND_LATE, closed_saturday)


def test_the_pause_switch_closes_whatever_the_hours() -> None:
    assert not is_open(at(LA, 2026, 3, 6, 12), LA, LUNCH_AND_LATE, paused=True)


def test_hours_are_read_in_the_restaurants_own_time_zone() -> None:
    hours = tuple(Span(d, 9 * 60, 17 * 60) for d in range(1, 8))
    instant = dt.datetime(2026, 3, 6, 20, 0, tzinfo=dt.UTC)  # 12:00 in LA, 05:00 in Tokyo
    assert is_open(instant, LA, hours)
    assert not is_open(instant, "Asia/Tokyo", hours)
    assert is_open(instant, "Europe/London", tuple(Span(5, 19 * 60, 21 * 60) for _ in (1,)))


def test_wall_clock_hours_hold_across_the_dst_change() -> None:
    hours = tuple(Span(d, 9 * 60, 10 * 60) for d in range(1, 8))
    # 2026-03-08: LA springs forward; 09:30 local is 16:30 UTC (it was 17:30 UTC the day before).
    assert is_open(dt.datetime(2026, 3, 8, 16, 30, tzinfo=dt.UTC), LA, hours)
    assert is_open(dt.datetime(2026, 3, 7, 17, 30, tzinfo=dt.UTC), LA, hours)
    assert not is_open(dt.datetime(2026, 3, 8, 17, 30, tzinfo=dt.UTC), LA, hours)


def test_no_hours_means_closed() -> None:
    assert not is_open(at(LA, 2026, 3, 6, 12), LA, ())


@pytest.mark.parametrize(
    ("span", "field"),
    [
        (Span(0, 60, 120), "weekday"),
        (Span(8, 60, 120), "weekday"),
        (Span(1, 1440, 1500), "open_minute"),
        (Span(1, 600, 600), "close_minute"),
        (Span(1, 600, 2041), "close_minute"),
    ],
)
def test_malformed_spans_name_their_field(span: Span, field: str) -> None:
    problem = span_problem(span)
    assert problem is not None and problem[0] == field
    assert span_problem(Span(1, 600, 2040)) is None


def test_unknown_time_zones_are_refused() -> None:
    for bad in ("Mars/Olympus_Mons", "", "../etc/passwd", " UTC"):
        with pytest.raises(ValueError):
            zone(bad)
