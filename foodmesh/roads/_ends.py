"""How a snapped point meets the graph: the ways off it and onto it, shared by every search.

A point on a street can leave (or be reached) along either direction of it and
along any edge drawn over the same segment (parallel edges); a point sitting on
a node may use every road at that node; two points on one street in driving
order need no search at all. ``route``, the batch searches and the A* bounds all
meet their points through these helpers, so they agree.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from foodmesh.roads.types import Snap

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["at_node", "direct", "ends", "positions", "starts"]

F64 = npt.NDArray[np.float64]
#: Edge times: every edge's, or only those of the edges a helper will read.
EdgeTimes = F64 | dict[int, float]


def at_node(g: RoadGraph, s: Snap) -> int:
    """The node a snapped point sits on (within a centimetre), else -1."""
    length = float(g.length_m[s.edge])
    if s.fraction * length <= 0.01:
        return s.source
    if (1.0 - s.fraction) * length <= 0.01:
        return s.target
    return -1


def starts(g: RoadGraph, o: Snap, w: EdgeTimes) -> list[tuple[int, float, int]]:
    """(node, cost to reach it from the snapped point, edge used) for a search start:
    the fastest way off the point's segment towards each of its two ends.

    A point on a node starts there (edge -1) with every road out of it open.
    """
    node = at_node(g, o)
    best: dict[int, tuple[float, int]] = {node: (0.0, -1)} if node >= 0 else {}
    for e, pos in positions(g, o).items():
        we = float(w[e])
        if math.isfinite(we):
            v, c = int(g.targets[e]), (1.0 - pos) * we
            if v not in best or c < best[v][0]:
                best[v] = (c, e)
    return [(v, c, e) for v, (c, e) in best.items()]


def ends(g: RoadGraph, d: Snap, w: EdgeTimes) -> list[tuple[int, float, int]]:
    """(node, cost from it to the snapped point, edge used) for a search goal."""
    node = at_node(g, d)
    best: dict[int, tuple[float, int]] = {node: (0.0, -1)} if node >= 0 else {}
    for e, pos in positions(g, d).items():
        we = float(w[e])
        if math.isfinite(we):
            u, c = int(g.sources[e]), pos * we
            if u not in best or c < best[u][0]:
                best[u] = (c, e)
    return [(u, c, e) for u, (c, e) in best.items()]


def positions(g: RoadGraph, s: Snap) -> dict[int, float]:
    """Every edge drawn along the snapped point's segment (its twin and any parallel
    edges too), with the point's position along each as a fraction."""
    a, b = s.source, s.target
    out: dict[int, float] = {}
    for u, v, pos in ((a, b, s.fraction), (b, a, 1.0 - s.fraction)):
        for e in range(int(g.offsets[u]), int(g.offsets[u + 1])):
            if int(g.targets[e]) == v:
                out[e] = pos
    return out


def direct(g: RoadGraph, o: Snap, d: Snap, w: F64) -> tuple[float, int] | None:
    """Cost of staying on one edge when both points lie on it in driving order."""
    if {o.source, o.target} != {d.source, d.target}:
        return None
    best: tuple[float, int] | None = None
    at_d = positions(g, d)
    for e, a in positions(g, o).items():
        bpos = at_d.get(e)
        if bpos is None or bpos < a or not math.isfinite(w[e]):
            continue
        c = (bpos - a) * float(w[e])
        if best is None or c < best[0]:
            best = (c, e)
    return best
