"""Turn-by-turn instructions from the edges of a route."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from foodmesh.roads.types import Snap, Step

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["build_steps", "maneuver"]

#: A bend sharper than this on one street still gets its own instruction.
_TURN_DEG = 45.0


def maneuver(turn_deg: float) -> str:
    """Names a change of heading (degrees, clockwise positive, in (-180, 180])."""
    a = abs(turn_deg)
    if a < 20:
        return "straight"
    side = "right" if turn_deg > 0 else "left"
    if a < _TURN_DEG:
        return f"slight {side}"
    if a < 150:
        return f"turn {side}"
    return "u-turn"


def build_steps(
    graph: RoadGraph,
    legs: list[tuple[int, float]],
    w: npt.NDArray[np.float64],
    origin: Snap,
    destination: Snap,
) -> list[Step]:
    """Groups the route's ``(edge, fraction used)`` legs into depart/turn/arrive steps."""
    lat, lon = graph.lat, graph.lon
    used = [(e, f) for e, f in legs if e >= 0 and f > 0 and graph.length_m[e] * f > 0.01]
    steps: list[Step] = []
    if not used:
        steps.append(Step("depart", origin.street, 0.0, 0.0, origin.lat, origin.lon))
        steps.append(Step("arrive", destination.street, 0.0, 0.0, destination.lat, destination.lon))
        return steps

    e = np.array([x for x, _ in used], dtype=np.int64)
    f = np.array([x for _, x in used], dtype=np.float64)
    hd = graph.heading_deg[e]
    nm = graph.name_idx[e]
    turn = (hd[1:] - hd[:-1] + 540.0) % 360.0 - 180.0
    # A new step starts where the street changes, or where it bends sharply.
    starts = np.concatenate(
        [[0], 1 + np.flatnonzero((nm[1:] != nm[:-1]) | (np.abs(turn) >= _TURN_DEG))]
    )
    gid = np.zeros(len(e), dtype=np.int64)
    gid[starts[1:]] = 1
    gid = np.cumsum(gid)
    dists = np.bincount(gid, weights=graph.length_m[e] * f)
    durs = np.bincount(gid, weights=w[e] * f)
    for i, k in enumerate(starts.tolist()):
        first = int(e[k])
        street = graph.street(first)
        dist, dur = float(dists[i]), float(durs[i])
        if i == 0:
            steps.append(Step("depart", street, dist, dur, origin.lat, origin.lon))
            continue
        node = int(graph.sources[first])
        steps.append(
            Step(
                maneuver(float(turn[k - 1])), street, dist, dur, float(lat[node]), float(lon[node])
            )
        )
    steps.append(Step("arrive", destination.street, 0.0, 0.0, destination.lat, destination.lon))
    return steps
