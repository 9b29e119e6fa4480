"""The batch solver: orders × drivers as an assignment problem. Pure, CPU-bound.

``solve`` hands ``scipy.optimize.linear_sum_assignment`` a rectangular cost
matrix (``1 - score``, in [0, 1]) where infeasible pairs cost ``BIG``, larger
than any set of feasible pairs can cost in total: so the solver first matches
as many orders as feasibility allows, then minimises the cost among those
matchings, and every pair it returns at ``BIG`` is dropped (that order waits).
``greedy`` is the baseline: orders in turn, each taking its cheapest free driver.

Above ``SPARSE_ABOVE`` pairs (1.5 million: 500 × 2,000 is still solved whole)
each order keeps only its ``TOP_K`` (40) cheapest feasible drivers; the others
cost ``BIG`` like infeasible pairs. A driver outside an order's 40 best is
never that order's optimum in practice, and the solver, which spends its time
on augmenting paths through cheap entries, runs 2,000 × 5,000 in a fraction of
the time. (scipy's sparse ``min_weight_full_bipartite_matching`` is as fast but
holds the GIL throughout, stalling the event loop; ``linear_sum_assignment``
releases it.)

The live service runs ``solve`` in a worker thread (``asyncio.to_thread``): a
2,000 × 5,000 solve takes about a second, which the event loop must not feel.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

__all__ = ["SPARSE_ABOVE", "TOP_K", "greedy", "solve", "total_cost"]

SPARSE_ABOVE = 1_500_000
TOP_K = 40

Pairs = list[tuple[int, int]]


def _big(cost: npt.NDArray[np.float64]) -> float:
    # Costs are in [0, 1]: min(n, m) feasible pairs cost at most min(n, m).
    return float(min(cost.shape) + 1)


def solve(
    cost: npt.NDArray[np.float64],
    feasible: npt.NDArray[np.bool_],
    *,
    sparse_above: int = SPARSE_ABOVE,
    top_k: int = TOP_K,
) -> Pairs:
    """Optimal (order, driver) pairs: most orders matched, then least total cost.

    No driver and no order appears twice; infeasible pairs never appear.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    rows_ok = feasible.any(axis=1)
    cols_ok = feasible.any(axis=0)
    # Rows and columns with no feasible pair only slow the solver down.
    ri, ci = np.flatnonzero(rows_ok), np.flatnonzero(cols_ok)
    if ri.size == 0 or ci.size == 0:
        return []
    sub = cost[np.ix_(ri, ci)]
    ok = feasible[np.ix_(ri, ci)]
    if sub.size > sparse_above:
        return [(int(ri[a]), int(ci[b])) for a, b in _solve_pruned(sub, ok, top_k)]
    masked = np.where(ok, np.clip(sub, 0.0, 1.0), _big(sub))
    r, c = linear_sum_assignment(masked)
    keep = ok[r, c]
    return [(int(ri[a]), int(ci[b])) for a, b in zip(r[keep], c[keep], strict=True)]


def _solve_pruned(cost: npt.NDArray[np.float64], ok: npt.NDArray[np.bool_], k: int) -> Pairs:
    n, m = cost.shape
    k = max(1, min(k, m))
    masked = np.where(ok, np.clip(cost, 0.0, 1.0), np.inf)
    idx = np.argpartition(masked, k - 1, axis=1)[:, :k]
    pruned = np.full(cost.shape, np.inf)
    np.put_along_axis(pruned, idx, np.take_along_axis(masked, idx, axis=1), axis=1)
    keep = np.isfinite(pruned)
    pruned[~keep] = _big(cost)
    r, c = linear_sum_assignment(pruned)
    sel = keep[r, c]
    return [(int(a), int(b)) for a, b in zip(r[sel], c[sel], strict=True)]


def greedy(
    cost: npt.NDArray[np.float64],
    feasible: npt.NDArray[np.bool_],
    *,
    key: npt.NDArray[np.float64] | None = None,
) -> Pairs:
    """Each order in row order takes the free feasible driver of least ``key`` (default cost)."""
    n, m = cost.shape
    rank = cost if key is None else key
    taken = np.zeros(m, dtype=bool)
    out: Pairs = []
    for i in range(n):
        options = feasible[i] & ~taken
        if not options.any():
            continue
        j = int(np.argmin(np.where(options, rank[i], np.inf)))
        taken[j] = True
        out.append((i, j))
    return out


def total_cost(cost: npt.NDArray[np.float64], pairs: Pairs, *, unmatched: float) -> float:
    """Cost of the chosen pairs plus ``unmatched`` for every order left without a driver."""
    matched = sum(float(cost[i, j]) for i, j in pairs)
    return float(matched + unmatched * (int(cost.shape[0]) - len(pairs)))
