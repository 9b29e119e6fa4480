"""Snapping: the nearest point of any road to a position, through a KD-tree of points
sampled along every street (built once per graph, on first use or by ``warm``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from foodmesh.roads.errors import OutsideGraph
from foodmesh.roads.geo import valid_lat_lon
from foodmesh.roads.types import LatLon, Snap

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = [
    "DEFAULT_MAX_SNAP_M",
    "SNAP_SAMPLE_M",
    "Point",
    "edges_near",
    "make_snap",
    "node_snap",
    "snap",
    "snap_arg",
    "snap_many",
    "snap_points",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Point = LatLon | Snap
#: Spacing of the points along every road that the snapping KD-tree indexes.
SNAP_SAMPLE_M = 25.0
#: How far from the nearest road a point may be before a search refuses it.
DEFAULT_MAX_SNAP_M = 1_000.0


def snap_index(g: RoadGraph) -> tuple[cKDTree, npt.NDArray[np.int32]]:
    if g._tree is not None and g._sample_edge is not None:
        return g._tree, g._sample_edge
    with g._lock:
        if g._tree is None or g._sample_edge is None:
            # One direction of each two-way street is enough: both share the geometry.
            edges = np.flatnonzero((g.twin < 0) | (np.arange(g.edge_count) < g.twin))
            src, dst = g.sources[edges], g.targets[edges]
            k = np.maximum(1, np.ceil(g.length_m[edges] / SNAP_SAMPLE_M)).astype(np.int64)
            rep = np.repeat(np.arange(len(edges)), k + 1)
            start = np.repeat(np.cumsum(k + 1) - (k + 1), k + 1)
            frac = (np.arange(len(rep)) - start) / np.repeat(k, k + 1)
            xs = g.x[src][rep] + (g.x[dst][rep] - g.x[src][rep]) * frac
            ys = g.y[src][rep] + (g.y[dst][rep] - g.y[src][rep]) * frac
            g._sample_edge = edges[rep].astype(np.int32)
            g._tree = cKDTree(np.column_stack([xs, ys]))
    assert g._tree is not None and g._sample_edge is not None
    return g._tree, g._sample_edge


def project(g: RoadGraph, edges: npt.NDArray[Any], px: Any, py: Any) -> tuple[F64, F64]:
    """Projects points onto edges (element-wise): the fraction along, and the distance."""
    ax, ay = g.x[g.sources[edges]], g.y[g.sources[edges]]
    bx, by = g.x[g.targets[edges]], g.y[g.targets[edges]]
    dx, dy = bx - ax, by - ay
    l2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(l2 > 0, ((px - ax) * dx + (py - ay) * dy) / np.where(l2 > 0, l2, 1), 0)
    t = np.clip(t, 0.0, 1.0)
    return t, np.hypot(ax + t * dx - px, ay + t * dy - py)


def make_snap(g: RoadGraph, edge: int, t: float, dist: float) -> Snap:
    s, d = int(g.sources[edge]), int(g.targets[edge])
    x = g.x[s] + (g.x[d] - g.x[s]) * t
    y = g.y[s] + (g.y[d] - g.y[s]) * t
    lat, lon = g.plane.to_latlon(x, y)
    return Snap(
        lat=float(lat),
        lon=float(lon),
        edge=edge,
        twin=int(g.twin[edge]),
        source=s,
        target=d,
        fraction=float(t),
        distance_m=float(dist),
        street=g.street(edge),
    )


def snap(g: RoadGraph, lat: float, lon: float) -> Snap:
    """The nearest point on any road to ``(lat, lon)`` (exact, via the KD-tree).

    Raises:
        OutsideGraph: the position is not a valid latitude/longitude.
    """
    if not valid_lat_lon(lat, lon):
        raise OutsideGraph("point", math.inf, math.inf)
    if g.edge_count == 0:
        raise OutsideGraph("point", math.inf, math.inf)
    tree, sample_edge = snap_index(g)
    x, y = g.plane.to_xy(lat, lon)
    px, py = float(x), float(y)
    k = min(16, tree.n)
    dists, idx = tree.query([px, py], k=k)
    dists, idx = np.atleast_1d(dists), np.atleast_1d(idx)
    cand = np.unique(sample_edge[idx])
    t, d = project(g, cand, px, py)
    best = int(np.argmin(d))
    # Exact when every sample within (best + half a spacing) was a candidate.
    if k < tree.n and dists[-1] <= d[best] + SNAP_SAMPLE_M / 2:
        hits = tree.query_ball_point([px, py], float(d[best]) + SNAP_SAMPLE_M / 2)
        cand = np.unique(sample_edge[np.asarray(hits, dtype=np.int64)])
        t, d = project(g, cand, px, py)
        best = int(np.argmin(d))
    return make_snap(g, int(cand[best]), float(t[best]), float(d[best]))


def node_snap(g: RoadGraph, node: int) -> Snap:
    """A :class:`Snap` exactly on ``node`` (routes from it may leave by any edge)."""
    if not 0 <= node < g.node_count:
        raise OutsideGraph("node", math.inf, math.inf)
    lo, hi = int(g.offsets[node]), int(g.offsets[node + 1])
    if hi > lo:
        return make_snap(g, lo, 0.0, 0.0)
    into = np.flatnonzero(g.targets == node)
    if into.size == 0:
        raise OutsideGraph("node", math.inf, math.inf)
    return make_snap(g, int(into[0]), 1.0, 0.0)


def snap_many(g: RoadGraph, lats: npt.ArrayLike, lons: npt.ArrayLike) -> list[Snap]:
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
    edge, t, dist = snap_arrays(g, la, lo)
    return [
        make_snap(g, e, f, dd)
        for e, f, dd in zip(edge.tolist(), t.tolist(), dist.tolist(), strict=True)
    ]


def snap_arrays(g: RoadGraph, la: F64, lo: F64) -> tuple[I64, F64, F64]:
    """Nearest edge, fraction along it and distance for valid points (vectorised)."""
    if g.edge_count == 0:
        raise OutsideGraph("points[0]", math.inf, math.inf)
    tree, sample_edge = snap_index(g)
    px, py = g.plane.to_xy(la, lo)
    k = min(16, tree.n)
    dists, idx = tree.query(np.column_stack([px, py]), k=k)
    dists, idx = dists.reshape(len(la), k), idx.reshape(len(la), k)
    cand = sample_edge[idx]  # (n, k)
    t, d = project(g, cand, px[:, None], py[:, None])
    best = np.argmin(d, axis=1)
    rows = np.arange(len(la))
    edge = cand[rows, best].astype(np.int64)
    frac = t[rows, best]
    dist = d[rows, best]
    # Exact unless a sample beyond the k nearest could still be closer: redo those alone.
    if k < tree.n:
        for i in np.flatnonzero(dists[:, -1] <= dist + SNAP_SAMPLE_M / 2).tolist():
            s = snap(g, float(la[i]), float(lo[i]))
            edge[i], frac[i], dist[i] = s.edge, s.fraction, s.distance_m
    return edge, frac, dist


def snap_arg(g: RoadGraph, p: Point, which: str, max_snap_m: float) -> Snap:
    if isinstance(p, Snap):
        return p
    try:
        lat, lon = float(p[0]), float(p[1])
    except (TypeError, ValueError, IndexError):
        raise OutsideGraph(which, math.inf, max_snap_m) from None
    if not valid_lat_lon(lat, lon):
        raise OutsideGraph(which, math.inf, max_snap_m)
    s = snap(g, lat, lon)
    if s.distance_m > max_snap_m:
        raise OutsideGraph(which, s.distance_m, max_snap_m)
    return s


def snap_points(
    g: RoadGraph, points: Sequence[Point], which: str, max_snap_m: float
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
            raise OutsideGraph(f"{which}[{raw[int(np.flatnonzero(~ok)[0])]}]", math.inf, max_snap_m)
        e, t, dist = snap_arrays(g, ll[:, 0], ll[:, 1])
        far = np.flatnonzero(dist > max_snap_m)
        if far.size:
            j = int(far[0])
            raise OutsideGraph(f"{which}[{raw[j]}]", float(dist[j]), max_snap_m)
        edge[raw], frac[raw] = e, t
    return edge, frac


def edges_near(g: RoadGraph, lat: float, lon: float, radius_m: float) -> list[int]:
    """Ids of every edge that passes within ``radius_m`` of a point (an incident's reach)."""
    tree, sample_edge = snap_index(g)
    x, y = g.plane.to_xy(lat, lon)
    hits = tree.query_ball_point([float(x), float(y)], radius_m + SNAP_SAMPLE_M / 2)
    if not hits:
        return []
    cand = np.unique(sample_edge[np.asarray(hits)])
    _, d = project(g, cand, float(x), float(y))
    near = cand[d <= radius_m]
    tw = g.twin[near]
    both = np.concatenate([near, tw[tw >= 0]])
    return sorted(int(e) for e in np.unique(both))
