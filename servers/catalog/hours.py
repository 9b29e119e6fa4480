"""Opening hours: is a restaurant open at an instant? Pure, no I/O (zoneinfo only).

Hours are spans on ISO weekdays in the restaurant's local wall-clock time, in
minutes after local midnight; a span whose close is past 1440 runs into the next
day (``open 1080, close 1560`` is 18:00 to 02:00). A closure date cancels the
spans that *start* on that local date; the early-morning tail of the previous
evening's span still runs, as it belongs to the previous business day. Wall-clock
minutes make DST days behave as a customer reads the sign on the door.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MINUTES_PER_DAY", "Span", "is_open", "local_now", "span_problem", "zone"]

MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class Span:
    """Open from ``open_minute`` to ``close_minute`` (exclusive) on ISO ``weekday`` (1 = Mon)."""

    weekday: int
    open_minute: int
    close_minute: int


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ValueError for an unknown or malformed one."""
    if not name or name != name.strip():
        raise ValueError(f"not an IANA time zone: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not an IANA time zone: {name!r}") from None


def span_problem(span: Span) -> tuple[str, str] | None:
    """``(field, why)`` if the span is malformed, else None."""
    if not 1 <= span.weekday <= 7:
        return "weekday", "must be 1 (Monday) to 7 (Sunday)"
    if not 0 <= span.open_minute < MINUTES_PER_DAY:
        return "open_minute", "must be within [0, 1440)"
    if not span.open_minute < span.close_minute <= span.open_minute + MINUTES_PER_DAY:
        return "close_minute", "must be after open_minute and at most 24 hours later"
    return None


def local_now(now: dt.datetime, tz: str) -> tuple[dt.date, int]:
    """The local date and wall-clock minute of the aware instant ``now`` in ``tz``."""
    local = now.astimezone(zone(tz))
    return local.date(), local.hour * 60 + local.minute


def is_open(
    now: dt.datetime,
    tz: str,
    hours: Sequence[Span],
    closures: Collection[str] = (),
    *,
    paused: bool = False,
    local: tuple[dt.date, int] | None = None,
) -> bool:
    """Whether the restaurant takes orders at ``now`` (aware): hours, closures, pause switch.

    ``closures`` holds local dates as ``YYYY-MM-DD``. ``local`` may pass a
    precomputed :func:`local_now` (search evaluates many restaurants of one zone).
    """
    if paused:
        return False
    today, minute = local if local is not None else local_now(now, tz)
    weekday = today.isoweekday()
    yesterday_wd = 7 if weekday == 1 else weekday - 1
    today_closed: bool | None = None
    yesterday_closed: bool | None = None
    for s in hours:
        if s.weekday == weekday and s.open_minute <= minute < s.close_minute:
            if today_closed is None:
                today_closed = today.isoformat() in closures
            if not today_closed:
                return True
        elif s.weekday == yesterday_wd and minute + MINUTES_PER_DAY < s.close_minute:
            if yesterday_closed is None:
                yesterday_closed = (today - dt.timedelta(days=1)).isoformat() in closures
            if not yesterday_closed:
                return True
    return False
