"""Sums along shortest-path trees: distance and free-flow time per road class, vectorised.

``scipy.sparse.csgraph.dijkstra`` gives the time to every node and a predecessor
tree, not what the fastest path is made of. Pointer doubling (each node adds its
ancestor's running sum and jumps to the ancestor's ancestor, log₂(depth) rounds)
gets, for every node at once, the sum of any per-edge values along its path to the
root: metres, and free-flow seconds per road class (which, times the traffic
multipliers of an hour, is the path's time at that hour).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["EdgeIndex", "edge_values", "tree_sums"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EdgeIndex:
    """Finds the edge id of (u, v) node pairs at once (the fastest of parallel edges)."""

    keys: I64
    ids: I64
    n: int

    @staticmethod
    def of(graph: RoadGraph, w: F64 | None = None) -> EdgeIndex:
        """The index of ``graph``; of parallel edges the fastest under ``w`` (else free flow)."""
        n = graph.node_count
        keys = graph.sources.astype(np.int64) * n + graph.targets.astype(np.int64)
        order = np.lexsort((graph.free_flow_s if w is None else w, keys))
        k = keys[order]
        first = np.ones(len(k), dtype=bool)
        first[1:] = k[1:] != k[:-1]
        return EdgeIndex(keys=k[first], ids=order[first].astype(np.int64), n=n)

    def lookup(self, u: I64, v: I64) -> I64:
        """Edge ids of u→v (-1 where no edge)."""
        q = u.astype(np.int64) * self.n + v.astype(np.int64)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos] == q
        return np.where(hit, self.ids[pos], -1)


def edge_values(graph: RoadGraph, n_classes: int = 5) -> F64:
    """Per edge: metres, then free-flow seconds in the column of its road class (E, 1 + k)."""
    vals = np.zeros((graph.edge_count, 1 + n_classes), dtype=np.float64)
    vals[:, 0] = graph.length_m
    rows = np.arange(graph.edge_count)
    vals[rows, 1 + graph.road_class.astype(np.int64)] = graph.free_flow_s
    return vals


def tree_sums(
    pred: npt.NDArray[np.int32],
    *,
    index: EdgeIndex,
    values: F64,
    reverse: bool,
    roots: Mapping[int, F64] | None = None,
) -> F64:
    """For each node, the sum of ``values`` over the edges of its tree path to the root.

    ``pred`` is scipy's predecessor array (negative: the root, or not reached). With
    ``reverse`` the tree came from a search on the reversed graph, so node v's path
    edge runs v → pred[v]; otherwise pred[v] → v. The root and unreached nodes get zeros
    (the caller tells them apart by their distance).

    A search from a super source (node ``len(pred)``, see ``_search.MultiSource``)
    has several roots, the nodes whose predecessor is that super source; ``roots``
    gives each one's own row (the part of an edge driven before reaching it), added
    to everything below it.
    """
    n = len(pred)
    nodes = np.arange(n, dtype=np.int64)
    has = (pred >= 0) & (pred < n)
    parent = np.where(has, pred, nodes).astype(np.int64)
    edge = np.full(n, -1, dtype=np.int64)
    if reverse:
        edge[has] = index.lookup(nodes[has], parent[has])
    else:
        edge[has] = index.lookup(parent[has], nodes[has])
    acc = np.zeros((n, values.shape[1]), dtype=np.float64)
    ok = edge >= 0
    acc[ok] = values[edge[ok]]
    anc = parent
    # acc[v] sums the 2^k edges above v (fewer near the root, whose row is zero and which
    # is its own ancestor), so each round doubles the reach; ~log2(depth) rounds.
    for _ in range(64):
        nxt = anc[anc]
        acc = acc + acc[anc]
        if np.array_equal(nxt, anc):
            break
        anc = nxt
    if roots:
        # After the loop anc[v] is v's root; a root's own row reaches everything below it.
        at_root = np.zeros_like(acc)
        for node, row in roots.items():
            if 0 <= node < n and int(pred[node]) == n:
                at_root[node] = row
        acc += at_root[anc]
    return acc
