"""The surge multiplier of a cell: the design's tiers, events, weather, clamp, rounding,
and hysteresis. Pure: counts and conditions in, a :class:`SurgeFactors` out.

Arithmetic is exact (``Fraction``): the tiers are piecewise linear in the
demand/supply ratio, and the product is rounded **half up** to 0.1, so 1.25 is
1.3 on every machine (``round(1.25, 1)`` on a float gives 1.2).

Smoothing is **hysteresis**, not an EWMA. Demand and supply are small integers,
so one order more or one driver less moves the raw value across a 0.1 step and
back; rounding turns that jitter into a price that flaps. An EWMA would damp the
jitter but also delay a real spike by its time constant, and a slowly moving
average still oscillates around a rounding edge. A dead band does neither: the
published multiplier changes only when the raw value has moved a full step
(0.1) away from it, so a real rise shows at once and noise around an edge does
not. When demand collapses the raw value is exactly 1.0 and always passes.

**Moving before the rush.** Demand is what was ordered in the last 10 minutes, so
on its own surge rises only once a rush has begun and drivers are already short.
When Pricing's demand forecast (``forecast.py``) has a trained model, the orders it expects
in the next half hour, scaled to the same 10-minute window (``anticipated``), stand
in for demand when they are more: the ratio is ``max(demand, anticipated) /
supply``. So a cell whose dinner rush is forecast prices it from the first minutes
of the rush, while a forecast below what is happening never lowers a price
("+ rush expected" in the reason when the forecast decided the tier).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from foodmesh.core.geo import METERS_PER_MILE, geohash_decode, haversine_m
from foodmesh.v1 import common_pb2

__all__ = [
    "CELL_PRECISION",
    "EXTREME_RATIO",
    "MAX_SURGE",
    "MIN_SURGE",
    "Event",
    "SurgeFactors",
    "Weather",
    "base_surge",
    "compute",
    "demand_ratio",
    "event_multiplier",
    "finish",
    "round_tenth",
    "smooth",
    "tier_reason",
    "weather_kind",
    "weather_multiplier",
]

WK = common_pb2.WeatherKind
#: Surge is kept per geohash-5 cell (about 4.9 × 4.9 km at the equator).
CELL_PRECISION = 5
MIN_SURGE = Fraction(1)
MAX_SURGE = Fraction(3)
#: The design's ratio when orders wait and no driver is available.
EXTREME_RATIO = Fraction(5)
_EVENT_RADIUS_M = 1.0 * METERS_PER_MILE
_WEATHER: dict[int, Fraction] = {
    WK.WEATHER_KIND_UNSPECIFIED: Fraction(1),
    WK.WEATHER_KIND_CLEAR: Fraction(1),
    WK.WEATHER_KIND_LIGHT_RAIN: Fraction("1.2"),
    WK.WEATHER_KIND_MODERATE_RAIN: Fraction("1.3"),
    WK.WEATHER_KIND_HEAVY_RAIN: Fraction("1.5"),
    WK.WEATHER_KIND_SNOW: Fraction("1.5"),
    WK.WEATHER_KIND_EXTREME_TEMPERATURE: Fraction("1.1"),
}


@dataclass(frozen=True, slots=True)
class Event:
    """A local event that draws demand (attendance decides its factor)."""

    event_id: str
    lat: float
    lon: float
    attendance: int
    start_ts: float | None = None
    end_ts: float | None = None

    def active(self, now: float) -> bool:
        return (self.start_ts is None or self.start_ts <= now) and (
            self.end_ts is None or now <= self.end_ts
        )


@dataclass(frozen=True, slots=True)
class Weather:
    """The weather over every cell whose geohash starts with ``area``."""

    area: str
    kind: int


@dataclass(frozen=True, slots=True)
class SurgeFactors:
    """A computed surge and everything that explains it."""

    multiplier: Fraction
    raw: Fraction
    demand: int
    supply: int
    ratio: Fraction
    event_multiplier: Fraction
    weather_multiplier: Fraction
    reason: str
    #: Orders the forecast expects in the demand window (0 without a forecast).
    anticipated: int = 0

    @property
    def tenths(self) -> int:
        return int(self.multiplier * 10)


def demand_ratio(demand: int, supply: int) -> Fraction:
    """Orders over available drivers; with no driver, 0 (no orders) or the design's 5."""
    if demand < 0 or supply < 0:
        raise ValueError("counts cannot be negative")
    if supply == 0:
        return Fraction(0) if demand == 0 else EXTREME_RATIO
    return Fraction(demand, supply)


