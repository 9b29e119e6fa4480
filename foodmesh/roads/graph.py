"""The road graph: CSR arrays and what every use of them starts from.

Nodes are points (lat, lon); edges are directed, stored in CSR order (the edges
leaving node ``u`` are ``offsets[u]:offsets[u + 1]``), so an edge's id is its
position. A two-way street is two edges, each the other's ``twin``.

:class:`RoadGraph` is the facade; each use case lives in its own module:
building (``_build``), files and the default city (``_io``), snapping
(``_snap``), edge weights (``_weights``), A* bounds (``_landmarks``), how a
snapped point meets the graph (``_ends``), one route (``_route``, on ``_search``)
and the batch searches (``_legs``, on ``_trees``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from foodmesh.roads import _build, _io, _landmarks, _legs, _route, _snap, _weights
from foodmesh.roads._io import FORMAT_VERSION, default_cache_dir
from foodmesh.roads._snap import DEFAULT_MAX_SNAP_M, SNAP_SAMPLE_M, Point
from foodmesh.roads._weights import Weights
from foodmesh.roads.geo import LocalPlane
from foodmesh.roads.traffic import Overrides, TrafficModel
from foodmesh.roads.types import Route, Snap

__all__ = [
    "DEFAULT_MAX_SNAP_M",
    "FORMAT_VERSION",
    "SNAP_SAMPLE_M",
    "Point",
    "RoadGraph",
    "default_cache_dir",
]

#: Smallest travel time of an edge (OSM has zero-length ones between duplicate nodes).
_MIN_WEIGHT_S = 1e-3

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class RoadGraph:
    """A directed road graph in CSR form.

    Build one with :meth:`from_edges`, :meth:`load`, :meth:`default` (the generated
    city) or :func:`foodmesh.roads.osm.import_osm`. Read-only after construction;
    safe to share between threads.
    """

    def __init__(
        self,
        *,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        offsets: npt.ArrayLike,
        targets: npt.ArrayLike,
        length_m: npt.ArrayLike,
        road_class: npt.ArrayLike,
        speed_mps: npt.ArrayLike,
        name_idx: npt.ArrayLike,
        oneway: npt.ArrayLike,
        names: Sequence[str],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.lat = np.ascontiguousarray(lat, dtype=np.float64)
        self.lon = np.ascontiguousarray(lon, dtype=np.float64)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.targets = np.ascontiguousarray(targets, dtype=np.int32)
        self.length_m = np.ascontiguousarray(length_m, dtype=np.float64)
        self.road_class = np.ascontiguousarray(road_class, dtype=np.uint8)
        self.speed_mps = np.ascontiguousarray(speed_mps, dtype=np.float64)
        self.name_idx = np.ascontiguousarray(name_idx, dtype=np.int32)
        self.oneway = np.ascontiguousarray(oneway, dtype=np.bool_)
        self.names: tuple[str, ...] = tuple(names)
        self.meta: dict[str, Any] = dict(meta or {})
        _build.validate(self)
        n = self.node_count
        self.sources = np.repeat(np.arange(n, dtype=np.int32), np.diff(self.offsets))
        self.free_flow_s = np.maximum(self.length_m / self.speed_mps, _MIN_WEIGHT_S)
        self.max_speed_mps = float(self.speed_mps.max()) if self.edge_count else 1.0
        self._keys_sorted: I64 = np.empty(0, dtype=np.int64)
        self._keys_order: I64 = np.empty(0, dtype=np.int64)
        self.twin = _build.twins(self)
        self._parallel = _build.parallels(self)
        self.heading_deg = _build.headings(self)
        lat0 = float(self.meta.get("center_lat", float(np.mean(self.lat)) if n else 0.0))
        lon0 = float(self.meta.get("center_lon", float(np.mean(self.lon)) if n else 0.0))
        self.plane = LocalPlane(lat0, lon0)
        self.x, self.y = self.plane.to_xy(self.lat, self.lon)
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._tree: cKDTree | None = None
        self._sample_edge: npt.NDArray[np.int32] | None = None
        self._weights: OrderedDict[Any, Weights] = OrderedDict()
        self._alt: OrderedDict[tuple[float, ...], tuple[F64, F64]] = OrderedDict()

    # ------------------------------------------------------------------ shape
    @property
    def node_count(self) -> int:
        return int(self.lat.shape[0])

    @property
    def edge_count(self) -> int:
        return int(self.targets.shape[0])

    @property
    def timezone(self) -> str:
        return str(self.meta.get("timezone", "UTC"))

    def bounds(self) -> tuple[float, float, float, float]:
        """``(lat_min, lat_max, lon_min, lon_max)`` of the nodes."""
        return (
            float(self.lat.min()),
            float(self.lat.max()),
            float(self.lon.min()),
            float(self.lon.max()),
        )

    def street(self, edge: int) -> str:
        return self.names[int(self.name_idx[edge])]

    def edges_named(self, name: str) -> list[int]:
        """Ids of every edge of the street called ``name`` (e.g. to close a bridge)."""
        try:
            i = self.names.index(name)
        except ValueError:
            return []
        return [int(e) for e in np.flatnonzero(self.name_idx == i)]

    def edges_near(self, lat: float, lon: float, radius_m: float) -> list[int]:
        """Ids of every edge that passes within ``radius_m`` of a point (an incident's reach)."""
        return _snap.edges_near(self, lat, lon, radius_m)

    def edges_along(self, nodes: Sequence[int], w: F64 | None = None) -> I64:
        """The edge joining each consecutive pair of ``nodes`` (the fastest of parallel
        edges under ``w``, else free flow); -1 where none exists."""
        a = np.asarray(nodes, dtype=np.int64)
        if a.size < 2:
            return np.empty(0, dtype=np.int64)
        key = a[:-1] * np.int64(max(1, self.node_count)) + a[1:]
        lo = np.searchsorted(self._keys_sorted, key, side="left")
        hi = np.searchsorted(self._keys_sorted, key, side="right")
        out = np.full(len(key), -1, dtype=np.int64)
        found = hi > lo
        out[found] = self._keys_order[lo[found]]
        ws = w if w is not None else self.free_flow_s
        for i in np.flatnonzero(hi - lo > 1):  # parallel edges: rare, settle them one by one
            cands = self._keys_order[lo[i] : hi[i]]
            out[i] = int(cands[np.argmin(ws[cands])])
        return out

    # ------------------------------------------------------------- building
    @classmethod
    def from_edges(
        cls,
        *,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        u: npt.ArrayLike,
        v: npt.ArrayLike,
        road_class: npt.ArrayLike,
        speed_mps: npt.ArrayLike,
        name_idx: npt.ArrayLike,
        oneway: npt.ArrayLike,
        names: Sequence[str],
        length_m: npt.ArrayLike | None = None,
        meta: dict[str, Any] | None = None,
        largest_component: bool = True,
    ) -> RoadGraph:
        """Builds a graph from an edge list (any order), keeping the largest strongly
        connected component so that every kept node can reach every other."""
        return cls(**_build.csr_arrays(
            lat=lat, lon=lon, u=u, v=v, road_class=road_class, speed_mps=speed_mps,
            name_idx=name_idx, oneway=oneway, names=names, length_m=length_m, meta=meta,
            largest_component=largest_component,
        ))  # fmt: skip

    # ------------------------------------------------------------- on disk
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the graph as one uncompressed ``.npz`` (atomically: temp file + rename)."""
        return _io.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RoadGraph:
        """Reads a graph written by :meth:`save`.

        Raises:
            GraphFormatError: the file is missing, corrupt or of another format version.
        """
        return _io.load(cls, path)

    @classmethod
    def configured(cls) -> RoadGraph:
        """The graph file named by ``$FOODMESH_ROADS_GRAPH`` (an import), else :meth:`default`."""
        return _io.configured(cls)

    @classmethod
    def default(cls, *, cache_dir: str | os.PathLike[str] | None = None) -> RoadGraph:
        """The embedded default city around San Francisco's seed coordinates.

        Generated deterministically on first use (a few seconds, with progress lines),
        cached as a file under :func:`default_cache_dir`, and kept in memory per process.
        """
        return _io.default(cls, cache_dir=cache_dir)

    # ------------------------------------------------------------- snapping
    def snap(self, lat: float, lon: float) -> Snap:
        """The nearest point on any road to ``(lat, lon)`` (exact, via the KD-tree).

        Raises:
            OutsideGraph: the position is not a valid latitude/longitude.
        """
        return _snap.snap(self, lat, lon)

    def node_snap(self, node: int) -> Snap:
        """A :class:`Snap` exactly on ``node`` (routes from it may leave by any edge)."""
        return _snap.node_snap(self, node)

    def snap_many(self, lats: npt.ArrayLike, lons: npt.ArrayLike) -> list[Snap]:
        """:meth:`snap` for many points at once (vectorised; invalid points raise)."""
        return _snap.snap_many(self, lats, lons)

    # ------------------------------------------------------------- weights
    def weights(
        self,
        *,
        depart_at: dt.datetime | None,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
    ) -> F64:
        """Travel time (s) of every edge at ``depart_at`` (``inf`` for a closed edge)."""
        return _weights.weights_for(self, depart_at, traffic, overrides).w

    def warm(self, *, traffic: TrafficModel | None = None) -> None:
        """Prepares the snapping index and the landmarks of every traffic bucket of a week
        (so a service's first queries are as fast as the rest)."""
        _landmarks.warm(self, traffic=traffic)

    # ------------------------------------------------------------- searches
    def route(
        self,
        origin: Point,
        destination: Point,
        *,
        depart_at: dt.datetime,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
        max_snap_m: float = DEFAULT_MAX_SNAP_M,
    ) -> Route:
        """The fastest route from ``origin`` to ``destination`` leaving at ``depart_at``.

        Points are ``(lat, lon)`` pairs (snapped here) or :class:`Snap` values. Traffic
        multipliers are those of the departure time, for the whole trip; with no
        ``traffic`` model, times are free flow.

        Raises:
            OutsideGraph: a point is not valid or farther than ``max_snap_m`` from a road.
            Unreachable: no open path joins the two points.
        """
        return _route.route(
            self, origin, destination, depart_at=depart_at, traffic=traffic,
            overrides=overrides, max_snap_m=max_snap_m,
        )  # fmt: skip

    def travel_times(
        self,
        origins: Sequence[Point],
        destination: Point,
        *,
        depart_at: dt.datetime,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
        max_snap_m: float = DEFAULT_MAX_SNAP_M,
        limit_s: float = math.inf,
    ) -> F64:
        """Fastest travel time (s) from each origin to one destination (many-to-one).

        One Dijkstra from the destination on the reversed graph (scipy), so 200
        drivers cost about as much as one. An unreachable origin, or one slower
        than ``limit_s``, gets ``inf``; a point too far from any road raises.

        Raises:
            OutsideGraph: the destination or an origin is off the map (``which`` says).
        """
        return _legs.travel_times(
            self, origins, destination, depart_at=depart_at, traffic=traffic,
            overrides=overrides, max_snap_m=max_snap_m, limit_s=limit_s,
        )  # fmt: skip

    def travel_times_from(
        self,
        origin: Point,
        destinations: Sequence[Point],
        *,
        depart_at: dt.datetime,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
        max_snap_m: float = DEFAULT_MAX_SNAP_M,
        limit_s: float = math.inf,
    ) -> F64:
        """Fastest travel time (s) from one origin to each destination (one-to-many)."""
        return _legs.travel_times_from(
            self, origin, destinations, depart_at=depart_at, traffic=traffic,
            overrides=overrides, max_snap_m=max_snap_m, limit_s=limit_s,
        )  # fmt: skip

    def legs(
        self,
        origins: Sequence[Point],
        destinations: Sequence[Point],
        *,
        depart_at: dt.datetime | None,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
        max_snap_m: float = DEFAULT_MAX_SNAP_M,
        limit_s: float = math.inf,
    ) -> _legs.Legs:
        """Time, length and free-flow time of many legs (origin ``i`` to destination ``i``).

        One search per distinct point on the side with fewer of them (many drivers to
        one restaurant: one), each leg's ends met as :meth:`route` meets them, so a
        leg's numbers are the route's. A leg no open road joins, or slower than
        ``limit_s``, gets ``inf``.

        Raises:
            OutsideGraph: a point is off the map (``which`` names ``origins[i]`` or
                ``destinations[i]``).
        """
        ws = _weights.weights_for(self, depart_at, traffic, overrides)
        return _legs.legs(
            self, origins, destinations, ws=ws, max_snap_m=max_snap_m, limit_s=limit_s
        )

    def reach(
        self,
        start: Point | int,
        *,
        reverse: bool = False,
        depart_at: dt.datetime | None = None,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
        values: F64 | None = None,
        max_snap_m: float = DEFAULT_MAX_SNAP_M,
        limit_s: float = math.inf,
    ) -> _legs.Reach:
        """The fastest time from ``start`` (a point, or a node id) to every node, or with
        ``reverse`` from every node to it, and per-edge ``values`` (E, k) summed along
        each of those paths (default: metres and free-flow seconds).

        Raises:
            OutsideGraph: ``start`` is off the map.
        """
        ws = _weights.weights_for(self, depart_at, traffic, overrides)
        return _legs.reach(
            self, start, ws=ws, reverse=reverse, values=values, max_snap_m=max_snap_m,
            limit_s=limit_s,
        )  # fmt: skip

    # -------------------------------------------- for benchmarks and tests
    def _weights_for(
        self,
        depart_at: dt.datetime | None,
        traffic: TrafficModel | None,
        overrides: Overrides | None,
    ) -> Weights:
        return _weights.weights_for(self, depart_at, traffic, overrides)

    def _forward(self, ws: Weights) -> csr_matrix:
        return _weights.forward(self, ws)

    def _reverse(self, ws: Weights) -> csr_matrix:
        return _weights.reverse(self, ws)

    def __repr__(self) -> str:
        return (
            f"RoadGraph({self.meta.get('name', '?')!r}, nodes={self.node_count:,}, "
            f"edges={self.edge_count:,})"
        )
