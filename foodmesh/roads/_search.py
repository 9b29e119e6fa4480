"""A* as Dijkstra on reduced costs, run by scipy's compiled Dijkstra with a bound.

With a consistent potential ``h`` (a lower bound on the time left to the
destination), the reduced weight ``w(u, v) - h(u) + h(v)`` is never negative and
Dijkstra on it expands nodes in A*'s order. scipy's ``dijkstra`` has no "stop at
the target", but its ``limit`` stops at a reduced distance: with a good ``h`` the
optimal path's reduced length is small, so a small limit explores little. A
search that comes back without the target retries with a larger limit, and the
last try has none (so an unreachable target is proven, not guessed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

__all__ = ["Found", "astar"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class Found:
    """A search result: the node path from a start node to a goal node and its cost.

    ``first_edge``/``last_edge`` are the partial edges from the snapped origin and
    to the snapped destination; ``direct_edge`` >= 0 means both lie on that one
    edge and ``nodes`` is empty. ``tries`` counts the bounded searches it took.
    """

    cost: float
    nodes: list[int]
    first_edge: int
    last_edge: int
    direct_edge: int
    tries: int


#: Reduced weight of a closed edge: finite (scipy mishandles ``inf`` weights) but
#: beyond :data:`_NEVER`, which no real trip reaches.
_CLOSED = 1e18
_NEVER = 1e12


class Workspace:
    """Per-thread buffers for :func:`astar` on one graph.

    One CSR matrix of the graph plus a super source (node ``n``) whose few edges
    reach the start nodes: the reduced weights and those edges are written into
    the matrix's own arrays, so a query allocates nothing edge-sized and several
    start nodes (each with its own head start) cost one Dijkstra, not one each.
    """

    SLOTS = 3

    def __init__(self, offsets: I64, targets: I32, sources_of_edges: I32) -> None:
        n = int(offsets.shape[0]) - 1
        m = int(targets.shape[0])
        self.n = n
        self.targets = targets
        self.degree = np.diff(offsets)
        indptr = np.concatenate([offsets, [m + self.SLOTS]])
        indices = np.concatenate([targets, np.full(self.SLOTS, n)]).astype(np.int32)
        self.matrix = csr_matrix((np.zeros(m + self.SLOTS), indices, indptr), shape=(n + 1, n + 1))
        data: F64 = self.matrix.data
        assert data.dtype == np.float64 and data.shape == (m + self.SLOTS,)
        self.red: F64 = data[:m]  # views: writing them writes the matrix
        self.slot_cost: F64 = data[m:]
        self.slot_node: I32 = self.matrix.indices[m:]
        assert self.slot_node.shape == (self.SLOTS,)

    def set_starts(self, nodes: list[int], costs: list[float]) -> None:
        """Points the super source's edges at ``nodes`` with ``costs``; spare slots loop
        back to the super source itself at a cost never paid."""
        for k in range(self.SLOTS):
            if k < len(nodes):
                self.slot_node[k], self.slot_cost[k] = nodes[k], costs[k]
            else:
                self.slot_node[k], self.slot_cost[k] = self.n, _CLOSED


class MultiSource:
    """A fixed CSR matrix plus a super source, for exact multi-source Dijkstra with
    head starts (scipy's own multi-source mode starts every source at zero).

    The super source's edges are written in place: hold one per thread.
    """

    SLOTS = 3

    def __init__(self, base: csr_matrix) -> None:
        n = int(base.shape[0])
        m = int(base.nnz)
        self.n = n
        indptr = np.concatenate([base.indptr, [m + self.SLOTS]])
        indices = np.concatenate([base.indices, np.full(self.SLOTS, n)]).astype(np.int32)
        data = np.concatenate([base.data, np.full(self.SLOTS, _CLOSED)])
        self.matrix = csr_matrix((data, indices, indptr), shape=(n + 1, n + 1))
        self.slot_cost: F64 = self.matrix.data[m:]
        self.slot_node: I32 = self.matrix.indices[m:]

    def _set_starts(self, nodes: list[int], costs: list[float]) -> None:
        if len(nodes) > self.SLOTS:
            raise ValueError(f"at most {self.SLOTS} start nodes, got {len(nodes)}")
        for k in range(self.SLOTS):
            if k < len(nodes):
                self.slot_node[k], self.slot_cost[k] = nodes[k], costs[k]
            else:
                self.slot_node[k], self.slot_cost[k] = self.n, _CLOSED

    def dijkstra(self, nodes: list[int], costs: list[float], *, limit: float) -> F64:
        """Times from the nearest start (its head start included) to every node."""
        self._set_starts(nodes, costs)
        dist = dijkstra(self.matrix, directed=True, indices=self.n, limit=limit)
        return np.asarray(dist[: self.n])

    def tree(self, nodes: list[int], costs: list[float], *, limit: float) -> tuple[F64, I32]:
        """:meth:`dijkstra` and its predecessor tree; a start's predecessor is ``n``."""
        self._set_starts(nodes, costs)
        dist, pred = dijkstra(
            self.matrix, directed=True, indices=self.n, return_predecessors=True, limit=limit
        )
        return np.asarray(dist[: self.n]), np.asarray(pred[: self.n], dtype=np.int32)


def finite_weights(w: F64) -> F64:
    """``w`` with closed (``inf``) edges as :data:`_CLOSED`: scipy mishandles ``inf``."""
    return np.where(np.isfinite(w), w, _CLOSED)


def astar(
    ws: Workspace,
    w: F64,
    h: F64,
    *,
    sources: list[tuple[int, float, int]],
    goals: list[tuple[int, float, int]],
    direct: tuple[float, int] | None,
    first_limit_s: float = 30.0,
) -> Found | None:
    """Fastest path from several start nodes (each with a head-start cost) to several
    goal nodes (each with a finishing cost).

    ``w`` are edge times with closed edges at :data:`_CLOSED` (see
    :func:`finite_weights`). ``h[v]`` must be a consistent lower bound on the cost
    from ``v`` to the destination, finishing cost included (zeros: plain Dijkstra).
    Returns None when no goal can be reached and no direct hop exists.
    """
    best = direct[0] if direct is not None else math.inf
    if not sources or not goals:
        return _direct_only(direct)
    red = ws.red
    # Edges are grouped by source (CSR), so h at each edge's source is a repeat, not a gather.
    np.subtract(w, np.repeat(h, ws.degree), out=red)
    np.add(red, h[ws.targets], out=red)
    np.maximum(red, 0.0, out=red)
    graph = ws.matrix
    starts: dict[int, tuple[float, int]] = {}
    for v, c, e in sources:
        if v not in starts or c < starts[v][0]:
            starts[v] = (c, e)
    ends: dict[int, tuple[float, int]] = {}
    for v, c, e in goals:
        if v not in ends or c < ends[v][0]:
            ends[v] = (c, e)
    nodes = list(starts)
    if len(nodes) > Workspace.SLOTS:
        raise ValueError(f"at most {Workspace.SLOTS} start nodes, got {len(nodes)}")
    head = [starts[v][0] + float(h[v]) for v in nodes]
    h_src = min(head)
    ws.set_starts(nodes, [x - h_src for x in head])
    goal_nodes = np.array(list(ends), dtype=np.int64)
    tail = np.array([ends[int(v)][0] - float(h[v]) for v in goal_nodes])
    limit = max(first_limit_s, 0.15 * h_src)
    tries = 0
    while True:
        tries += 1
        bound = min(limit, _NEVER)
        dist, pred = dijkstra(
            graph, directed=True, indices=ws.n, return_predecessors=True, limit=bound
        )
        # total = the best head start + reduced distance + (finishing cost - potential there)
        total = h_src + dist[goal_nodes] + tail
        j = int(np.argmin(total))
        cost = float(total[j])
        # Anything not yet found costs more than h_src + bound: the best found is final.
        if cost <= h_src + bound or bound >= _NEVER:
            break
        if h_src >= best:
            return _direct_only(direct, tries)
        limit *= 4
    if not cost < _NEVER or cost >= best:
        return _direct_only(direct, tries)
    goal = int(goal_nodes[j])
    path = [goal]
    while int(pred[path[-1]]) != ws.n:
        path.append(int(pred[path[-1]]))
    path.reverse()
    return Found(cost, path, starts[path[0]][1], ends[goal][1], -1, tries)


def _direct_only(direct: tuple[float, int] | None, tries: int = 0) -> Found | None:
    if direct is None:
        return None
    return Found(direct[0], [], -1, -1, direct[1], tries)
