"""The batch searches: many legs at once, everything reachable from one point, and
many points' times to (or from) one.

``legs`` and ``reach`` grow one shortest-path tree (scipy's Dijkstra from a super source whose
edges carry each way on or off the point's street with its head start, see
``_search.MultiSource``) and read the time, metres and free-flow seconds of
every node off it (``_trees.tree_sums``). A leg's ends are met exactly as
:meth:`RoadGraph.route` meets them: either direction of the street, any edge
drawn along it (parallel edges), a point sitting on a node, and two points on one
street in driving order; so a batch answers what ``route`` answers, faster.
``travel_times`` and ``travel_times_from`` (Dispatch's many drivers to one
restaurant) need times only: one Dijkstra without a tree, met the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import dijkstra

from foodmesh.roads import _ends, _search, _snap, _weights
from foodmesh.roads._snap import DEFAULT_MAX_SNAP_M, Point
from foodmesh.roads._trees import EdgeIndex, tree_sums
from foodmesh.roads._weights import Weights
from foodmesh.roads.traffic import Overrides, TrafficModel
from foodmesh.roads.types import Snap

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["Legs", "Reach", "legs", "reach", "travel_times", "travel_times_from"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Legs:
    """Per leg (origin ``i`` to destination ``i``): the fastest time (s), its length (m)
    and its free-flow time (s); ``inf`` in all three where no open road joins them
    within the time limit."""

    duration_s: F64
    distance_m: F64
    free_flow_s: F64

    def __len__(self) -> int:
        return int(self.duration_s.shape[0])


@dataclass(frozen=True, slots=True)
class Reach:
    """Per node: the fastest time (s) from (or to) the point, ``inf`` when not reached
    within the limit, and ``values`` summed along that fastest path (zeros there)."""

    time_s: F64
    sums: F64


def _index(graph: RoadGraph, ws: Weights) -> EdgeIndex:
    if ws.index is None:
        ws.index = EdgeIndex.of(graph, ws.w)
    index: EdgeIndex = ws.index
    return index


def _grow(
    graph: RoadGraph,
    ws: Weights,
    ways: list[tuple[int, float, int, float]],
    values: F64,
    *,
    reverse: bool,
    limit_s: float,
) -> Reach:
    """The tree from ``ways`` (node, head start, edge driven, share of it driven)."""
    dist, pred = multi_source(graph, ws, reverse=reverse).tree(
        [v for v, _, _, _ in ways], [c for _, c, _, _ in ways], limit=limit_s
    )
    roots = {
        v: (share * values[e] if e >= 0 else np.zeros(values.shape[1])) for v, _, e, share in ways
    }
    sums = tree_sums(pred, index=_index(graph, ws), values=values, reverse=reverse, roots=roots)
    return Reach(dist, sums)


def _ways_out(graph: RoadGraph, s: Snap, w: F64) -> list[tuple[int, float, int, float]]:
    """Where a search leaves ``s``: (node, cost, edge, share of the edge driven)."""
    pos = _ends.positions(graph, s)
    return [(v, c, e, 1.0 - pos[e] if e >= 0 else 0.0) for v, c, e in _ends.starts(graph, s, w)]


def _ways_in(graph: RoadGraph, s: Snap, w: F64) -> list[tuple[int, float, int, float]]:
    """Where a search reaches ``s``: (node, cost, edge, share of the edge driven)."""
    pos = _ends.positions(graph, s)
    return [(u, c, e, pos[e] if e >= 0 else 0.0) for u, c, e in _ends.ends(graph, s, w)]


def legs(
    graph: RoadGraph,
    origins: Sequence[Point],
    destinations: Sequence[Point],
    *,
    ws: Weights,
    max_snap_m: float,
    limit_s: float,
) -> Legs:
    """See :meth:`RoadGraph.legs`."""
    n = len(origins)
    if len(destinations) != n:
        raise ValueError(f"{n} origins but {len(destinations)} destinations")
    out = np.full((n, 3), np.inf)
    if n == 0:
        return Legs(out[:, 0], out[:, 1], out[:, 2])
    o_edge, o_frac = _snap.snap_points(graph, origins, "origins", max_snap_m)
    d_edge, d_frac = _snap.snap_points(graph, destinations, "destinations", max_snap_m)
    o_keys, o_inv = np.unique(np.column_stack([o_edge, o_frac]), axis=0, return_inverse=True)
    d_keys, d_inv = np.unique(np.column_stack([d_edge, d_frac]), axis=0, return_inverse=True)
    o_inv, d_inv = o_inv.ravel(), d_inv.ravel()
    w = ws.w
    values = np.column_stack([graph.length_m, graph.free_flow_s])
    # One tree per distinct point on the side with fewer of them: many drivers to one
    # restaurant is one search on the reversed graph.
    from_dest = len(d_keys) <= len(o_keys)
    hubs, hub_inv = (d_keys, d_inv) if from_dest else (o_keys, o_inv)
    other_edge, other_frac = (o_edge, o_frac) if from_dest else (d_edge, d_frac)
    for j, (he, hf) in enumerate(hubs.tolist()):
        hub = _snap.make_snap(graph, int(he), float(hf), 0.0)
        members = np.flatnonzero(hub_inv == j)
        ways = _ways_in(graph, hub, w) if from_dest else _ways_out(graph, hub, w)
        if not ways:
            continue
        tree = _grow(graph, ws, ways, values, reverse=from_dest, limit_s=limit_s)
        out[members] = _combine(
            graph, w, values, tree, hub, other_edge[members], other_frac[members],
            points_are_origins=from_dest,
        )  # fmt: skip
    over = ~(out[:, 0] <= limit_s)
    out[over] = np.inf
    return Legs(out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy())


def _combine(
    graph: RoadGraph,
    w: F64,
    values: F64,
    tree: Reach,
    hub: Snap,
    edge: I64,
    frac: F64,
    *,
    points_are_origins: bool,
) -> F64:
    """(time, then ``values``) of the best way between each point and the hub, (n, 1 + k).

    Each point meets the tree through either end of its street; the rare cases (a point
    on the hub's own street, or on a street drawn twice) are settled one by one with
    ``route``'s own helpers.
    """
    field, sums = tree.time_s, tree.sums
    src, dst = graph.sources[edge], graph.targets[edge]
    tw = graph.twin[edge]
    has_tw = tw >= 0
    tw_safe = np.where(has_tw, tw, 0)
    length = graph.length_m[edge]
    f = frac[:, None]
    with np.errstate(invalid="ignore"):
        if points_are_origins:  # leave forward along the edge, or back along the twin
            a = (1.0 - frac) * w[edge] + field[dst]
            a_v = (1.0 - f) * values[edge] + sums[dst]
            b = np.where(has_tw, frac * w[tw_safe] + field[src], np.inf)
            b_v = f * values[tw_safe] + sums[src]
        else:  # arrive along the edge from its source, or along the twin from its target
            a = field[src] + frac * w[edge]
            a_v = sums[src] + f * values[edge]
            b = np.where(has_tw, field[dst] + (1.0 - frac) * w[tw_safe], np.inf)
            b_v = sums[dst] + (1.0 - f) * values[tw_safe]
    a = np.where(np.isnan(a), np.inf, a)
    b = np.where(np.isnan(b), np.inf, b)
    at_src = frac * length <= 0.01
    at_dst = (1.0 - frac) * length <= 0.01
    cands_t = np.column_stack([
        a, b, np.where(at_src, field[src], np.inf), np.where(at_dst, field[dst], np.inf),
    ])  # fmt: skip
    cands_v = np.stack([a_v, b_v, sums[src], sums[dst]], axis=1)  # (n, 4, k)
    pick = np.argmin(cands_t, axis=1)
    rows = np.arange(len(edge))
    out = np.empty((len(edge), 1 + values.shape[1]))
    out[:, 0] = cands_t[rows, pick]
    out[:, 1:] = cands_v[rows, pick]
    ends = [hub.source, hub.target]
    same = np.isin(src, ends) & np.isin(dst, ends) & (src != dst)
    for i in np.flatnonzero(same | graph._parallel[edge]).tolist():
        p = _snap.make_snap(graph, int(edge[i]), float(frac[i]), 0.0)
        if points_are_origins:
            ways = [(c + field[v], share * values[e] + sums[v] if e >= 0 else sums[v])
                    for v, c, e, share in _ways_out(graph, p, w)]  # fmt: skip
            o, d = p, hub
        else:
            ways = [(field[u] + c, sums[u] + share * values[e] if e >= 0 else sums[u])
                    for u, c, e, share in _ways_in(graph, p, w)]  # fmt: skip
            o, d = hub, p
        direct = _ends.direct(graph, o, d, w)
        if direct is not None:
            c, e = direct
            span = _ends.positions(graph, d)[e] - _ends.positions(graph, o)[e]
            ways.append((c, span * values[e]))
        best = min(ways, key=lambda x: float(x[0]), default=None)
        if best is None or not math.isfinite(float(best[0])):
            out[i] = np.inf
        else:
            out[i, 0], out[i, 1:] = best
    out[~np.isfinite(out[:, 0])] = np.inf
    return out


def reach(
    graph: RoadGraph,
    start: Point | int,
    *,
    ws: Weights,
    reverse: bool,
    values: F64 | None,
    max_snap_m: float,
    limit_s: float,
) -> Reach:
    """See :meth:`RoadGraph.reach`."""
    vals = values if values is not None else np.column_stack([graph.length_m, graph.free_flow_s])
    if isinstance(start, int | np.integer):
        node = int(start)
        if not 0 <= node < graph.node_count:
            raise IndexError(f"node {node} is not in the graph ({graph.node_count} nodes)")
        m = _weights.reverse(graph, ws) if reverse else _weights.forward(graph, ws)
        dist, pred = dijkstra(
            m, directed=True, indices=node, return_predecessors=True, limit=limit_s
        )
        sums = tree_sums(pred, index=_index(graph, ws), values=vals, reverse=reverse)
        return Reach(np.asarray(dist), sums)
    s = _snap.snap_arg(graph, start, "start", max_snap_m)
    ways = _ways_in(graph, s, ws.w) if reverse else _ways_out(graph, s, ws.w)
    if not ways:
        n = graph.node_count
        return Reach(np.full(n, np.inf), np.zeros((n, vals.shape[1])))
    return _grow(graph, ws, ways, vals, reverse=reverse, limit_s=limit_s)


def travel_times(
    g: RoadGraph,
    origins: Sequence[Point],
    destination: Point,
    *,
    depart_at: dt.datetime,
    traffic: TrafficModel | None = None,
    overrides: Overrides | None = None,
    max_snap_m: float = DEFAULT_MAX_SNAP_M,
    limit_s: float = math.inf,
) -> F64:
    """:meth:`RoadGraph.travel_times` (many-to-one, one reversed Dijkstra)."""
    return _one_to_many(g, destination, origins, to_one=True, depart_at=depart_at,
                        traffic=traffic, overrides=overrides, max_snap_m=max_snap_m,
                        limit_s=limit_s)  # fmt: skip


def travel_times_from(
    g: RoadGraph,
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
    return _one_to_many(g, origin, destinations, to_one=False, depart_at=depart_at,
                        traffic=traffic, overrides=overrides, max_snap_m=max_snap_m,
                        limit_s=limit_s)  # fmt: skip


def _one_to_many(
    g: RoadGraph,
    one: Point,
    many: Sequence[Point],
    *,
    to_one: bool,
    depart_at: dt.datetime,
    traffic: TrafficModel | None,
    overrides: Overrides | None,
    max_snap_m: float,
    limit_s: float,
) -> F64:
    """Times between ``one`` and each of ``many`` in one Dijkstra from ``one``: toward it
    (``to_one``, on the reversed graph, from where its point meets the roads) or from it."""
    o = _snap.snap_arg(g, one, "destination" if to_one else "origin", max_snap_m)
    edge, frac = _snap.snap_points(g, many, "origins" if to_one else "destinations", max_snap_m)
    ws = _weights.weights_for(g, depart_at, traffic, overrides)
    seeds = _ends.ends(g, o, ws.w) if to_one else _ends.starts(g, o, ws.w)
    if not seeds:
        return np.full(len(edge), np.inf)
    tree = multi_source(g, ws, reverse=to_one).dijkstra(
        [n for n, _, _ in seeds], [c for _, c, _ in seeds], limit=limit_s
    )
    return combine_times(g, edge, frac, ws.w, tree, o, limit_s, reverse=not to_one)


def multi_source(g: RoadGraph, ws: Weights, *, reverse: bool) -> _search.MultiSource:
    cache: dict[tuple[int, bool], tuple[Weights, _search.MultiSource]] | None = getattr(
        g._tls, "multi", None
    )
    if cache is None:
        cache = g._tls.multi = {}
    hit = cache.get((id(ws), reverse))
    if hit is not None and hit[0] is ws:
        return hit[1]
    ms = _search.MultiSource(_weights.reverse(g, ws) if reverse else _weights.forward(g, ws))
    if len(cache) >= 8:
        cache.clear()
    cache[(id(ws), reverse)] = (ws, ms)
    return ms


def combine_times(
    g: RoadGraph,
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
    :func:`_combine` with nothing summed along the way.
    """
    nothing = np.zeros((g.edge_count, 0))
    tree = Reach(field, np.zeros((len(field), 0)))
    best = _combine(g, w, nothing, tree, fixed, edge, frac, points_are_origins=not reverse)[:, 0]
    return np.where(best <= limit_s, best, np.inf)
