"""Routes and leg times over the road graph, with live overrides and a straight-line fallback.

:class:`Router` wraps a :class:`foodmesh.roads.RoadGraph` with the traffic model and
the overrides in force. A point farther than ``max_snap_m`` from any road, or a
pair no open road joins (the other side of a closed bridge), is answered by a
straight line at a typical speed, flagged ``straight_line``; a point so far off
the map that no delivery could mean it (``max_offmap_m``) is an error naming the
field. Everything here is CPU work without I/O: the service calls it in a thread.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cachetools import FIFOCache

from foodmesh.core.errors import FieldViolation, InvalidArgument
from foodmesh.roads import (
    OutsideGraph,
    Overrides,
    RoadGraph,
    Snap,
    Step,
    TrafficModel,
    Unreachable,
    encode_polyline,
    haversine_m,
)

__all__ = ["Leg", "RouteResult", "Router"]

#: Road distance over straight-line distance, for the fallback.
DETOUR = 1.35
#: Speed of the straight-line fallback (an urban average), m/s.
STRAIGHT_SPEED_MPS = 7.0
#: Snapped points remembered (a snap costs ~0.5 ms; the road graph never changes).
_SNAP_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class RouteResult:
    distance_m: float
    duration_s: float
    free_flow_s: float
    polyline: str
    path: tuple[tuple[float, float], ...]
    steps: tuple[Step, ...]
    straight_line: bool
    #: Where each end met the road (None for the straight-line fallback).
    origin: Snap | None = None
    destination: Snap | None = None

    @property
    def traffic_multiplier(self) -> float:
        return self.duration_s / self.free_flow_s if self.free_flow_s > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Leg:
    """A leg's time by road (free flow and with traffic) and its length."""

    distance_m: float
    duration_s: float
    free_flow_s: float
    straight_line: bool


def straight(o: tuple[float, float], d: tuple[float, float]) -> RouteResult:
    dist = haversine_m(o[0], o[1], d[0], d[1]) * DETOUR
    dur = dist / STRAIGHT_SPEED_MPS
    path = (o, d)
    return RouteResult(dist, dur, dur, encode_polyline(path), path, (), True)


