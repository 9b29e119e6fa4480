"""Edge weights: every edge's travel time under a traffic bucket and live overrides,
and the CSR matrices of them that scipy searches (cached per graph)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from foodmesh.roads.traffic import Overrides, TrafficModel
from foodmesh.roads.types import RoadClass

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["Weights", "csr", "forward", "reverse", "weights_for"]

F64 = npt.NDArray[np.float64]
#: Weight sets (traffic bucket x overrides) kept, each a few MB with its matrices.
_WEIGHT_SETS = 16


@dataclass(slots=True)
class Weights:
    """Travel times of every edge under one traffic bucket and one set of overrides."""

    w: F64  # seconds; inf when closed
    mult: tuple[float, ...]
    fwd: csr_matrix | None = None
    rev: csr_matrix | None = None
    w_finite: F64 | None = None
    index: Any = None  # _trees.EdgeIndex under these weights, for batch searches


def weights_for(
    g: RoadGraph,
    depart_at: dt.datetime | None,
    traffic: TrafficModel | None,
    overrides: Overrides | None,
) -> Weights:
    if traffic is not None and depart_at is not None:
        mult = tuple(float(m) for m in traffic.multipliers(depart_at))
    else:
        mult = (1.0,) * len(RoadClass)
    ov = overrides if overrides else None
    key = (mult, ov)
    with g._lock:
        hit = g._weights.get(key)
        if hit is not None:
            g._weights.move_to_end(key)
            return hit
    w = g.free_flow_s * np.asarray(mult, dtype=np.float64)[g.road_class]
    if ov is not None:
        if ov.slowdowns:
            ids = np.fromiter((e for e, _ in ov.slowdowns), dtype=np.int64)
            fs = np.fromiter((f for _, f in ov.slowdowns), dtype=np.float64)
            ok = (ids >= 0) & (ids < g.edge_count)
            w[ids[ok]] *= fs[ok]
        if ov.closed:
            ids = np.fromiter(ov.closed, dtype=np.int64)
            w[ids[(ids >= 0) & (ids < g.edge_count)]] = np.inf
    entry = Weights(w=w, mult=mult)
    with g._lock:
        g._weights[key] = entry
        while len(g._weights) > _WEIGHT_SETS:
            g._weights.popitem(last=False)
    return entry


def forward(g: RoadGraph, ws: Weights) -> csr_matrix:
    if ws.fwd is None:
        ok = np.isfinite(ws.w)
        if ok.all():
            ws.fwd = csr_matrix((ws.w, g.targets, g.offsets), shape=(g.node_count,) * 2)
        else:
            ws.fwd = csr(g.sources[ok], g.targets[ok], ws.w[ok], g.node_count)
    return ws.fwd


def reverse(g: RoadGraph, ws: Weights) -> csr_matrix:
    if ws.rev is None:
        ok = np.isfinite(ws.w)
        ws.rev = csr(g.targets[ok], g.sources[ok], ws.w[ok], g.node_count)
    return ws.rev


def csr(rows: npt.NDArray[Any], cols: npt.NDArray[Any], data: F64, n: int) -> csr_matrix:
    """A CSR matrix that keeps parallel edges apart (scipy's COO input would sum them)."""
    order = np.argsort(rows, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    return csr_matrix((data[order], cols[order].astype(np.int32), ptr), shape=(n, n))
