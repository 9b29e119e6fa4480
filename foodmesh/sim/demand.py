"""Who orders what, and when: the daily demand curve and the customers' choices. Pure.

The curve is a sum of bumps over the local hour (breakfast, lunch, dinner, late
night) on a floor, with its own shape on weekends (a later, wider brunch and a
bigger dinner), scaled so that its mean over a week is exactly 1: an
``--orders-per-hour`` of 600 is 600 an hour on average, about twice that at the
weekday dinner peak and a tenth of it at 4 am. Arrivals are a non-homogeneous
Poisson process drawn by thinning (Lewis and Shedler), so the rate can follow
the clock. A customer is drawn by appetite; a restaurant among those open now
and delivering to them, by popularity times a distance decay.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

from foodmesh.v1 import catalog_pb2

__all__ = [
    "Arrivals",
    "Bump",
    "Cart",
    "CartLine",
    "Chooser",
    "choose_cart",
    "curve",
    "demand_multiplier",
    "distance_m",
    "is_open",
    "next_arrival",
    "peak_multiplier",
    "restaurant_weight",
]

TIME_ZONE = "America/Los_Angeles"


@dataclass(frozen=True, slots=True)
class Bump:
    """A Gaussian bump of demand: centre and spread in hours, height relative to the floor."""

    hour: float
    sd_h: float
    height: float


_FLOOR = 0.06
_WEEKDAY = (Bump(8.25, 0.9, 0.18), Bump(12.25, 0.9, 1.0), Bump(18.75, 1.3, 1.25),
            Bump(22.75, 1.2, 0.22))  # fmt: skip
_WEEKEND = (Bump(10.0, 1.0, 0.25), Bump(12.75, 1.5, 1.05), Bump(19.0, 1.5, 1.45),
            Bump(23.25, 1.3, 0.35))  # fmt: skip


def _raw(weekday: int, hour: float) -> float:
    bumps = _WEEKEND if weekday >= 5 else _WEEKDAY
    total = _FLOOR
    for b in bumps:
        # the day wraps: a late-night bump at 23 h is felt at 0:30 as well
        for shift in (-24.0, 0.0, 24.0):
            d = (hour - b.hour + shift) / b.sd_h
            total += b.height * math.exp(-0.5 * d * d)
    return total


@lru_cache(maxsize=1)
def _week_mean() -> float:
    steps = 24 * 12  # five-minute resolution is plenty for smooth bumps
    return sum(_raw(d, h / 12) for d in range(7) for h in range(steps)) / (7 * steps)


def curve(weekday: int, hour: float) -> float:
    """Demand at local ``hour`` (0 to 24) of ``weekday`` (Monday 0), relative to the week's mean."""
    if not 0 <= weekday <= 6:
        raise ValueError(f"weekday must be 0 (Monday) to 6, not {weekday}")
    if not (0.0 <= hour <= 24.0):
        raise ValueError(f"hour must be within 0 to 24, not {hour}")
    return _raw(weekday, hour) / _week_mean()


@lru_cache(maxsize=1)
def peak_multiplier() -> float:
    """The highest value the curve takes in a week (the thinning bound)."""
    return max(curve(d, h / 60) for d in range(7) for h in range(24 * 60)) * 1.001


def demand_multiplier(when: dt.datetime, *, time_zone: str = TIME_ZONE) -> float:
    """:func:`curve` at an aware instant, read in the city's local time."""
    local = when.astimezone(ZoneInfo(time_zone))
    return curve(local.weekday(), local.hour + local.minute / 60 + local.second / 3600)


def next_arrival(
    rng: random.Random, t: float, rate_at: Callable[[float], float], rate_max: float
) -> float:
    """The next arrival after ``t`` of a Poisson process of rate ``rate_at(t)`` <= ``rate_max``.

    Thinning: candidates come at ``rate_max`` and each is kept with probability
    ``rate_at(candidate) / rate_max``.
    """
    if not rate_max > 0:
        return math.inf
    while True:
        t += rng.expovariate(rate_max)
        if rng.random() * rate_max <= rate_at(t):
            return t


