"""The batch solver: never worse than greedy, no driver twice, infeasible pairs never chosen."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from servers.dispatch.assignment import greedy, solve, total_cost


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 9))
    m = draw(st.integers(0, 9))
    cost = draw(arrays(np.float64, (n, m), elements=st.floats(0, 1, allow_nan=False)))
    feasible = draw(arrays(np.bool_, (n, m)))
    return cost, feasible


@settings(max_examples=300, deadline=None)
@given(instances())
def test_solver_total_cost_never_exceeds_greedy_and_no_driver_is_used_twice(
    inst: tuple[np.ndarray, np.ndarray],
) -> None:
    cost, feasible = inst
    big = float(min(cost.shape, default=0) + 1)
    ours = solve(cost, feasible)
    base = greedy(cost, feasible)
    for pairs in (ours, base):
        assert len({j for _, j in pairs}) == len(pairs)  # no driver twice
        assert len({i for i, _ in pairs}) == len(pairs)  # no order twice
        assert all(feasible[i, j] for i, j in pairs)  # nothing infeasible
    assert len(ours) >= len(base)
    assert total_cost(cost, ours, unmatched=big) <= total_cost(cost, base, unmatched=big) + 1e-9


def test_solver_beats_greedy_where_first_come_first_served_steals_a_driver() -> None:
    # Order 0 takes driver 0 greedily; order 1 then has only a bad option.
    cost = np.array([[0.1, 0.2], [0.15, 0.9]])
    feasible = np.ones((2, 2), dtype=bool)
    assert greedy(cost, feasible) == [(0, 0), (1, 1)]
    assert sorted(solve(cost, feasible)) == [(0, 1), (1, 0)]


def test_rectangular_more_orders_than_drivers_and_orders_without_candidates() -> None:
    cost = np.array([[0.5], [0.2], [0.9]])
    feasible = np.array([[True], [True], [False]])
    assert solve(cost, feasible) == [(1, 0)]
    assert solve(np.zeros((0, 4)), np.zeros((0, 4), dtype=bool)) == []
    assert solve(np.zeros((3, 3)), np.zeros((3, 3), dtype=bool)) == []


def test_solver_prefers_more_matches_over_a_cheaper_single_match() -> None:
    cost = np.array([[0.0, 1.0], [0.0, 1.0]])
    feasible = np.array([[True, True], [True, False]])
    # Order 1 can only take driver 0; order 0 must then take driver 1, though it costs 1.
    assert sorted(solve(cost, feasible)) == [(0, 1), (1, 0)]


@settings(max_examples=100, deadline=None)
@given(instances())
def test_the_pruned_path_for_large_batches_finds_the_same_optimum_when_nothing_is_pruned(
    inst: tuple[np.ndarray, np.ndarray],
) -> None:
    cost, feasible = inst
    big = float(min(cost.shape, default=0) + 1)
    dense = solve(cost, feasible)
    pruned = solve(cost, feasible, sparse_above=0, top_k=cost.shape[1] if cost.size else 1)
    assert len({j for _, j in pruned}) == len(pruned)
    assert all(feasible[i, j] for i, j in pruned)
    assert len(pruned) == len(dense)
    assert total_cost(cost, pruned, unmatched=big) == pytest.approx(
        total_cost(cost, dense, unmatched=big)
    )