def base_surge(ratio: Fraction) -> Fraction:
    """The design's tiers: ≤1 → 1.0; ≤2 → 1 + (r−1)·0.5; ≤5 → 2 + (r−2)·0.3; else 2.5."""
    if ratio <= 1:
        return Fraction(1)
    if ratio <= 2:
        return 1 + (ratio - 1) * Fraction(1, 2)
    if ratio <= 5:
        return 2 + (ratio - 2) * Fraction(3, 10)
    return Fraction(5, 2)


def tier_reason(ratio: Fraction) -> str:
    if ratio <= 1:
        return "Normal demand"
    if ratio <= 2:
        return "Moderate demand"
    if ratio <= 5:
        return "High demand"
    return "Very high demand"


def event_multiplier(events: Iterable[Event], cell: str, now: float) -> Fraction:
    """The largest factor of an active event within a mile of the cell (1.2 / 1.5 / 1.8)."""
    lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(cell)
    clat, clon = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
    reach = _EVENT_RADIUS_M + haversine_m(clat, clon, lat_hi, lon_hi)
    best = Fraction(1)
    for e in events:
        if not e.active(now) or haversine_m(clat, clon, e.lat, e.lon) > reach:
            continue
        if e.attendance > 50_000:
            f = Fraction("1.8")
        elif e.attendance > 10_000:
            f = Fraction("1.5")
        elif e.attendance > 1_000:
            f = Fraction("1.2")
        else:
            continue
        best = max(best, f)
    return best


def weather_kind(weather: Iterable[Weather], cell: str) -> int:
    """The ``WeatherKind`` of the most specific weather area covering the cell (0: none)."""
    found: Weather | None = None
    for w in weather:
        if cell.startswith(w.area) and (found is None or len(w.area) > len(found.area)):
            found = w
    return 0 if found is None else found.kind


def weather_multiplier(weather: Iterable[Weather], cell: str) -> Fraction:
    """The factor of the most specific weather area covering the cell (1 in clear weather)."""
    return _WEATHER.get(weather_kind(weather, cell), Fraction(1))


def round_tenth(x: Fraction) -> Fraction:
    """Half up to 0.1: 1.25 → 1.3, 1.24 → 1.2."""
    return Fraction(math.floor(x * 10 + Fraction(1, 2)), 10)


def finish(raw: Fraction) -> Fraction:
    """Clamped to [1.0, 3.0], then rounded half up to 0.1."""
    return round_tenth(min(MAX_SURGE, max(MIN_SURGE, raw)))


def smooth(
    previous: Fraction | None, raw: Fraction, *, band: Fraction = Fraction(1, 10)
) -> Fraction:
    """Hysteresis: keep ``previous`` unless the clamped raw value is a full ``band`` away."""
    target = finish(raw)
    if previous is None or target == previous:
        return target
    clamped = min(MAX_SURGE, max(MIN_SURGE, raw))
    return target if abs(clamped - previous) >= band else previous


def compute(
    *,
    demand: int,
    supply: int,
    events: Iterable[Event] = (),
    weather: Iterable[Weather] = (),
    cell: str,
    now: float,
    previous: Fraction | None = None,
    anticipated: int = 0,
) -> SurgeFactors:
    """The surge of ``cell`` now, smoothed against the value it had before.

    ``anticipated`` is the forecast's demand for the same window: the larger of it and
    ``demand`` sets the ratio.
    """
    if anticipated < 0:
        raise ValueError("counts cannot be negative")
    ratio = demand_ratio(max(demand, anticipated), supply)
    ev = event_multiplier(events, cell, now)
    we = weather_multiplier(weather, cell)
    raw = base_surge(ratio) * ev * we
    reason = tier_reason(ratio)
    if anticipated > demand and base_surge(ratio) > base_surge(demand_ratio(demand, supply)):
        reason += " + rush expected"
    if ev > 1:
        reason += " + special event"
    if we > 1:
        reason += " + bad weather"
    return SurgeFactors(
        multiplier=smooth(previous, raw),
        raw=raw,
        demand=demand,
        supply=supply,
        ratio=ratio,
        event_multiplier=ev,
        weather_multiplier=we,
        reason=reason,
        anticipated=anticipated,
    )
