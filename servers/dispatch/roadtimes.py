"""Drivers' road times to restaurants from the ETA service, for the live planner.

``trips.plan_trips`` times a driver's trip to the restaurant by a straight line at
a fixed speed unless told better; that decides when an order is released
(ready − travel − margin). In the city the straight line is wrong both ways (the
drivers are faster than the fixed speed on open roads, slower across a river or a
closure), so offers went out too early or too late. Each round the live engine asks
ETA's ``EstimateTravelTimes`` for the pairs that can matter, in one batch with a
short deadline, and passes the answers to the planner as overrides. A pair ETA did
not answer (slow, down, over the batch's size) keeps the straight line: matching
never waits on ETA. Replay passes no overrides (the trace's physics).

Each driver is timed in their own vehicle (one request per vehicle type in the
round, side by side). ``paces`` asks ETA the pool's drop-off legs by vehicle too:
a vehicle's road time per second of the planner's straight line, which the planner
applies to that driver's drives to the doors (a bicycle to the same door is later
than a car, ~1.7 times the free flow) and to pairs ETA was not asked about.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from foodmesh.core.geo import haversine_m
from foodmesh.v1 import common_pb2, eta_pb2
from servers.dispatch.trips import FreeDriver, TravelRule, TripOrder

__all__ = ["RoadTimes", "RoadTimesConfig", "TravelPort", "pairs_to_ask"]

_log = logging.getLogger("foodmesh.dispatch")

#: A cached time is reused while the driver is within this grid cell (~11 m of latitude).
_GRID = 4
#: (vehicle, driver cell, restaurant place).
_Key = tuple[int, float, float, float, float]


class TravelPort(Protocol):
    async def estimate_travel_times(
        self, request: eta_pb2.EstimateTravelTimesRequest, *, deadline_s: float | None = ...
    ) -> eta_pb2.EstimateTravelTimesResponse: ...


@dataclass(frozen=True, slots=True)
class RoadTimesConfig:
    #: The round waits at most this long for ETA; then the straight line is used.
    deadline_s: float = 1.0
    #: A road time is reused this long (the driver in the same ~10 m cell).
    cache_s: float = 30.0
    #: Per order, the nearest this many drivers (straight line) are asked about.
    per_order: int = 12
    #: At most this many legs a round (ETA's request limit is 5,000).
    max_legs: int = 2000
    #: A vehicle's pace is asked again after this long (traffic follows the clock) ...
    pace_cache_s: float = 60.0
    #: ... over at most this many of the pool's drop-off legs.
    pace_legs: int = 40


def pairs_to_ask(
    orders: Sequence[TripOrder], drivers: Sequence[FreeDriver], *, per_order: int
) -> list[tuple[str, str, FreeDriver, TripOrder]]:
    """``(driver_id, order_id, driver, order)`` of the pairs worth a road time.

    Each order's nearest ``per_order`` drivers within its search radius: the others
    are not chosen for it whatever their road time, and the straight line suffices.
    """
    out: list[tuple[str, str, FreeDriver, TripOrder]] = []
    for o in orders:
        near = sorted(
            (haversine_m(d.lat, d.lon, o.pickup_lat, o.pickup_lon), d.driver_id, d)
            for d in drivers
            if d.driver_id not in o.excluded
        )
        for dist, _, d in near[:per_order]:
            if dist <= o.radius_m:
                out.append((d.driver_id, o.order_id, d, o))
    return out


@dataclass(slots=True)
class RoadTimes:
    """ETA's driver→restaurant times for one planning round, batched and cached briefly."""

    eta: TravelPort | None
    config: RoadTimesConfig = field(default_factory=RoadTimesConfig)
    clock: Callable[[], float] = time.monotonic
    #: (vehicle, driver cell, restaurant place) -> (seconds, when asked).
    _cache: dict[_Key, tuple[float, float]] = field(default_factory=dict)
    #: vehicle -> (pace, when asked).
    _paces: dict[int, tuple[float, float]] = field(default_factory=dict)
    _failures: int = 0
    #: Legs answered by ETA / from the cache / left to the straight line (for the logs).
    asked: int = 0
    cached: int = 0
    fallback: int = 0

    @staticmethod
    def _key(d: FreeDriver, o: TripOrder) -> _Key:
        return (
            d.vehicle,
            round(d.lat, _GRID),
            round(d.lon, _GRID),
            round(o.pickup_lat, _GRID),
            round(o.pickup_lon, _GRID),
        )

    async def pickup_times(
        self, orders: Sequence[TripOrder], drivers: Sequence[FreeDriver]
    ) -> dict[tuple[str, str], float]:
        """Road seconds by ``(driver_id, order_id)`` for the pairs ETA answered (or cached)."""
        if self.eta is None or not orders or not drivers:
            return {}
        now = self.clock()
        cfg = self.config
        self._cache = {k: v for k, v in self._cache.items() if now - v[1] < cfg.cache_s}
        out: dict[tuple[str, str], float] = {}
        legs: dict[_Key, list[tuple[str, str]]] = {}
        where: dict[_Key, tuple[FreeDriver, TripOrder]] = {}
        for driver_id, order_id, d, o in pairs_to_ask(orders, drivers, per_order=cfg.per_order):
            key = self._key(d, o)
            if (hit := self._cache.get(key)) is not None:
                out[(driver_id, order_id)] = hit[0]
                self.cached += 1
                continue
            if key not in legs and len(legs) >= cfg.max_legs:
                self.fallback += 1
                continue
            legs.setdefault(key, []).append((driver_id, order_id))
            where[key] = (d, o)
        if not legs:
            return out
        by_vehicle: dict[int, list[_Key]] = {}
        for key in legs:
            by_vehicle.setdefault(key[0], []).append(key)
        asked = [
            self._ask(
                vehicle,
                [((where[k][0].lat, where[k][0].lon), (where[k][1].pickup_lat,
                  where[k][1].pickup_lon)) for k in keys],
            )
            for vehicle, keys in by_vehicle.items()
        ]  # fmt: skip
        answers = await asyncio.gather(*asked)
        for keys, seconds in zip(by_vehicle.values(), answers, strict=True):
            for key, s in zip(keys, seconds or [math.nan] * len(keys), strict=True):
                if not math.isfinite(s) or s < 0.0:
                    self.fallback += len(legs[key])
                    continue
                self._cache[key] = (s, now)
                for pair in legs[key]:
                    out[pair] = s
                    self.asked += 1
        return out

    async def _ask(
        self, vehicle: int, legs: Sequence[tuple[tuple[float, float], tuple[float, float]]]
    ) -> list[float] | None:
        """ETA's seconds of ``legs`` (origin, destination) in ``vehicle``; None: no answer."""
        assert self.eta is not None
        req = eta_pb2.EstimateTravelTimesRequest(
            vehicle_type=common_pb2.VehicleType.ValueType(vehicle)
        )
        for (olat, olon), (dlat, dlon) in legs:
            leg = req.legs.add()
            leg.origin.lat, leg.origin.lon = olat, olon
            leg.destination.lat, leg.destination.lon = dlat, dlon
        try:
            resp = await self.eta.estimate_travel_times(req, deadline_s=self.config.deadline_s)
        except Exception as exc:  # slow or away: this round keeps the straight line
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                _log.warning(
                    "ETA travel times unavailable (%d calls in a row), straight line: %s",
                    self._failures,
                    exc,
                )
            return None
        self._failures = 0
        if len(resp.travel_times) != len(legs):
            return None
        return [float(t.duration_seconds) for t in resp.travel_times]

    async def paces(
        self, orders: Sequence[TripOrder], drivers: Sequence[FreeDriver], travel: TravelRule
    ) -> dict[int, float]:
        """Each vehicle's road time per second of ``travel``'s straight line, by vehicle.

        Measured on (at most ``pace_legs`` of) the pool's drop-off legs, the drives the
        planner times by the straight line; kept ``pace_cache_s``. A vehicle ETA has not
        answered for is absent (the planner's pace 1).
        """
        if self.eta is None:
            return {}
        now = self.clock()
        vehicles = sorted({d.vehicle for d in drivers})
        due = [v for v in vehicles if now - self._paces.get(v, (0.0, -math.inf))[1] >= (
            self.config.pace_cache_s)]  # fmt: skip
        sample = [
            o for o in sorted(orders, key=lambda o: o.order_id)
            if haversine_m(o.pickup_lat, o.pickup_lon, o.dropoff_lat, o.dropoff_lon) > 200.0
        ][: self.config.pace_legs]  # fmt: skip
        if due and sample:
            line = sum(
                travel.seconds(haversine_m(o.pickup_lat, o.pickup_lon, o.dropoff_lat,
                                           o.dropoff_lon))
                for o in sample
            )  # fmt: skip
            legs = [((o.pickup_lat, o.pickup_lon), (o.dropoff_lat, o.dropoff_lon)) for o in sample]
            answers = await asyncio.gather(*(self._ask(v, legs) for v in due))
            for v, seconds in zip(due, answers, strict=True):
                if seconds and all(math.isfinite(x) and x >= 0.0 for x in seconds) and line > 0:
                    self._paces[v] = (min(max(sum(seconds) / line, 0.2), 5.0), now)
        return {v: self._paces[v][0] for v in vehicles if v in self._paces}
