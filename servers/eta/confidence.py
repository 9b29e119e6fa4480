"""How sure an estimate is: an 80% interval from the parts' quantiles, and a confidence.

Each part (prep, pickup, delivery) comes with its 10th, 50th and 90th percentile:
from the quantile models, or for the routing-only baseline from a spread that
grows with the part. The parts' spreads add in quadrature (independent errors),
separately below and above the median, which gives the total's 80% interval. The
confidence is the probability that the arrival lands within ``tolerance_min``
(the design's 5 minutes) of the estimate under a normal error of that spread,
times the design's heuristics: no driver assigned yet (×0.8), peak hour (×0.9),
a restaurant with little history (under 100 orders, ×0.85).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "Part", "combine", "confidence"]

#: z of the 90th percentile: (q90 - q10) spans 2 × 1.2816 standard deviations.
_Z90 = 1.2815515655446004
TOLERANCE_MIN = 5.0


@dataclass(frozen=True, slots=True)
class Part:
    """One part of an estimate, minutes: its median and 10th/90th percentiles."""

    median: float
    low: float
    high: float

    @staticmethod
    def exact(value: float) -> Part:
        return Part(value, value, value)

    @staticmethod
    def spread(value: float, sigma: float) -> Part:
        """A symmetric part with standard deviation ``sigma``, kept at zero or above."""
        return Part(value, max(0.0, value - _Z90 * sigma), value + _Z90 * sigma)


@dataclass(frozen=True, slots=True)
class Interval:
    total: float
    lower: float
    upper: float

    @property
    def sigma(self) -> float:
        """The standard deviation a normal error with this 80% interval would have."""
        return max(1e-6, (self.upper - self.lower) / (2 * _Z90))


def combine(parts: Sequence[Part]) -> Interval:
    """The total of ``parts`` and its 80% interval (spreads add in quadrature)."""
    total = sum(p.median for p in parts)
    below = math.sqrt(sum(max(0.0, p.median - p.low) ** 2 for p in parts))
    above = math.sqrt(sum(max(0.0, p.high - p.median) ** 2 for p in parts))
    return Interval(total, max(0.0, total - below), total + above)


def confidence(
    interval: Interval,
    *,
    driver_assigned: bool,
    peak: bool,
    restaurant_orders: int | None,
    tolerance_min: float = TOLERANCE_MIN,
) -> float:
    """Probability the arrival is within ``tolerance_min`` of the estimate, with the heuristics.

    ``restaurant_orders`` None means not known (no history consulted): no penalty.
    """
    p = math.erf(tolerance_min / (interval.sigma * math.sqrt(2.0)))
    if not driver_assigned:
        p *= 0.8
    if peak:
        p *= 0.9
    if restaurant_orders is not None and restaurant_orders < 100:
        p *= 0.85
    return min(0.99, max(0.01, p))
