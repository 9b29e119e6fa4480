"""Live kitchen features as of each order's placement: nothing from the future leaks in."""

from __future__ import annotations

import numpy as np
import pytest

from foodmesh.roads import RoadGraph
from foodmesh.sim import history
from servers.eta.kitchen import kitchen_as_of
from servers.eta.training import TrainConfig, _prep_x, kitchen_columns, train


def test_a_kitchen_counts_only_what_was_ready_before_the_order() -> None:
    rid = np.array(["r1", "r1", "r1", "r2", "r1"])
    placed = np.array([0.0, 300.0, 700.0, 710.0, 2000.0])
    prep = np.array([600.0, 1200.0, 900.0, 60.0, 300.0])
    recent, n, open_ = kitchen_as_of(rid, placed, prep)
    assert np.isnan(recent[0]) and n[0] == 0 and open_[0] == 0
    assert np.isnan(recent[1]) and open_[1] == 1  # the first is still cooking
    assert recent[2] == pytest.approx(10.0) and n[2] == 1 and open_[2] == 1  # B cooks on
    assert np.isnan(recent[3]) and open_[3] == 0  # another kitchen
    # By 2000 s: A (10 min), B (20 min) and C (15 min) are all ready.
    assert recent[4] == pytest.approx(15.0) and n[4] == 3 and open_[4] == 0


@pytest.fixture(scope="module")
def hist() -> history.History:
    g = RoadGraph.default()
    return history.generate(g, orders=1500, seed=9, restaurants=10, progress=lambda _: None)


def test_changing_the_future_changes_no_earlier_orders_features(hist: history.History) -> None:
    base = kitchen_columns(hist)
    cut = float(np.quantile(hist["order_ts"], 0.7))
    future = dict(hist)
    later = hist["order_ts"] > cut
    future["prep_s"] = np.where(later, hist["prep_s"] * 3.0 + 600.0, hist["prep_s"])
    future["restaurant_load"] = np.full_like(hist["restaurant_load"], 99)  # a leaky column
    moved = kitchen_columns(future)
    early = ~later
    assert np.array_equal(_prep_x(base)[early], _prep_x(moved)[early], equal_nan=True)
    assert not np.array_equal(_prep_x(base)[later], _prep_x(moved)[later], equal_nan=True)
    # The generator's own load is the same as-of count training computes.
    assert np.array_equal(base["restaurant_load"], hist["restaurant_load"])


def test_training_learns_only_from_what_was_known_at_order_time(hist: history.History) -> None:
    """Rewriting the held-out orders' outcomes leaves the trained model unchanged."""
    cfg = TrainConfig(rounds=15, nthread=1, holdout=0.3)
    cut = float(np.quantile(hist["order_ts"], 1 - cfg.holdout))
    future = dict(hist)
    held = hist["order_ts"] >= cut
    for k in ("prep_s", "wait_s", "travel_s", "total_s"):
        future[k] = np.where(held, hist[k] * 2.0, hist[k])
    a = train(hist, out_dir=None, config=cfg, progress=lambda _: None).model
    b = train(future, out_dir=None, config=cfg, progress=lambda _: None).model
    x = _prep_x(kitchen_columns(hist))
    assert np.array_equal(a.predict_prep(x), b.predict_prep(x))
    assert a.prep_interval_scale == b.prep_interval_scale
