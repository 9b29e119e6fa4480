"""Simulated drivers' movement: a drive's path and pace, the road graph or straight lines.

Movement goes through one function, :meth:`Router.leg`: along the road graph
(``foodmesh.roads``) at the traffic of the hour when that package is there,
else straight lines with a detour factor at a traffic-aware speed. :class:`Motion`
is one driver's position and the drive under way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from foodmesh.sim import world
from foodmesh.sim.demand import distance_m
from foodmesh.v1 import common_pb2

__all__ = [
    "MPS_TO_MPH",
    "SPEED_MPS",
    "TZ",
    "LatLon",
    "Leg",
    "Motion",
    "Router",
    "traffic_multiplier",
]

_log = logging.getLogger("foodmesh.sim.drivers")
LatLon = tuple[float, float]
#: Average moving speed in the city, lights and junctions included (m/s), by vehicle.
SPEED_MPS: dict[int, float] = {
    common_pb2.VEHICLE_TYPE_CAR: 8.0,
    common_pb2.VEHICLE_TYPE_SCOOTER: 7.0,
    common_pb2.VEHICLE_TYPE_BICYCLE: 4.5,
}
#: Streets are not straight: a straight line's length times this is the drive.
_DETOUR = 1.35
MPS_TO_MPH = 2.236936
#: The simulated city's clock.
TZ = ZoneInfo("America/Los_Angeles")


def traffic_multiplier(when: dt.datetime) -> float:
    """The design's time-of-day table: weekday rush 1.5x, weekday lunch 1.2x, weekend 1.3x."""
    local = when.astimezone(TZ)
    hour = local.hour
    if local.weekday() < 5:
        if 7 <= hour <= 9 or 17 <= hour <= 19:
            return 1.5
        return 1.2 if 12 <= hour <= 13 else 1.0
    return 1.3 if 11 <= hour <= 14 else 0.9


@dataclass(frozen=True, slots=True)
class Leg:
    """A drive: a polyline and how long it takes; :meth:`at` is where the car is."""

    path: tuple[LatLon, ...]
    cum_m: tuple[float, ...]
    duration_s: float

    @classmethod
    def of(cls, path: Sequence[LatLon], duration_s: float) -> Leg:
        pts = tuple(path) if path else ((0.0, 0.0),)
        cum = [0.0]
        for a, b in zip(pts, pts[1:], strict=False):
            cum.append(cum[-1] + distance_m(a, b))
        return cls(pts, tuple(cum), max(0.0, duration_s))

    @property
    def distance_m(self) -> float:
        return self.cum_m[-1]

    @property
    def end(self) -> LatLon:
        return self.path[-1]

    def at(self, elapsed_s: float) -> tuple[float, float, float]:
        """``(lat, lon, heading)`` after ``elapsed_s`` seconds, at a steady pace."""
        if self.duration_s <= 0 or elapsed_s >= self.duration_s or len(self.path) < 2:
            a, b = (self.path[-2], self.path[-1]) if len(self.path) > 1 else (self.end, self.end)
            return (*self.end, _bearing(a, b))
        target = self.distance_m * max(0.0, elapsed_s) / self.duration_s
        i = 1
        while i < len(self.cum_m) - 1 and self.cum_m[i] < target:
            i += 1
        a, b = self.path[i - 1], self.path[i]
        seg = self.cum_m[i] - self.cum_m[i - 1]
        f = 0.0 if seg <= 0 else (target - self.cum_m[i - 1]) / seg
        return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, _bearing(a, b))


def _bearing(a: LatLon, b: LatLon) -> float:
    la1, la2 = math.radians(a[0]), math.radians(b[0])
    dlon = math.radians(b[1] - a[1])
    y = math.sin(dlon) * math.cos(la2)
    x = math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(dlon)
    return math.degrees(math.atan2(y, x)) % 360.0


