"""One fastest route: A* from a snapped origin to a snapped destination, and the
route it makes (length, times, the path, its polyline and turn-by-turn steps)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from foodmesh.roads import _ends, _landmarks, _search, _snap, _weights
from foodmesh.roads._snap import DEFAULT_MAX_SNAP_M, Point
from foodmesh.roads._weights import Weights
from foodmesh.roads.errors import Unreachable
from foodmesh.roads.polyline import encode as encode_polyline
from foodmesh.roads.steps import build_steps
from foodmesh.roads.traffic import Overrides, TrafficModel
from foodmesh.roads.types import LatLon, Route, Snap

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["assemble", "route", "workspace"]


def route(
    g: RoadGraph,
    origin: Point,
    destination: Point,
    *,
    depart_at: dt.datetime,
    traffic: TrafficModel | None = None,
    overrides: Overrides | None = None,
    max_snap_m: float = DEFAULT_MAX_SNAP_M,
) -> Route:
    """:meth:`RoadGraph.route`: A* with landmark bounds over the hour's weights."""
    o = _snap.snap_arg(g, origin, "origin", max_snap_m)
    d = _snap.snap_arg(g, destination, "destination", max_snap_m)
    ws = _weights.weights_for(g, depart_at, traffic, overrides)
    goals = _ends.ends(g, d, ws.w)
    if ws.w_finite is None:
        ws.w_finite = _search.finite_weights(ws.w)
    found = _search.astar(
        workspace(g),
        ws.w_finite,
        _landmarks.potentials(g, o.target, d, ws),
        sources=_ends.starts(g, o, ws.w),
        goals=goals,
        direct=_ends.direct(g, o, d, ws.w),
    )
    if found is None:
        raise Unreachable(
            f"no open road from ({o.lat:.5f}, {o.lon:.5f}) to ({d.lat:.5f}, {d.lon:.5f})"
        )
    return assemble(g, o, d, found, ws)


def workspace(g: RoadGraph) -> _search.Workspace:
    ws: _search.Workspace | None = getattr(g._tls, "workspace", None)
    if ws is None:
        ws = g._tls.workspace = _search.Workspace(g.offsets, g.targets, g.sources)
    return ws


def assemble(g: RoadGraph, o: Snap, d: Snap, found: _search.Found, ws: Weights) -> Route:
    pts: list[LatLon] = [(o.lat, o.lon)]
    if found.direct_edge >= 0:
        e = found.direct_edge
        span = _ends.positions(g, d)[e] - _ends.positions(g, o)[e]
        legs = [(e, span)]
    else:
        first, last = found.first_edge, found.last_edge
        legs = []
        if first >= 0:
            legs.append((first, 1.0 - _ends.positions(g, o)[first]))
        nodes = found.nodes
        legs.extend((int(e), 1.0) for e in g.edges_along(nodes, ws.w))
        pts.extend(zip(g.lat[nodes].tolist(), g.lon[nodes].tolist(), strict=True))
        if last >= 0:
            legs.append((last, _ends.positions(g, d)[last]))
    pts.append((d.lat, d.lon))
    dedup: list[LatLon] = [pts[0]]
    for p in pts[1:]:
        if p != dedup[-1]:
            dedup.append(p)
    legs = [(e, f) for e, f in legs if f > 0.0]
    edges = [e for e, _ in legs]
    fr = np.array([f for _, f in legs], dtype=np.float64)
    ids = np.array(edges, dtype=np.int64)
    distance = float(np.sum(g.length_m[ids] * fr))
    duration = float(np.sum(ws.w[ids] * fr))
    free = float(np.sum(g.free_flow_s[ids] * fr))
    steps = build_steps(g, legs, ws.w, o, d)
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
