"""Popularity from real orders: a decayed count of recent orders. Pure.

Each order adds ``exp((t - EPOCH) / TAU)`` to its restaurant's sum, ``t`` its time; at
any instant ``now`` the decayed count is the sum times ``exp(-(now - EPOCH) / TAU)`` —
the same factor for every restaurant, so comparing sums compares decayed counts, and a
sum never needs rewriting as time passes. The sum is kept as ``ln(1 + sum)``
(:func:`add_order`, numerically safe for centuries), 0 for a restaurant never ordered
from. :func:`decayed_count` reads it back as orders "worth" at ``now``.
"""

from __future__ import annotations

import datetime as dt
import math

__all__ = ["EPOCH", "TAU_S", "WINDOW", "add_order", "decayed_count"]

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
#: An order counts e times less after a week (half after ~4.9 days).
TAU_S = 7 * 86400.0
#: order_count: orders placed in this window.
WINDOW = dt.timedelta(days=30)


def _x(t: dt.datetime) -> float:
    return (t - EPOCH).total_seconds() / TAU_S


def add_order(popularity: float, at: dt.datetime) -> float:
    """``popularity`` with one more order at ``at``: ``ln(e^p + e^x)``, computed stably."""
    x = _x(at)
    hi, lo = max(popularity, x), min(popularity, x)
    return hi + math.log1p(math.exp(lo - hi))


def decayed_count(popularity: float, now: dt.datetime) -> float:
    """The decayed number of orders at ``now`` (each worth 1 when placed)."""
    if popularity <= 0.0:
        return 0.0
    # ln(1 + S) -> S, scaled to now; via logs, as both terms can be huge.
    s_log = popularity + math.log(-math.expm1(-popularity))
    return math.exp(s_log - _x(now))
