"""Building a graph: CSR arrays from an edge list, their checks, and what is derived
from them once (each edge's twin, parallel edges, headings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from foodmesh.roads.errors import GraphFormatError
from foodmesh.roads.geo import haversine_np
from foodmesh.roads.types import RoadClass

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["csr_arrays", "headings", "parallels", "twins", "validate"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def validate(g: RoadGraph) -> None:
    n, m = g.lat.shape[0], g.targets.shape[0]
    problems = []
    if g.lon.shape[0] != n:
        problems.append("lat and lon differ in length")
    if g.offsets.shape[0] != n + 1 or (n + 1 and int(g.offsets[-1]) != m):
        problems.append("offsets do not match the node and edge counts")
    elif n and (g.offsets[0] != 0 or np.any(np.diff(g.offsets) < 0)):
        problems.append("offsets are not non-decreasing from 0")
    for name in ("length_m", "road_class", "speed_mps", "name_idx", "oneway"):
        if getattr(g, name).shape[0] != m:
            problems.append(f"{name} has {getattr(g, name).shape[0]} entries, not {m}")
    if m and (int(g.targets.min()) < 0 or int(g.targets.max()) >= n):
        problems.append("an edge points at a node that does not exist")
    if m and (np.any(~np.isfinite(g.length_m)) or np.any(g.length_m < 0)):
        problems.append("an edge length is negative or not finite")
    if m and (np.any(~np.isfinite(g.speed_mps)) or np.any(g.speed_mps <= 0)):
        problems.append("an edge speed is not a positive number")
    if m and int(g.road_class.max()) > max(RoadClass):
        problems.append("an edge has an unknown road class")
    if m and (int(g.name_idx.min()) < 0 or int(g.name_idx.max()) >= len(g.names)):
        problems.append("an edge names a street that is not in the name table")
    if n and (np.any(~np.isfinite(g.lat)) or np.any(np.abs(g.lat) > 90)):
        problems.append("a node latitude is not valid")
    if problems:
        raise GraphFormatError("not a valid road graph: " + "; ".join(problems))


def twins(g: RoadGraph) -> npt.NDArray[np.int64]:
    n = np.int64(max(1, g.node_count))
    key = g.sources.astype(np.int64) * n + g.targets
    rkey = g.targets.astype(np.int64) * n + g.sources
    order = np.argsort(key, kind="stable")
    g._keys_sorted, g._keys_order = key[order], order
    pos = np.searchsorted(key[order], rkey)
    pos = np.minimum(pos, max(0, len(key) - 1))
    twin = np.full(g.edge_count, -1, dtype=np.int64)
    if g.edge_count:
        found = key[order][pos] == rkey
        twin[found] = order[pos[found]]
    return twin


def parallels(g: RoadGraph) -> npt.NDArray[np.bool_]:
    """Edges whose segment carries more than one edge in some direction."""
    key = g._keys_sorted
    dup = np.zeros(len(key), dtype=bool)
    if len(key) > 1:
        same = key[1:] == key[:-1]
        dup[1:] |= same
        dup[:-1] |= same
    par = np.zeros(g.edge_count, dtype=bool)
    par[g._keys_order[dup]] = True
    tw = g.twin
    par |= np.where(tw >= 0, par[np.maximum(tw, 0)], False)
    # A segment whose reverse direction is doubled but that has no twin of its own.
    n = np.int64(max(1, g.node_count))
    rkey = g.targets.astype(np.int64) * n + g.sources
    lo = np.searchsorted(key, rkey, side="left")
    hi = np.searchsorted(key, rkey, side="right")
    return np.asarray(par | (hi - lo > 1))


def headings(g: RoadGraph) -> F64:
    """Compass bearing of every edge, degrees in [0, 360)."""
    p1, p2 = np.radians(g.lat[g.sources]), np.radians(g.lat[g.targets])
    dl = np.radians(g.lon[g.targets] - g.lon[g.sources])
    yv = np.sin(dl) * np.cos(p2)
    xv = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.asarray(np.degrees(np.arctan2(yv, xv)) % 360.0)


def csr_arrays(
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
) -> dict[str, Any]:
    """The CSR arrays of :meth:`RoadGraph.from_edges`."""
    lat_a = np.asarray(lat, dtype=np.float64)
    lon_a = np.asarray(lon, dtype=np.float64)
    u_a = np.asarray(u, dtype=np.int64)
    v_a = np.asarray(v, dtype=np.int64)
    cls_a = np.asarray(road_class, dtype=np.uint8)
    spd_a = np.asarray(speed_mps, dtype=np.float64)
    nm_a = np.asarray(name_idx, dtype=np.int32)
    ow_a = np.asarray(oneway, dtype=np.bool_)
    keep_e = u_a != v_a
    u_a, v_a, cls_a, spd_a, nm_a, ow_a = (a[keep_e] for a in (u_a, v_a, cls_a, spd_a, nm_a, ow_a))
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
    return dict(
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
