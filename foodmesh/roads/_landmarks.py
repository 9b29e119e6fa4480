"""ALT landmarks: lower bounds on the time left to a destination, the A* potentials.

Per traffic bucket, times from and to a few landmarks on the rim of the map
(computed once per bucket, or for a whole week by ``warm``); the triangle
inequality turns them into a bound at every node.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from foodmesh.roads import _ends, _snap, _weights
from foodmesh.roads._weights import Weights
from foodmesh.roads.traffic import TrafficModel
from foodmesh.roads.types import RoadClass, Snap

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["potentials", "tables", "warm"]

log = logging.getLogger("foodmesh.roads")

F64 = npt.NDArray[np.float64]
#: ALT landmarks computed per graph, and how many of them bound one query.
_LANDMARKS = 16
_ACTIVE_LANDMARKS = 4
#: Potentials are shrunk a hair so float rounding can never make them overestimate.
_H_SAFETY = 0.999
_WEEK_HOURS = [dt.datetime(2024, 1, 1 + d, hr) for d in range(7) for hr in range(24)]


def tables(g: RoadGraph, ws: Weights) -> tuple[F64, F64]:
    """ALT landmarks for one traffic bucket: times from and to each landmark.

    Computed on the bucket's weights before overrides; overrides only slow
    edges down or close them, so the bounds stay valid under any of them.
    """
    key = ws.mult
    with g._lock:
        hit = g._alt.get(key)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    base = g.free_flow_s * np.asarray(key, dtype=np.float64)[g.road_class]
    n = g.node_count
    fwd = csr_matrix((base, g.targets, g.offsets), shape=(n, n))
    rev = _weights.csr(g.targets, g.sources, base, n)
    lm = _pick_landmarks(g.x, g.y, _LANDMARKS)
    d_from = np.asarray(dijkstra(fwd, directed=True, indices=lm))
    d_to = np.asarray(dijkstra(rev, directed=True, indices=lm))
    # A node some landmark cannot reach (or be reached from) gets no bound from it.
    d_from[~np.isfinite(d_from)] = np.nan
    d_to[~np.isfinite(d_to)] = np.nan
    tables = (d_from, d_to)
    with g._lock:
        g._alt[key] = tables
        while len(g._alt) > 16:
            g._alt.popitem(last=False)
    log.debug("ALT landmarks for %s ready in %.3fs", key, time.perf_counter() - t0)
    return tables


def potentials(g: RoadGraph, start: int, d: Snap, ws: Weights) -> F64:
    """A* potentials: per node, a lower bound on the time to the destination point.

    ALT: for a landmark L, time(v -> D) >= time(L -> D) - time(L -> v) and
    >= time(v -> L) - time(D -> L), all on the bucket's weights before overrides
    (which only ever slow things down). The landmarks that bound the start best
    are used.
    """
    n = g.node_count
    if n == 0:
        return np.zeros(0)
    d_from, d_to = tables(g, ws)
    bw = {  # only the edges of D's segment are read below
        e: float(g.free_flow_s[e]) * ws.mult[int(g.road_class[e])] for e in _ends.positions(g, d)
    }
    ins = _ends.ends(g, d, bw)  # (node, base time from it to D)
    outs = _ends.starts(g, d, bw)  # (node, base time from D to it)
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


def warm(g: RoadGraph, *, traffic: TrafficModel | None = None) -> None:
    """Prepares the snapping index and the landmarks of every traffic bucket of a week
    (so a service's first queries are as fast as the rest)."""
    _snap.snap_index(g)
    keys = {
        tuple(float(m) for m in traffic.multipliers(t)) if traffic else (1.0,) * len(RoadClass)
        for t in _WEEK_HOURS
    }
    for key in keys:
        tables(g, Weights(w=g.free_flow_s, mult=key))


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
