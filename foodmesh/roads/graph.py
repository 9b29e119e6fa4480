"""The road graph: CSR arrays on disk, nearest-road snapping, fastest routes, batch times.

Nodes are points (lat, lon); edges are directed, stored in CSR order (the edges
leaving node ``u`` are ``offsets[u]:offsets[u + 1]``), so an edge's id is its
position. A two-way street is two edges, each the other's ``twin``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from foodmesh.roads import _legs, _search
from foodmesh.roads.errors import GraphFormatError, OutsideGraph, Unreachable
from foodmesh.roads.geo import LocalPlane, haversine_np, valid_lat_lon
from foodmesh.roads.polyline import encode as encode_polyline
from foodmesh.roads.steps import build_steps
from foodmesh.roads.traffic import Overrides, TrafficModel
from foodmesh.roads.types import LatLon, RoadClass, Route, Snap

__all__ = ["FORMAT_VERSION", "RoadGraph", "default_cache_dir"]

log = logging.getLogger("foodmesh.roads")

FORMAT_VERSION = 1
#: Spacing of the points along every road that the snapping KD-tree indexes.
SNAP_SAMPLE_M = 25.0
#: How far from the nearest road a point may be before route() refuses it.
DEFAULT_MAX_SNAP_M = 1_000.0
#: Smallest travel time of an edge (OSM has zero-length ones between duplicate nodes).
_MIN_WEIGHT_S = 1e-3

#: Weight sets (traffic bucket x overrides) kept, each a few MB with its matrices.
_WEIGHT_SETS = 16
#: ALT landmarks computed per graph, and how many of them bound one query.
_LANDMARKS = 16
_ACTIVE_LANDMARKS = 4
#: Potentials are shrunk a hair so float rounding can never make them overestimate.
_H_SAFETY = 0.999
_WEEK_HOURS = [dt.datetime(2024, 1, 1 + d, hr) for d in range(7) for hr in range(24)]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Point = LatLon | Snap
_EdgeTimes = F64 | dict[int, float]


def default_cache_dir() -> Path:
    """Where generated graphs are cached: ``$FOODMESH_ROADS_DIR``, else the user's cache."""
    env = os.environ.get("FOODMESH_ROADS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "foodmesh" / "roads"


@dataclass(slots=True)
class _Weights:
    """Travel times of every edge under one traffic bucket and one set of overrides."""

    w: F64  # seconds; inf when closed
    mult: tuple[float, ...]
    fwd: csr_matrix | None = None
    rev: csr_matrix | None = None
    w_finite: F64 | None = None
    index: Any = None  # _trees.EdgeIndex under these weights, for batch searches


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
        self._validate()
        n = self.node_count
        self.sources = np.repeat(np.arange(n, dtype=np.int32), np.diff(self.offsets))
        self.free_flow_s = np.maximum(self.length_m / self.speed_mps, _MIN_WEIGHT_S)
        self.max_speed_mps = float(self.speed_mps.max()) if self.edge_count else 1.0
        self._keys_sorted: I64 = np.empty(0, dtype=np.int64)
        self._keys_order: I64 = np.empty(0, dtype=np.int64)
        self.twin = self._twins()
        self._parallel = self._parallels()
        self.heading_deg = self._headings()
        lat0 = float(self.meta.get("center_lat", float(np.mean(self.lat)) if n else 0.0))
        lon0 = float(self.meta.get("center_lon", float(np.mean(self.lon)) if n else 0.0))
        self.plane = LocalPlane(lat0, lon0)
        self.x, self.y = self.plane.to_xy(self.lat, self.lon)
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._tree: cKDTree | None = None
        self._sample_edge: npt.NDArray[np.int32] | None = None
        self._weights: OrderedDict[Any, _Weights] = OrderedDict()
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
        tree, sample_edge = self._snap_index()
        x, y = self.plane.to_xy(lat, lon)
        hits = tree.query_ball_point([float(x), float(y)], radius_m + SNAP_SAMPLE_M / 2)
        if not hits:
            return []
        cand = np.unique(sample_edge[np.asarray(hits)])
        _, d = self._project(cand, float(x), float(y))
        near = cand[d <= radius_m]
        tw = self.twin[near]
        both = np.concatenate([near, tw[tw >= 0]])
        return sorted(int(e) for e in np.unique(both))

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
        lat_a = np.asarray(lat, dtype=np.float64)
        lon_a = np.asarray(lon, dtype=np.float64)
        u_a = np.asarray(u, dtype=np.int64)
        v_a = np.asarray(v, dtype=np.int64)
        cls_a = np.asarray(road_class, dtype=np.uint8)
        spd_a = np.asarray(speed_mps, dtype=np.float64)
        nm_a = np.asarray(name_idx, dtype=np.int32)
        ow_a = np.asarray(oneway, dtype=np.bool_)
        keep_e = u_a != v_a
        u_a, v_a, cls_a, spd_a, nm_a, ow_a = (
            a[keep_e] for a in (u_a, v_a, cls_a, spd_a, nm_a, ow_a)
        )
        if length_m is None:
            len_a = haversine_np(lat_a[u_a], lon_a[u_a], lat_a[v_a], lon_a[v_a])
        else:
            len_a = np.asarray(length_m, dtype=np.float64)[keep_e]
        n = lat_a.shape[0]
        if largest_component and len(u_a):
            from scipy.sparse.csgraph import connected_components

            m = csr_matrix((np.ones(len(u_a)), (u_a, v_a)), shape=(n, n))
            _, labels = connected_components(m, directed=True, connection="strong")
            # Isolated nodes form components of their own; count only nodes with edges.
            used = np.zeros(n, dtype=bool)
            used[u_a] = True
            used[v_a] = True
            counts = np.bincount(labels[used])
            big = int(np.argmax(counts))
            keep_n = labels == big
        else:
            keep_n = np.zeros(n, dtype=bool)
            keep_n[u_a] = True
            keep_n[v_a] = True
        new_id = np.full(n, -1, dtype=np.int64)
        new_id[keep_n] = np.arange(int(keep_n.sum()))
        keep_e = keep_n[u_a] & keep_n[v_a]
        u2, v2 = new_id[u_a[keep_e]], new_id[v_a[keep_e]]
        order = np.lexsort((v2, u2))
        u2, v2 = u2[order], v2[order]
        nn = int(keep_n.sum())
        offsets = np.zeros(nn + 1, dtype=np.int64)
        np.cumsum(np.bincount(u2, minlength=nn), out=offsets[1:])
        return cls(
            lat=lat_a[keep_n],
            lon=lon_a[keep_n],
            offsets=offsets,
            targets=v2,
            length_m=len_a[keep_e][order],
            road_class=cls_a[keep_e][order],
            speed_mps=spd_a[keep_e][order],
            name_idx=nm_a[keep_e][order],
            oneway=ow_a[keep_e][order],
            names=names,
            meta=meta,
        )

    def _validate(self) -> None:
        n, m = self.lat.shape[0], self.targets.shape[0]
        problems = []
        if self.lon.shape[0] != n:
            problems.append("lat and lon differ in length")
        if self.offsets.shape[0] != n + 1 or (n + 1 and int(self.offsets[-1]) != m):
            problems.append("offsets do not match the node and edge counts")
        elif n and (self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0)):
            problems.append("offsets are not non-decreasing from 0")
        for name in ("length_m", "road_class", "speed_mps", "name_idx", "oneway"):
            if getattr(self, name).shape[0] != m:
                problems.append(f"{name} has {getattr(self, name).shape[0]} entries, not {m}")
        if m and (int(self.targets.min()) < 0 or int(self.targets.max()) >= n):
            problems.append("an edge points at a node that does not exist")
        if m and (np.any(~np.isfinite(self.length_m)) or np.any(self.length_m < 0)):
            problems.append("an edge length is negative or not finite")
        if m and (np.any(~np.isfinite(self.speed_mps)) or np.any(self.speed_mps <= 0)):
            problems.append("an edge speed is not a positive number")
        if m and int(self.road_class.max()) > max(RoadClass):
            problems.append("an edge has an unknown road class")
        if m and (int(self.name_idx.min()) < 0 or int(self.name_idx.max()) >= len(self.names)):
            problems.append("an edge names a street that is not in the name table")
        if n and (np.any(~np.isfinite(self.lat)) or np.any(np.abs(self.lat) > 90)):
            problems.append("a node latitude is not valid")
        if problems:
            raise GraphFormatError("not a valid road graph: " + "; ".join(problems))

    def _twins(self) -> npt.NDArray[np.int64]:
        n = np.int64(max(1, self.node_count))
        key = self.sources.astype(np.int64) * n + self.targets
        rkey = self.targets.astype(np.int64) * n + self.sources
        order = np.argsort(key, kind="stable")
        self._keys_sorted, self._keys_order = key[order], order
        pos = np.searchsorted(key[order], rkey)
        pos = np.minimum(pos, max(0, len(key) - 1))
        twin = np.full(self.edge_count, -1, dtype=np.int64)
        if self.edge_count:
            found = key[order][pos] == rkey
            twin[found] = order[pos[found]]
        return twin

    def _parallels(self) -> npt.NDArray[np.bool_]:
        """Edges whose segment carries more than one edge in some direction."""
        key = self._keys_sorted
        dup = np.zeros(len(key), dtype=bool)
        if len(key) > 1:
            same = key[1:] == key[:-1]
            dup[1:] |= same
            dup[:-1] |= same
        par = np.zeros(self.edge_count, dtype=bool)
        par[self._keys_order[dup]] = True
        tw = self.twin
        par |= np.where(tw >= 0, par[np.maximum(tw, 0)], False)
        # A segment whose reverse direction is doubled but that has no twin of its own.
        n = np.int64(max(1, self.node_count))
        rkey = self.targets.astype(np.int64) * n + self.sources
        lo = np.searchsorted(key, rkey, side="left")
        hi = np.searchsorted(key, rkey, side="right")
        return np.asarray(par | (hi - lo > 1))

    def _headings(self) -> F64:
        """Compass bearing of every edge, degrees in [0, 360)."""
        p1, p2 = np.radians(self.lat[self.sources]), np.radians(self.lat[self.targets])
        dl = np.radians(self.lon[self.targets] - self.lon[self.sources])
        yv = np.sin(dl) * np.cos(p2)
        xv = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
        return np.asarray(np.degrees(np.arctan2(yv, xv)) % 360.0)

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

    # ------------------------------------------------------------- on disk
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the graph as one uncompressed ``.npz`` (atomically: temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        import json

        with open(tmp, "wb") as f:
            np.savez(
                f,
                format_version=np.array(FORMAT_VERSION),
                lat=self.lat,
                lon=self.lon,
                offsets=self.offsets,
                targets=self.targets,
                length_m=self.length_m.astype(np.float32),
                road_class=self.road_class,
                speed_mps=self.speed_mps.astype(np.float32),
                name_idx=self.name_idx,
                oneway=self.oneway,
                names=np.array(self.names if self.names else [""], dtype=np.str_),
                meta=np.array(json.dumps(self.meta, sort_keys=True)),
            )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RoadGraph:
        """Reads a graph written by :meth:`save`.

        Raises:
            GraphFormatError: the file is missing, corrupt or of another format version.
        """
        import json
        import zipfile

        try:
            # Our own handle: np.load leaks the file it opened when the zip is corrupt.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                version = int(z["format_version"])
                if version != FORMAT_VERSION:
                    raise GraphFormatError(
                        f"{path}: graph format {version}, this code reads {FORMAT_VERSION}"
                    )
                arrays = {k: z[k] for k in z.files}
        except GraphFormatError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise GraphFormatError(f"{path}: not a readable road graph ({e})") from e
        names = [str(s) for s in arrays["names"].tolist()]
        return cls(
            lat=arrays["lat"],
            lon=arrays["lon"],
            offsets=arrays["offsets"],
            targets=arrays["targets"],
            length_m=arrays["length_m"],
            road_class=arrays["road_class"],
            speed_mps=arrays["speed_mps"],
            name_idx=arrays["name_idx"],
            oneway=arrays["oneway"],
            names=names,
            meta=json.loads(str(arrays["meta"])),
        )

    @classmethod
    def configured(cls) -> RoadGraph:
        """The graph file named by ``$FOODMESH_ROADS_GRAPH`` (an import), else :meth:`default`."""
        path = os.environ.get("FOODMESH_ROADS_GRAPH")
        if not path:
            return cls.default()
        p = Path(path)
        with _DEFAULT_LOCK:
            cached = _DEFAULT.get(p)
        if cached is None:
            cached = cls.load(p)
            with _DEFAULT_LOCK:
                _DEFAULT[p] = cached
        return cached

    @classmethod
    def default(cls, *, cache_dir: str | os.PathLike[str] | None = None) -> RoadGraph:
        """The embedded default city around San Francisco's seed coordinates.

        Generated deterministically on first use (a few seconds, with progress lines),
        cached as a file under :func:`default_cache_dir`, and kept in memory per process.
        """
        from foodmesh.roads.city import CITY_VERSION, generate_city

        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = directory / f"default-city-v{CITY_VERSION}-f{FORMAT_VERSION}.npz"
        with _DEFAULT_LOCK:
            cached = _DEFAULT.get(path)
            if cached is not None:
                return cached
            graph: RoadGraph | None = None
            if path.exists():
                try:
                    t0 = time.perf_counter()
                    graph = cls.load(path)
                    log.debug("loaded %s in %.3fs", path, time.perf_counter() - t0)
                except GraphFormatError as e:
                    log.warning("regenerating the default city: %s", e)
            if graph is None:
                graph = generate_city()
                try:
                    graph.save(path)
                    log.info("cached the default city at %s", path)
                except OSError as e:  # a read-only home still gets a working graph
                    log.warning("could not cache the default city at %s: %s", path, e)
            _DEFAULT[path] = graph
            return graph

    # ------------------------------------------------------------- snapping
    def _snap_index(self) -> tuple[cKDTree, npt.NDArray[np.int32]]:
        if self._tree is not None and self._sample_edge is not None:
            return self._tree, self._sample_edge
        with self._lock:
            if self._tree is None or self._sample_edge is None:
                # One direction of each two-way street is enough: both share the geometry.
                edges = np.flatnonzero((self.twin < 0) | (np.arange(self.edge_count) < self.twin))
                src, dst = self.sources[edges], self.targets[edges]
                k = np.maximum(1, np.ceil(self.length_m[edges] / SNAP_SAMPLE_M)).astype(np.int64)
                rep = np.repeat(np.arange(len(edges)), k + 1)
                start = np.repeat(np.cumsum(k + 1) - (k + 1), k + 1)
                frac = (np.arange(len(rep)) - start) / np.repeat(k, k + 1)
                xs = self.x[src][rep] + (self.x[dst][rep] - self.x[src][rep]) * frac
                ys = self.y[src][rep] + (self.y[dst][rep] - self.y[src][rep]) * frac
                self._sample_edge = edges[rep].astype(np.int32)
                self._tree = cKDTree(np.column_stack([xs, ys]))
        assert self._tree is not None and self._sample_edge is not None
        return self._tree, self._sample_edge

    def _project(self, edges: npt.NDArray[Any], px: Any, py: Any) -> tuple[F64, F64]:
        """Projects points onto edges (element-wise): the fraction along, and the distance."""
        ax, ay = self.x[self.sources[edges]], self.y[self.sources[edges]]
        bx, by = self.x[self.targets[edges]], self.y[self.targets[edges]]
        dx, dy = bx - ax, by - ay
        l2 = dx * dx + dy * dy
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(l2 > 0, ((px - ax) * dx + (py - ay) * dy) / np.where(l2 > 0, l2, 1), 0)
        t = np.clip(t, 0.0, 1.0)
        return t, np.hypot(ax + t * dx - px, ay + t * dy - py)

    def _make_snap(self, edge: int, t: float, dist: float) -> Snap:
        s, d = int(self.sources[edge]), int(self.targets[edge])
        x = self.x[s] + (self.x[d] - self.x[s]) * t
        y = self.y[s] + (self.y[d] - self.y[s]) * t
        lat, lon = self.plane.to_latlon(x, y)
        return Snap(
            lat=float(lat),
            lon=float(lon),
            edge=edge,
            twin=int(self.twin[edge]),
            source=s,
            target=d,
            fraction=float(t),
            distance_m=float(dist),
            street=self.street(edge),
        )

    def snap(self, lat: float, lon: float) -> Snap:
        """The nearest point on any road to ``(lat, lon)`` (exact, via the KD-tree).

        Raises:
            OutsideGraph: the position is not a valid latitude/longitude.
        """
        if not valid_lat_lon(lat, lon):
            raise OutsideGraph("point", math.inf, math.inf)
        if self.edge_count == 0:
            raise OutsideGraph("point", math.inf, math.inf)
        tree, sample_edge = self._snap_index()
        x, y = self.plane.to_xy(lat, lon)
        px, py = float(x), float(y)
        k = min(16, tree.n)
        dists, idx = tree.query([px, py], k=k)
        dists, idx = np.atleast_1d(dists), np.atleast_1d(idx)
        cand = np.unique(sample_edge[idx])
        t, d = self._project(cand, px, py)
        best = int(np.argmin(d))
        # Exact when every sample within (best + half a spacing) was a candidate.
        if k < tree.n and dists[-1] <= d[best] + SNAP_SAMPLE_M / 2:
            hits = tree.query_ball_point([px, py], float(d[best]) + SNAP_SAMPLE_M / 2)
            cand = np.unique(sample_edge[np.asarray(hits, dtype=np.int64)])
            t, d = self._project(cand, px, py)
            best = int(np.argmin(d))
        return self._make_snap(int(cand[best]), float(t[best]), float(d[best]))

    def node_snap(self, node: int) -> Snap:
        """A :class:`Snap` exactly on ``node`` (routes from it may leave by any edge)."""
        if not 0 <= node < self.node_count:
            raise OutsideGraph("node", math.inf, math.inf)
        lo, hi = int(self.offsets[node]), int(self.offsets[node + 1])
        if hi > lo:
            return self._make_snap(lo, 0.0, 0.0)
        into = np.flatnonzero(self.targets == node)
        if into.size == 0:
            raise OutsideGraph("node", math.inf, math.inf)
        return self._make_snap(int(into[0]), 1.0, 0.0)

    def snap_many(self, lats: npt.ArrayLike, lons: npt.ArrayLike) -> list[Snap]:
        """:meth:`snap` for many points at once (vectorised; invalid points raise)."""
        la = np.asarray(lats, dtype=np.float64).ravel()
        lo = np.asarray(lons, dtype=np.float64).ravel()
        if la.shape != lo.shape:
            raise ValueError("lats and lons differ in length")
        bad = ~(np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180))
        if np.any(bad):
            raise OutsideGraph(f"points[{int(np.flatnonzero(bad)[0])}]", math.inf, math.inf)
        if la.size == 0:
            return []
        edge, t, dist = self._snap_arrays(la, lo)
        return [
            self._make_snap(e, f, dd)
            for e, f, dd in zip(edge.tolist(), t.tolist(), dist.tolist(), strict=True)
        ]

    def _snap_arrays(self, la: F64, lo: F64) -> tuple[I64, F64, F64]:
        """Nearest edge, fraction along it and distance for valid points (vectorised)."""
        if self.edge_count == 0:
            raise OutsideGraph("points[0]", math.inf, math.inf)
        tree, sample_edge = self._snap_index()
        px, py = self.plane.to_xy(la, lo)
        k = min(16, tree.n)
        dists, idx = tree.query(np.column_stack([px, py]), k=k)
        dists, idx = dists.reshape(len(la), k), idx.reshape(len(la), k)
        cand = sample_edge[idx]  # (n, k)
        t, d = self._project(cand, px[:, None], py[:, None])
        best = np.argmin(d, axis=1)
        rows = np.arange(len(la))
        edge = cand[rows, best].astype(np.int64)
        frac = t[rows, best]
        dist = d[rows, best]
        # Exact unless a sample beyond the k nearest could still be closer: redo those alone.
        if k < tree.n:
            for i in np.flatnonzero(dists[:, -1] <= dist + SNAP_SAMPLE_M / 2).tolist():
                s = self.snap(float(la[i]), float(lo[i]))
                edge[i], frac[i], dist[i] = s.edge, s.fraction, s.distance_m
        return edge, frac, dist

    def _snap_arg(self, p: Point, which: str, max_snap_m: float) -> Snap:
        if isinstance(p, Snap):
            return p
        try:
            lat, lon = float(p[0]), float(p[1])
        except (TypeError, ValueError, IndexError):
            raise OutsideGraph(which, math.inf, max_snap_m) from None
        if not valid_lat_lon(lat, lon):
            raise OutsideGraph(which, math.inf, max_snap_m)
        s = self.snap(lat, lon)
        if s.distance_m > max_snap_m:
            raise OutsideGraph(which, s.distance_m, max_snap_m)
        return s

    # ------------------------------------------------------------- weights
    def weights(
        self,
        *,
        depart_at: dt.datetime | None,
        traffic: TrafficModel | None = None,
        overrides: Overrides | None = None,
    ) -> F64:
        """Travel time (s) of every edge at ``depart_at`` (``inf`` for a closed edge)."""
        return self._weights_for(depart_at, traffic, overrides).w

    def _weights_for(
        self,
        depart_at: dt.datetime | None,
        traffic: TrafficModel | None,
        overrides: Overrides | None,
    ) -> _Weights:
        if traffic is not None and depart_at is not None:
            mult = tuple(float(m) for m in traffic.multipliers(depart_at))
        else:
            mult = (1.0,) * len(RoadClass)
        ov = overrides if overrides else None
        key = (mult, ov)
        with self._lock:
            hit = self._weights.get(key)
            if hit is not None:
                self._weights.move_to_end(key)
                return hit
        w = self.free_flow_s * np.asarray(mult, dtype=np.float64)[self.road_class]
        if ov is not None:
            if ov.slowdowns:
                ids = np.fromiter((e for e, _ in ov.slowdowns), dtype=np.int64)
                fs = np.fromiter((f for _, f in ov.slowdowns), dtype=np.float64)
                ok = (ids >= 0) & (ids < self.edge_count)
                w[ids[ok]] *= fs[ok]
            if ov.closed:
                ids = np.fromiter(ov.closed, dtype=np.int64)
                w[ids[(ids >= 0) & (ids < self.edge_count)]] = np.inf
        entry = _Weights(w=w, mult=mult)
        with self._lock:
            self._weights[key] = entry
            while len(self._weights) > _WEIGHT_SETS:
                self._weights.popitem(last=False)
        return entry

    def _forward(self, ws: _Weights) -> csr_matrix:
        if ws.fwd is None:
            ok = np.isfinite(ws.w)
            if ok.all():
                ws.fwd = csr_matrix(
                    (ws.w, self.targets, self.offsets), shape=(self.node_count,) * 2
                )
            else:
                ws.fwd = _csr(self.sources[ok], self.targets[ok], ws.w[ok], self.node_count)
        return ws.fwd

    def _reverse(self, ws: _Weights) -> csr_matrix:
        if ws.rev is None:
            ok = np.isfinite(ws.w)
            ws.rev = _csr(self.targets[ok], self.sources[ok], ws.w[ok], self.node_count)
        return ws.rev

    def _workspace(self) -> _search.Workspace:
        ws: _search.Workspace | None = getattr(self._tls, "workspace", None)
        if ws is None:
            ws = self._tls.workspace = _search.Workspace(self.offsets, self.targets, self.sources)
        return ws

    def _landmark_tables(self, ws: _Weights) -> tuple[F64, F64]:
        """ALT landmarks for one traffic bucket: times from and to each landmark.

        Computed on the bucket's weights before overrides; overrides only slow
        edges down or close them, so the bounds stay valid under any of them.
        """
        key = ws.mult
        with self._lock:
            hit = self._alt.get(key)
            if hit is not None:
                return hit
        t0 = time.perf_counter()
        base = self.free_flow_s * np.asarray(key, dtype=np.float64)[self.road_class]
        n = self.node_count
        fwd = csr_matrix((base, self.targets, self.offsets), shape=(n, n))
        rev = _csr(self.targets, self.sources, base, n)
        lm = _pick_landmarks(self.x, self.y, _LANDMARKS)
        d_from = np.asarray(dijkstra(fwd, directed=True, indices=lm))
        d_to = np.asarray(dijkstra(rev, directed=True, indices=lm))
        # A node some landmark cannot reach (or be reached from) gets no bound from it.
        d_from[~np.isfinite(d_from)] = np.nan
        d_to[~np.isfinite(d_to)] = np.nan
        tables = (d_from, d_to)
        with self._lock:
            self._alt[key] = tables
            while len(self._alt) > 16:
                self._alt.popitem(last=False)
        log.debug("ALT landmarks for %s ready in %.3fs", key, time.perf_counter() - t0)
        return tables

    def _potentials(self, start: int, d: Snap, ws: _Weights) -> F64:
        """A* potentials: per node, a lower bound on the time to the destination point.

        ALT: for a landmark L, time(v -> D) >= time(L -> D) - time(L -> v) and
        >= time(v -> L) - time(D -> L), all on the bucket's weights before overrides
        (which only ever slow things down). The landmarks that bound the start best
        are used.
        """
        n = self.node_count
        if n == 0:
            return np.zeros(0)
        d_from, d_to = self._landmark_tables(ws)
        bw = {  # only the edges of D's segment are read below
            e: float(self.free_flow_s[e]) * ws.mult[int(self.road_class[e])]
            for e in self._positions(d)
        }
        ins = self._ends(d, bw)  # (node, base time from it to D)
        outs = self._starts(d, bw)  # (node, base time from D to it)
        to_d = np.min([d_from[:, v] + c for v, c, _ in ins], axis=0)  # L -> D
        from_d = np.min([c + d_to[:, v] for v, c, _ in outs], axis=0)  # D -> L
        with np.errstate(invalid="ignore"):
            at_start = np.fmax(to_d - d_from[:, start], d_to[:, start] - from_d)
        pick = np.argsort(-np.nan_to_num(at_start, nan=-np.inf))[:_ACTIVE_LANDMARKS]
        h = np.zeros(n)
        with np.errstate(invalid="ignore"):
            for k in pick:
                if math.isfinite(to_d[k]):
                    np.fmax(h, to_d[k] - d_from[k], out=h)
                if math.isfinite(from_d[k]):
                    np.fmax(h, d_to[k] - from_d[k], out=h)
        h *= _H_SAFETY
        return h

    def warm(self, *, traffic: TrafficModel | None = None) -> None:
        """Prepares the snapping index and the landmarks of every traffic bucket of a week
        (so a service's first queries are as fast as the rest)."""
        self._snap_index()
        keys = {
            tuple(float(m) for m in traffic.multipliers(t)) if traffic else (1.0,) * len(RoadClass)
            for t in _WEEK_HOURS
        }
        for key in keys:
            self._landmark_tables(_Weights(w=self.free_flow_s, mult=key))

    # ------------------------------------------------------------- routing
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
        o = self._snap_arg(origin, "origin", max_snap_m)
        d = self._snap_arg(destination, "destination", max_snap_m)
        ws = self._weights_for(depart_at, traffic, overrides)
        goals = self._ends(d, ws.w)
        if ws.w_finite is None:
            ws.w_finite = _search.finite_weights(ws.w)
        found = _search.astar(
            self._workspace(),
            ws.w_finite,
            self._potentials(o.target, d, ws),
            sources=self._starts(o, ws.w),
            goals=goals,
            direct=self._direct(o, d, ws.w),
        )
        if found is None:
            raise Unreachable(
                f"no open road from ({o.lat:.5f}, {o.lon:.5f}) to ({d.lat:.5f}, {d.lon:.5f})"
            )
        return self._assemble(o, d, found, ws)

    def _at_node(self, s: Snap) -> int:
        """The node a snapped point sits on (within a centimetre), else -1."""
        length = float(self.length_m[s.edge])
        if s.fraction * length <= 0.01:
            return s.source
        if (1.0 - s.fraction) * length <= 0.01:
            return s.target
        return -1

    def _starts(self, o: Snap, w: _EdgeTimes) -> list[tuple[int, float, int]]:
        """(node, cost to reach it from the snapped point, edge used) for a search start:
        the fastest way off the point's segment towards each of its two ends.

        A point on a node starts there (edge -1) with every road out of it open.
        """
        node = self._at_node(o)
        best: dict[int, tuple[float, int]] = {node: (0.0, -1)} if node >= 0 else {}
        for e, pos in self._positions(o).items():
            we = float(w[e])
            if math.isfinite(we):
                v, c = int(self.targets[e]), (1.0 - pos) * we
                if v not in best or c < best[v][0]:
                    best[v] = (c, e)
        return [(v, c, e) for v, (c, e) in best.items()]

    def _ends(self, d: Snap, w: _EdgeTimes) -> list[tuple[int, float, int]]:
        """(node, cost from it to the snapped point, edge used) for a search goal."""
        node = self._at_node(d)
        best: dict[int, tuple[float, int]] = {node: (0.0, -1)} if node >= 0 else {}
        for e, pos in self._positions(d).items():
            we = float(w[e])
            if math.isfinite(we):
                u, c = int(self.sources[e]), pos * we
                if u not in best or c < best[u][0]:
                    best[u] = (c, e)
        return [(u, c, e) for u, (c, e) in best.items()]

    def _positions(self, s: Snap) -> dict[int, float]:
        """Every edge drawn along the snapped point's segment (its twin and any parallel
        edges too), with the point's position along each as a fraction."""
        a, b = s.source, s.target
        out: dict[int, float] = {}
        for u, v, pos in ((a, b, s.fraction), (b, a, 1.0 - s.fraction)):
            for e in range(int(self.offsets[u]), int(self.offsets[u + 1])):
                if int(self.targets[e]) == v:
                    out[e] = pos
        return out

    def _direct(self, o: Snap, d: Snap, w: F64) -> tuple[float, int] | None:
        """Cost of staying on one edge when both points lie on it in driving order."""
        if {o.source, o.target} != {d.source, d.target}:
            return None
        best: tuple[float, int] | None = None
        at_d = self._positions(d)
        for e, a in self._positions(o).items():
            bpos = at_d.get(e)
            if bpos is None or bpos < a or not math.isfinite(w[e]):
                continue
            c = (bpos - a) * float(w[e])
            if best is None or c < best[0]:
                best = (c, e)
        return best

    def _assemble(self, o: Snap, d: Snap, found: _search.Found, ws: _Weights) -> Route:
        pts: list[LatLon] = [(o.lat, o.lon)]
        if found.direct_edge >= 0:
            e = found.direct_edge
            span = self._positions(d)[e] - self._positions(o)[e]
            legs = [(e, span)]
        else:
            first, last = found.first_edge, found.last_edge
            legs = []
            if first >= 0:
                legs.append((first, 1.0 - self._positions(o)[first]))
            nodes = found.nodes
            legs.extend((int(e), 1.0) for e in self.edges_along(nodes, ws.w))
            pts.extend(zip(self.lat[nodes].tolist(), self.lon[nodes].tolist(), strict=True))
            if last >= 0:
                legs.append((last, self._positions(d)[last]))
        pts.append((d.lat, d.lon))
        dedup: list[LatLon] = [pts[0]]
        for p in pts[1:]:
            if p != dedup[-1]:
                dedup.append(p)
        legs = [(e, f) for e, f in legs if f > 0.0]
        edges = [e for e, _ in legs]
        fr = np.array([f for _, f in legs], dtype=np.float64)
        ids = np.array(edges, dtype=np.int64)
        distance = float(np.sum(self.length_m[ids] * fr))
        duration = float(np.sum(ws.w[ids] * fr))
        free = float(np.sum(self.free_flow_s[ids] * fr))
        steps = build_steps(self, legs, ws.w, o, d)
        return Route(
            distance_m=distance,
            duration_s=duration,
            free_flow_s=free,
            path=tuple(dedup),
            polyline=encode_polyline(dedup),
            steps=tuple(steps),
            origin=o,
            destination=d,
            edges=tuple(edges),
        )

    # ------------------------------------------------------- one-to-many
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
        d = self._snap_arg(destination, "destination", max_snap_m)
        edge, frac = self._snap_points(origins, "origins", max_snap_m)
        ws = self._weights_for(depart_at, traffic, overrides)
        ends = self._ends(d, ws.w)
        if not ends:
            return np.full(len(edge), np.inf)
        to_dest = self._multi_source(ws, reverse=True).dijkstra(
            [n for n, _, _ in ends], [c for _, c, _ in ends], limit=limit_s
        )
        return self._combine(edge, frac, ws.w, to_dest, d, limit_s, reverse=False)

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
        o = self._snap_arg(origin, "origin", max_snap_m)
        edge, frac = self._snap_points(destinations, "destinations", max_snap_m)
        ws = self._weights_for(depart_at, traffic, overrides)
        starts = self._starts(o, ws.w)
        if not starts:
            return np.full(len(edge), np.inf)
        from_o = self._multi_source(ws, reverse=False).dijkstra(
            [n for n, _, _ in starts], [c for _, c, _ in starts], limit=limit_s
        )
        return self._combine(edge, frac, ws.w, from_o, o, limit_s, reverse=True)

    # ------------------------------------------------------ many-to-many
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
        ws = self._weights_for(depart_at, traffic, overrides)
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
        ws = self._weights_for(depart_at, traffic, overrides)
        return _legs.reach(
            self, start, ws=ws, reverse=reverse, values=values, max_snap_m=max_snap_m,
            limit_s=limit_s,
        )  # fmt: skip

    def _multi_source(self, ws: _Weights, *, reverse: bool) -> _search.MultiSource:
        cache: dict[tuple[int, bool], tuple[_Weights, _search.MultiSource]] | None = getattr(
            self._tls, "multi", None
        )
        if cache is None:
            cache = self._tls.multi = {}
        hit = cache.get((id(ws), reverse))
        if hit is not None and hit[0] is ws:
            return hit[1]
        ms = _search.MultiSource(self._reverse(ws) if reverse else self._forward(ws))
        if len(cache) >= 8:
            cache.clear()
        cache[(id(ws), reverse)] = (ws, ms)
        return ms

    def _combine(
        self,
        edge: I64,
        frac: F64,
        w: F64,
        field: F64,
        fixed: Snap,
        limit_s: float,
        *,
        reverse: bool,
    ) -> F64:
        """Per snapped point (edge, fraction), the best time through either end of its edge.

        ``field`` holds times from every node to ``fixed`` (``reverse`` False: the points
        are origins) or from ``fixed`` to every node (``reverse`` True: destinations).
        """
        src, dst = self.sources[edge], self.targets[edge]
        tw = self.twin[edge]
        has_tw = tw >= 0
        tw_safe = np.where(has_tw, tw, 0)
        length = self.length_m[edge]
        with np.errstate(invalid="ignore"):
            if not reverse:  # leave the point forward along its edge, or back along the twin
                a = (1.0 - frac) * w[edge] + field[dst]
                b = np.where(has_tw, frac * w[tw_safe] + field[src], np.inf)
            else:  # arrive along the edge from its source, or along the twin from its source
                a = field[src] + frac * w[edge]
                b = np.where(has_tw, field[dst] + (1.0 - frac) * w[tw_safe], np.inf)
        best = np.fmin(a, b)
        at_src = frac * length <= 0.01
        at_dst = (1.0 - frac) * length <= 0.01
        best = np.where(at_src, np.fmin(best, field[src]), best)
        best = np.where(at_dst, np.fmin(best, field[dst]), best)
        best = np.where(np.isnan(best), np.inf, best)
        # Points on the fixed point's own street may get there without leaving it.
        ends = [fixed.source, fixed.target]
        same = np.isin(src, ends) & np.isin(dst, ends) & (src != dst)
        # Rare cases done one by one: the fixed point's own street (no need to leave it),
        # and streets drawn twice in the same direction (parallel edges, from OSM).
        for i in np.flatnonzero(same | self._parallel[edge]).tolist():
            p = self._make_snap(int(edge[i]), float(frac[i]), 0.0)
            if reverse:
                ways = [field[u] + c for u, c, _ in self._ends(p, w)]
                direct = self._direct(fixed, p, w)
            else:
                ways = [c + field[v] for v, c, _ in self._starts(p, w)]
                direct = self._direct(p, fixed, w)
            if direct is not None:
                ways.append(direct[0])
            best[i] = min(ways, default=math.inf)
        return np.where(best <= limit_s, best, np.inf)

    def _snap_points(
        self, points: Sequence[Point], which: str, max_snap_m: float
    ) -> tuple[I64, F64]:
        """Snaps many points at once: each one's edge and fraction along it."""
        n = len(points)
        edge = np.zeros(n, dtype=np.int64)
        frac = np.zeros(n)
        raw = [i for i, p in enumerate(points) if not isinstance(p, Snap)]
        for i, p in enumerate(points):
            if isinstance(p, Snap):
                if p.distance_m > max_snap_m:
                    raise OutsideGraph(f"{which}[{i}]", p.distance_m, max_snap_m)
                edge[i], frac[i] = p.edge, p.fraction
        if raw:
            try:
                ll = np.array([(float(points[i][0]), float(points[i][1])) for i in raw])  # type: ignore[index]
            except (TypeError, ValueError, IndexError):
                raise OutsideGraph(which, math.inf, max_snap_m) from None
            ok = np.isfinite(ll).all(axis=1) & (np.abs(ll[:, 0]) <= 90) & (np.abs(ll[:, 1]) <= 180)
            if not ok.all():
                raise OutsideGraph(
                    f"{which}[{raw[int(np.flatnonzero(~ok)[0])]}]", math.inf, max_snap_m
                )
            e, t, dist = self._snap_arrays(ll[:, 0], ll[:, 1])
            far = np.flatnonzero(dist > max_snap_m)
            if far.size:
                j = int(far[0])
                raise OutsideGraph(f"{which}[{raw[j]}]", float(dist[j]), max_snap_m)
            edge[raw], frac[raw] = e, t
        return edge, frac

    def __repr__(self) -> str:
        return (
            f"RoadGraph({self.meta.get('name', '?')!r}, nodes={self.node_count:,}, "
            f"edges={self.edge_count:,})"
        )


def _csr(rows: npt.NDArray[Any], cols: npt.NDArray[Any], data: F64, n: int) -> csr_matrix:
    """A CSR matrix that keeps parallel edges apart (scipy's COO input would sum them)."""
    order = np.argsort(rows, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    return csr_matrix((data[order], cols[order].astype(np.int32), ptr), shape=(n, n))


def _pick_landmarks(x: F64, y: F64, k: int) -> list[int]:
    """Landmarks on the rim: in each of ``k`` angular sectors, the node farthest out."""
    cx, cy = float(np.mean(x)), float(np.mean(y))
    ang = np.arctan2(y - cy, x - cx)
    r = np.hypot(x - cx, y - cy)
    sector = ((ang + math.pi) / (2 * math.pi) * k).astype(np.int64) % k
    out: list[int] = []
    for s in range(k):
        idx = np.flatnonzero(sector == s)
        if idx.size:
            out.append(int(idx[np.argmax(r[idx])]))
    return out or [0]


_DEFAULT: dict[Path, RoadGraph] = {}
_DEFAULT_LOCK = threading.Lock()