@dataclass(slots=True)
class Arrivals:
    """Order arrivals at ``orders_per_hour`` (the week's mean) shaped by the curve, or flat."""

    orders_per_hour: float
    start: dt.datetime
    rng: random.Random
    flat: bool = False

    def rate_at(self, t: float) -> float:
        """Orders per second ``t`` seconds after ``start``."""
        base = self.orders_per_hour / 3600.0
        if self.flat:
            return base
        return base * demand_multiplier(self.start + dt.timedelta(seconds=t))

    def next(self, t: float) -> float:
        """Seconds from ``start`` of the first arrival after ``t``."""
        base = self.orders_per_hour / 3600.0
        bound = base if self.flat else base * peak_multiplier()
        return next_arrival(self.rng, t, self.rate_at, bound)


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres."""
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def is_open(restaurant: catalog_pb2.Restaurant, when: dt.datetime) -> bool:
    """Whether the weekly hours (closing past 1440 runs into the next day) cover ``when``."""
    if restaurant.paused:
        return False
    local = when.astimezone(ZoneInfo(restaurant.time_zone or TIME_ZONE))
    minute = local.hour * 60 + local.minute
    today = local.isoweekday()
    yesterday = 7 if today == 1 else today - 1
    for h in restaurant.hours:
        if h.weekday == today and h.open_minute <= minute < h.close_minute:
            return True
        if h.weekday == yesterday and minute + 1440 < h.close_minute:
            return True
    return False


def restaurant_weight(popularity: float, distance: float, *, decay_m: float = 1600.0) -> float:
    """How likely a customer picks a restaurant: its popularity, fading with distance."""
    return max(0.0, popularity) * math.exp(-max(0.0, distance) / decay_m)


class Chooser:
    """Weighted draws from a fixed population in O(log n) (cumulative weights, bisect)."""

    def __init__(self, weights: Sequence[float]) -> None:
        if not weights or any(not (w >= 0) for w in weights):
            raise ValueError("weights must be a non-empty sequence of non-negative numbers")
        total = 0.0
        self._cum: list[float] = []
        for w in weights:
            total += w
            self._cum.append(total)
        if total <= 0:
            raise ValueError("at least one weight must be positive")

    def draw(self, rng: random.Random) -> int:
        """An index, with probability proportional to its weight."""
        x = rng.random() * self._cum[-1]
        return min(bisect.bisect_right(self._cum, x), len(self._cum) - 1)


@dataclass(frozen=True, slots=True)
class CartLine:
    item_id: str
    quantity: int
    unit_minor: int
    customizations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cart:
    lines: tuple[CartLine, ...]

    @property
    def subtotal_minor(self) -> int:
        return sum(line.unit_minor * line.quantity for line in self.lines)


def choose_cart(
    rng: random.Random,
    items: Sequence[tuple[str, int]],
    *,
    minimum_minor: int = 0,
    max_lines: int = 5,
) -> Cart | None:
    """A cart of available ``(item_id, price_minor)`` items reaching ``minimum_minor``.

    One to three lines as people order, more only to reach the minimum; None when
    even ``max_lines`` lines cannot reach it (or nothing is available).
    """
    if not items:
        return None
    want = rng.choices((1, 2, 3), weights=(35, 45, 20))[0]
    lines: dict[str, CartLine] = {}
    subtotal = 0
    while len(lines) < max_lines and (len(lines) < want or subtotal < minimum_minor):
        item_id, price = items[rng.randrange(len(items))]
        qty = rng.choices((1, 2, 3), weights=(80, 16, 4))[0]
        if item_id in lines:
            old = lines[item_id]
            qty = min(99, old.quantity + qty)
            subtotal -= old.unit_minor * old.quantity
        lines[item_id] = CartLine(item_id, qty, price)
        subtotal += price * qty
        if len(lines) >= len(items):
            # every item is in already: add more of the dearest until the minimum is met
            dearest = max(lines.values(), key=lambda c: c.unit_minor)
            while subtotal < minimum_minor and dearest.quantity < 99:
                dearest = CartLine(dearest.item_id, dearest.quantity + 1, dearest.unit_minor)
                subtotal += dearest.unit_minor
            lines[dearest.item_id] = dearest
            break
    if subtotal < minimum_minor:
        return None
    return Cart(tuple(lines.values()))