class Router:
    """Fastest routes and batch leg times at a departure time, under the overrides in force."""

    def __init__(
        self,
        graph: RoadGraph,
        *,
        traffic: TrafficModel | None = None,
        max_snap_m: float = 1_000.0,
        max_offmap_m: float = 50_000.0,
    ) -> None:
        self.graph = graph
        self.traffic = traffic or TrafficModel()
        self.max_snap_m = max_snap_m
        self.max_offmap_m = max_offmap_m
        self.overrides = Overrides()
        # FIFO: reads do not reorder it, so only writes take the lock.
        self._snaps: FIFOCache[tuple[float, float], Snap] = FIFOCache(_SNAP_CACHE)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ checks
    def check_on_map(self, lat: float, lon: float, field: str) -> Snap | None:
        """The snap of a point, None when it is off the roads (straight-line territory).

        Raises InvalidArgument naming ``field`` when the point is beyond ``max_offmap_m``.
        """
        key = (round(lat, 6), round(lon, 6))  # ~0.1 m: restaurants and repeats hit
        try:
            s: Snap | None = self._snaps[key]  # one lookup: atomic beside a writer's eviction
        except KeyError:
            s = None
        if s is None:
            try:
                s = self.graph.snap(lat, lon)
            except OutsideGraph:
                raise InvalidArgument.field(field, "not a valid latitude/longitude") from None
            with self._lock:
                self._snaps[key] = s
        if s.distance_m > self.max_offmap_m:
            raise InvalidArgument(
                [
                    FieldViolation(
                        field,
                        f"{s.distance_m / 1000:.0f} km from the nearest road of the map "
                        f"(at most {self.max_offmap_m / 1000:.0f} km)",
                    )
                ]
            )
        return s if s.distance_m <= self.max_snap_m else None

    # ------------------------------------------------------------ one route
    def route(
        self,
        origin: tuple[float, float],
        destination: tuple[float, float],
        *,
        depart_at: dt.datetime,
        snaps: tuple[Snap | None, Snap | None] | None = None,
    ) -> RouteResult:
        """The fastest route; a straight line (flagged) off the roads or when unreachable."""
        o, d = snaps if snaps is not None else (
            self.check_on_map(*origin, "origin"),
            self.check_on_map(*destination, "destination"),
        )  # fmt: skip
        if o is None or d is None:
            return straight(origin, destination)
        try:
            r = self.graph.route(
                o, d, depart_at=depart_at, traffic=self.traffic, overrides=self.overrides or None
            )
        except (Unreachable, OutsideGraph):
            return straight(origin, destination)
        return RouteResult(
            r.distance_m, r.duration_s, r.free_flow_s, r.polyline, r.path, r.steps, False, o, d
        )

    # ------------------------------------------------------------ many legs
    def legs(
        self,
        origins: Sequence[tuple[float, float]],
        destinations: Sequence[tuple[float, float]],
        *,
        depart_at: dt.datetime,
        limit_s: float = 4 * 3600.0,
    ) -> list[Leg]:
        """Times and lengths of many legs, by :meth:`foodmesh.roads.RoadGraph.legs`.

        Dispatch's case (many drivers to one restaurant) is one search on the reversed
        graph for all of them; many customers of a few restaurants, one per restaurant.
        Points off the roads, and pairs no open road joins, get the straight line; points
        beyond ``max_offmap_m`` raise InvalidArgument naming ``legs[i].origin`` (or
        ``.destination``).
        """
        g = self.graph
        n = len(origins)
        if n == 0:
            return []
        o_ll = np.asarray(origins, dtype=np.float64).reshape(n, 2)
        d_ll = np.asarray(destinations, dtype=np.float64).reshape(n, 2)
        # Points within ~1 m are one point (snapped where the first of them is).
        _, o_first, o_inv = np.unique(
            np.round(o_ll, 5), axis=0, return_index=True, return_inverse=True
        )
        _, d_first, d_inv = np.unique(
            np.round(d_ll, 5), axis=0, return_index=True, return_inverse=True
        )
        o_snaps = g.snap_many(o_ll[o_first, 0], o_ll[o_first, 1])
        d_snaps = g.snap_many(d_ll[d_first, 0], d_ll[d_first, 1])
        bad = [
            FieldViolation(
                f"legs[{int(first[j])}].{name}",
                f"{sn.distance_m / 1000:.0f} km from the nearest road of the map "
                f"(at most {self.max_offmap_m / 1000:.0f} km)",
            )
            for name, snaps, first in (("origin", o_snaps, o_first), ("destination", d_snaps,
                                                                      d_first))
            for j, sn in enumerate(snaps)
            if sn.distance_m > self.max_offmap_m
        ]  # fmt: skip
        if bad:
            raise InvalidArgument(bad[:20])
        o_all = [o_snaps[k] for k in o_inv.ravel().tolist()]
        d_all = [d_snaps[k] for k in d_inv.ravel().tolist()]
        on_road = [
            i for i in range(n)
            if o_all[i].distance_m <= self.max_snap_m and d_all[i].distance_m <= self.max_snap_m
        ]  # fmt: skip
        found: dict[int, Leg] = {}
        if on_road:
            by_road = g.legs(
                [o_all[i] for i in on_road], [d_all[i] for i in on_road], depart_at=depart_at,
                traffic=self.traffic, overrides=self.overrides or None,
                max_snap_m=self.max_snap_m, limit_s=limit_s,
            )  # fmt: skip
            for k, i in enumerate(on_road):
                t = float(by_road.duration_s[k])
                if math.isfinite(t):
                    found[i] = Leg(float(by_road.distance_m[k]), t,
                                   float(by_road.free_flow_s[k]), False)  # fmt: skip
        result = []
        for i in range(n):
            leg = found.get(i)
            if leg is None:
                s = straight((float(o_ll[i, 0]), float(o_ll[i, 1])),
                             (float(d_ll[i, 0]), float(d_ll[i, 1])))  # fmt: skip
                leg = Leg(s.distance_m, s.duration_s, s.free_flow_s, True)
            result.append(leg)
        return result

    # ------------------------------------------------------------ overrides
    def set_overrides(self, slowdowns: dict[int, float], closed: set[int]) -> int:
        """Replaces the overrides in force; returns the number of directed edges affected."""
        ov = Overrides.of(slowdowns=slowdowns, closed=closed)
        self.overrides = ov
        return len(set(slowdowns) | closed)

    def edges_at(self, lat: float, lon: float) -> list[int]:
        """The nearest road's directed edges (both directions of a two-way street)."""
        s = self.graph.snap(lat, lon)
        return [e for e in (s.edge, s.twin) if e >= 0]
