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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from foodmesh.core.geo import haversine_m
from foodmesh.v1 import eta_pb2
from servers.dispatch.trips import FreeDriver, TripOrder

__all__ = ["RoadTimes", "RoadTimesConfig", "TravelPort", "pairs_to_ask"]

_log = logging.getLogger("foodmesh.dispatch")

#: A cached time is reused while the driver is within this grid cell (~11 m of latitude).
_GRID = 4


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
    #: (driver cell, restaurant place) -> (seconds, when asked).
    _cache: dict[tuple[float, float, float, float], tuple[float, float]] = field(
        default_factory=dict
    )
    _failures: int = 0
    #: Legs answered by ETA / from the cache / left to the straight line (for the logs).
    asked: int = 0
    cached: int = 0
    fallback: int = 0

    @staticmethod
    def _key(d: FreeDriver, o: TripOrder) -> tuple[float, float, float, float]:
        return (
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
        legs: dict[tuple[float, float, float, float], list[tuple[str, str]]] = {}
        where: dict[tuple[float, float, float, float], tuple[FreeDriver, TripOrder]] = {}
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
        keys = list(legs)
        req = eta_pb2.EstimateTravelTimesRequest()
        for key in keys:
            d, o = where[key]
            leg = req.legs.add()
            leg.origin.lat, leg.origin.lon = d.lat, d.lon
            leg.destination.lat, leg.destination.lon = o.pickup_lat, o.pickup_lon
        try:
            resp = await self.eta.estimate_travel_times(req, deadline_s=cfg.deadline_s)
        except Exception as exc:  # slow or away: this round keeps the straight line
            self._failures += 1
            self.fallback += sum(len(v) for v in legs.values())
            if self._failures in (1, 10) or self._failures % 100 == 0:
                _log.warning(
                    "ETA travel times unavailable (%d rounds in a row), straight line: %s",
                    self._failures,
                    exc,
                )
            return out
        self._failures = 0
        if len(resp.travel_times) != len(keys):
            self.fallback += sum(len(v) for v in legs.values())
            return out
        for key, t in zip(keys, resp.travel_times, strict=True):
            s = float(t.duration_seconds)
            if not math.isfinite(s) or s < 0.0:
                self.fallback += len(legs[key])
                continue
            self._cache[key] = (s, now)
            for pair in legs[key]:
                out[pair] = s
                self.asked += 1
        return out
