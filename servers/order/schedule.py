"""Scheduled orders: is the restaurant open at a future instant? Pure (zoneinfo only).

Hours are the Catalog's: spans on ISO weekdays in the restaurant's wall-clock
minutes, a close past 1440 running into the next day; a closure date cancels the
spans starting that day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from zoneinfo import ZoneInfo

__all__ = ["open_at"]


def open_at(
    when: dt.datetime,
    time_zone: str,
    hours: Sequence[tuple[int, int, int]],
    closures: Collection[str] = (),
) -> bool:
    """True if ``when`` falls in one of ``hours`` (weekday, open, close) in ``time_zone``."""
    try:
        local = when.astimezone(ZoneInfo(time_zone or "UTC"))
    except (ValueError, KeyError):
        return False
    minute = local.hour * 60 + local.minute
    for back in (0, 1):  # today's spans, and yesterday's that run past midnight
        day = local.date() - dt.timedelta(days=back)
        if day.isoformat() in closures:
            continue
        m = minute + back * 1440
        for weekday, open_m, close_m in hours:
            if weekday == day.isoweekday() and open_m <= m < close_m:
                return True
    return False
