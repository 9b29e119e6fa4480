"""Weeks of simulated demand per geohash-5 cell: the demand curve, events and weather. Pure.

What the demand forecast learns from and is measured on (``benchmarks/forecast.py``).
The rate of a cell at minute ``m`` is the city's ``orders_per_hour`` shaped by the
simulator's own daily and weekly curve (:func:`foodmesh.sim.demand.curve`), times the
cell's share of the restaurants' popularity, times the weather over the city and any
event near the cell; each minute's count is a Poisson draw of that rate.

- **Weather**: on a third of the days a spell of rain (light, moderate or heavy) of
  two to six hours; people order more when it rains (×1.15, ×1.3, ×1.5).
- **Events**: two to four a week, each in one cell, three hours long, with an
  attendance of 2,000 to 60,000; demand there grows with it (×1.4 to ×2.2) over the
  event and the hour after it. Events are announced ahead (as ``SetConditions`` does).

The conditions are returned in Pricing's own terms (:class:`ConditionsTimeline`), so a
forecaster sees exactly what the live service would: events known in advance, the
weather only as it is now.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from foodmesh.core.geo import geohash_decode, geohash_encode
from foodmesh.sim.demand import TIME_ZONE, curve
from foodmesh.v1 import common_pb2

__all__ = [
    "CellDemand",
    "ConditionsTimeline",
    "ScheduledEvent",
    "WeatherSpell",
    "simulate",
]

WK = common_pb2.WeatherKind
_RAIN = ((WK.WEATHER_KIND_LIGHT_RAIN, 1.15), (WK.WEATHER_KIND_MODERATE_RAIN, 1.3),
         (WK.WEATHER_KIND_HEAVY_RAIN, 1.5))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """An event near ``cell`` from ``start_ts`` to ``end_ts``, announced in advance."""

    event_id: str
    cell: str
    lat: float
    lon: float
    attendance: int
    start_ts: float
    end_ts: float

    @property
    def demand_factor(self) -> float:
        """How much more the cell orders while it runs (and the hour after)."""
        return 1.4 + 0.8 * min(1.0, math.log10(max(self.attendance, 1) / 2000) / math.log10(30))


@dataclass(frozen=True, slots=True)
class WeatherSpell:
    """Rain over every cell starting with ``area``, from ``start_ts`` to ``end_ts``."""

    area: str
    kind: int
    factor: float
    start_ts: float
    end_ts: float


@dataclass(frozen=True, slots=True)
class ConditionsTimeline:
    """The events and the weather over the simulated days."""

    events: tuple[ScheduledEvent, ...]
    weather: tuple[WeatherSpell, ...]

    def weather_at(self, ts: float) -> tuple[WeatherSpell, ...]:
        """The spells in force at ``ts`` (what SetConditions would hold then)."""
        return tuple(w for w in self.weather if w.start_ts <= ts < w.end_ts)


@dataclass(frozen=True, slots=True)
class CellDemand:
    """Orders per cell per minute from ``start`` (aware, UTC), and what moved them."""

    start: dt.datetime
    cells: tuple[str, ...]
    #: ``counts[i, m]``: orders placed in ``cells[i]`` during minute ``m``.
    counts: npt.NDArray[np.int64]
    #: The expected value of each count (the truth the draws came from).
    rates: npt.NDArray[np.float64]
    conditions: ConditionsTimeline

    @property
    def start_ts(self) -> float:
        return self.start.timestamp()


def _minute_curve(start: dt.datetime, minutes: int, time_zone: str) -> npt.NDArray[np.float64]:
    tz = ZoneInfo(time_zone)
    out = np.empty(minutes)
    for m in range(minutes):
        local = (start + dt.timedelta(minutes=m)).astimezone(tz)
        out[m] = curve(local.weekday(), local.hour + local.minute / 60)
    return out


def simulate(
    locations: Sequence[tuple[float, float]],
    popularity: Sequence[float],
    *,
    start: dt.datetime,
    days: int = 21,
    orders_per_hour: float = 400.0,
    seed: int = 7,
    time_zone: str = TIME_ZONE,
    min_share: float = 0.01,
    conditions: bool = True,
) -> CellDemand:
    """``days`` of orders at restaurants at ``locations`` (each weighted by ``popularity``).

    Cells holding less than ``min_share`` of the popularity are dropped (a handful of
    orders a day is nothing to forecast). ``conditions=False``: no rain and no events
    (a prior for a live city, whose conditions are not known for the days simulated).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if len(locations) != len(popularity) or not locations:
        raise ValueError("one popularity per location, at least one location")
    rng = random.Random(f"{seed}:demand-week")
    weights: dict[str, float] = {}
    for (lat, lon), p in zip(locations, popularity, strict=True):
        c = geohash_encode(lat, lon, 5)
        weights[c] = weights.get(c, 0.0) + max(0.0, p)
    total = sum(weights.values())
    cells = tuple(sorted(c for c, w in weights.items() if w >= min_share * total))
    kept = sum(weights[c] for c in cells)
    share = np.array([weights[c] / kept for c in cells])
    minutes = days * 1440
    t0 = start.timestamp()
    base = _minute_curve(start, minutes, time_zone) * orders_per_hour / 60.0

    # The rain falls on every cell: its area is the prefix they all share.
    city = os.path.commonprefix(cells) or cells[0][:1]
    spells: list[WeatherSpell] = []
    for d in range(days):
        if rng.random() < 0.35 and conditions:
            kind, factor = rng.choice(_RAIN)
            s = t0 + d * 86400 + rng.uniform(6, 20) * 3600
            spells.append(WeatherSpell(city, kind, factor, s, s + rng.uniform(2, 6) * 3600))
    events: list[ScheduledEvent] = []
    for w in range(math.ceil(days / 7)):
        for k in range(rng.randint(2, 4)):
            day = w * 7 + rng.randrange(7)
            if day >= days or not conditions:
                continue
            cell = rng.choice(cells)
            lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(cell)
            s = t0 + day * 86400 + rng.uniform(11, 20) * 3600
            events.append(ScheduledEvent(
                event_id=f"ev_{w}_{k}", cell=cell, lat=(lat_lo + lat_hi) / 2,
                lon=(lon_lo + lon_hi) / 2, attendance=rng.randint(2000, 60000),
                start_ts=s, end_ts=s + 3 * 3600,
            ))  # fmt: skip

    boost = np.ones((len(cells), minutes))
    ts = t0 + 60.0 * np.arange(minutes)
    for sp in spells:
        boost[:, (ts >= sp.start_ts) & (ts < sp.end_ts)] *= sp.factor
    index = {c: i for i, c in enumerate(cells)}
    for e in events:
        boost[index[e.cell], (ts >= e.start_ts) & (ts < e.end_ts + 3600)] *= e.demand_factor
    rates = share[:, None] * base[None, :] * boost
    draws = np.random.default_rng(rng.randrange(2**32)).poisson(rates).astype(np.int64)
    return CellDemand(start=start.astimezone(dt.UTC), cells=cells, counts=draws, rates=rates,
                      conditions=ConditionsTimeline(tuple(events), tuple(spells)))  # fmt: skip