class Router:
    """Where drives go: the road graph when ``foodmesh.roads`` exists, else straight lines."""

    def __init__(
        self,
        *,
        graph: Any = None,
        traffic: Any = None,
        travel_scale: float = 1.0,
        idle_routes_per_s: float = 5.0,
    ):
        self.graph = graph
        self.traffic = traffic
        self.travel_scale = travel_scale
        self.road_failures = 0
        # A route costs ~25 ms of CPU: idle drivers' wandering gets a budget, deliveries never
        # wait for one. Past the budget an idle drive goes straight.
        self._idle_rate = idle_routes_per_s
        self._idle_tokens = idle_routes_per_s
        self._idle_at = time.monotonic()

    @classmethod
    async def create(cls, *, use_roads: bool, travel_scale: float) -> Router:
        """Loads the default road graph in a thread (it may be generated on first use)."""
        if use_roads:
            try:
                roads = importlib.import_module("foodmesh.roads")
                graph_cls, traffic_cls = roads.RoadGraph, roads.TrafficModel
            except (ImportError, AttributeError):
                _log.info("drivers move in straight lines: foodmesh.roads is not available")
            else:
                graph = await asyncio.to_thread(graph_cls.default)
                _log.info("drivers move along the road graph: %r", graph)
                return cls(graph=graph, traffic=traffic_cls(), travel_scale=travel_scale)
        return cls(travel_scale=travel_scale)

    @property
    def kind(self) -> str:
        return "roads" if self.graph is not None else "straight"

    def _idle_budget(self) -> bool:
        now = time.monotonic()
        self._idle_tokens = min(self._idle_rate, self._idle_tokens + (now - self._idle_at)
                                * self._idle_rate)  # fmt: skip
        self._idle_at = now
        if self._idle_tokens >= 1.0:
            self._idle_tokens -= 1.0
            return True
        return False

    def leg(
        self,
        a: LatLon,
        b: LatLon,
        *,
        when: dt.datetime,
        vehicle: int,
        idle: bool = False,
        pace: float = 1.0,
        rng: random.Random | None = None,
    ) -> Leg:
        """The drive from ``a`` to ``b`` leaving at ``when``; the one place movement is decided.

        On the road graph its time is the city's model (:func:`foodmesh.sim.world.drive_seconds`):
        the vehicle's profile of the graph's time with traffic, the driver's ``pace``, noise.
        """
        if self.graph is not None and (not idle or self._idle_budget()):
            try:
                route = self.graph.route(a, b, depart_at=when, traffic=self.traffic)
                took = world.drive_seconds(rng or random.Random(), vehicle=vehicle,
                                           free_flow_s=route.free_flow_s,
                                           graph_s=route.duration_s, pace=pace)  # fmt: skip
                return Leg.of(route.path, took * self.travel_scale)
            except Exception:  # noqa: BLE001 - off the graph or unreachable: go straight
                self.road_failures += 1
        d = distance_m(a, b) * _DETOUR
        speed = SPEED_MPS.get(vehicle, 8.0) / traffic_multiplier(when)
        return Leg.of((a, b), d / speed * self.travel_scale)


class Motion:
    """One driver's position, and the drive under way (if any)."""

    def __init__(
        self,
        router: Router,
        *,
        home: LatLon,
        vehicle: int,
        now: Callable[[], dt.datetime],
        pace: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.vehicle = vehicle
        #: The driver's own pace against the road graph (:func:`foodmesh.sim.world.driver_pace`).
        self.pace = pace
        self.rng = rng or random.Random()
        self.now = now
        self.pos: LatLon = home
        self.leg: Leg | None = None
        self.leg_t0 = 0.0

    def where(self) -> tuple[float, float, float, bool]:
        """``(lat, lon, heading, moving)`` now."""
        if self.leg is None:
            return (*self.pos, 0.0, False)
        elapsed = time.monotonic() - self.leg_t0
        lat, lon, heading = self.leg.at(elapsed)
        if elapsed >= self.leg.duration_s:
            self.pos, self.leg = self.leg.end, None
            return (lat, lon, heading, False)
        return (lat, lon, heading, True)

    def drive(self, dest: LatLon, *, idle: bool = False) -> Leg:
        """Sets off towards ``dest`` from where the driver is now."""
        lat, lon, _, _ = self.where()
        leg = self.router.leg((lat, lon), dest, when=self.now(), idle=idle,
                              vehicle=self.vehicle, pace=self.pace, rng=self.rng)  # fmt: skip
        self.pos = (lat, lon)
        self.leg, self.leg_t0 = leg, time.monotonic()
        return leg

    def left_s(self, leg: Leg) -> float:
        """Seconds until ``leg`` (set off on with :meth:`drive`) arrives."""
        return max(0.0, self.leg_t0 + leg.duration_s - time.monotonic())

    def arrive(self, leg: Leg) -> None:
        self.leg, self.pos = None, leg.end

    def speed_mps(self, moving: bool) -> float:
        """The speed a fix reports: the vehicle's, on the simulated clock."""
        scale = self.router.travel_scale
        return (SPEED_MPS.get(self.vehicle, 8.0) / max(scale, 1e-3)) if moving else 0.0

    def somewhere_near(self, rng: random.Random) -> LatLon:
        """A spot 300 m to 1.5 km away in a random direction."""
        a = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(300, 1500)
        lat, lon = self.pos
        return (lat + r * math.sin(a) / 111_195.0,
                lon + r * math.cos(a) / (111_195.0 * math.cos(math.radians(lat))))  # fmt: skip
