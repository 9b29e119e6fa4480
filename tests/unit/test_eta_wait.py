"""The pickup wait on live supply, weather and events: the world, the history, the model."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from foodmesh.roads import RoadGraph
from foodmesh.sim import history, world
from servers.eta.estimate import DeliveryInput, estimate_delivery
from servers.eta.features import WAIT_FEATURES, wait_matrix
from servers.eta.model import EtaModel, ModelLoadError, load_model
from servers.eta.training import (
    TrainConfig,
    TrainResult,
    _wait_x,
    kitchen_columns,
    refine,
    train,
)
from tests.unit._eta import delivery_input

SMALL = {"orders": 3000, "seed": 5, "restaurants": 30, "progress": lambda _: None}
CFG = TrainConfig(rounds=60, nthread=1)


@pytest.fixture(scope="module")
def hist() -> history.History:
    return history.generate(RoadGraph.default(), **SMALL)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(hist: history.History, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("models")
    return train(hist, out_dir=out, config=CFG, progress=lambda _: None)


def _input(**kw: object) -> DeliveryInput:
    """An order just placed at the weekday dinner rush, no driver yet."""
    now = dt.datetime(2026, 1, 7, 2, 30, tzinfo=dt.UTC)  # Tuesday 18:30 in San Francisco
    rush: dict[str, object] = {"order_time": now, "now": now, "order_hour": 18, "hour": 18,
                               "restaurant_load": 2, "listed_prep_min": 10.0}  # fmt: skip
    return delivery_input(**{**rush, **kw})


# -- the world ---------------------------------------------------------------------------


def test_free_drivers_are_fewest_at_the_rush_and_thinned_by_weather_and_events() -> None:
    rush, lull = world.free_drivers_mean(18, 1), world.free_drivers_mean(15, 1)
    assert rush < 0.5 * lull
    assert world.free_drivers_mean(15, 1, weather=4) < lull  # heavy rain
    assert world.free_drivers_mean(15, 1, event=1.5) < lull
    every = world.free_drivers_mean(np.arange(24), np.full(24, 2))
    assert np.all(every >= world.SUPPLY_FLOOR)
    assert world.on_shift_share(3) == 0.0 and 0.0 < world.on_shift_share(12) <= 1.0


def test_fewer_free_drivers_mean_a_later_assignment_and_a_farther_driver() -> None:
    rng = np.random.default_rng(0)
    r = world.SUPPLY_RADIUS_M
    delays, dists = [], []
    for n in (0, 1, 4, 16):
        delays.append(world.assign_delay_seconds_many(rng, np.full(20_000, n)).mean())
        d = world.nearest_driver_m_many(rng, np.full(20_000, n))
        dists.append(d.mean())
        if n:  # the nearest of n uniform points in a disc: R Γ(n+1) Γ(3/2) / Γ(n+3/2)
            exact = r * math.exp(math.lgamma(n + 1) + math.lgamma(1.5) - math.lgamma(n + 1.5))
            assert d.mean() == pytest.approx(exact, rel=0.03)
            assert d.max() <= r
        else:  # none near: from a neighbouring cell
            assert d.min() >= r
    assert delays == sorted(delays, reverse=True)
    assert dists == sorted(dists, reverse=True)
    assert delays[0] > 4 * delays[-1]


def test_events_are_a_few_orders_with_pricings_factors() -> None:
    ev = world.event_multipliers_many(np.random.default_rng(1), 50_000)
    share = float(np.mean(ev > 1.0))
    assert share == pytest.approx(world.EVENT_SHARE, abs=0.01)
    assert set(np.unique(ev)) <= {1.0, 1.2, 1.5, 1.8}
    slower = world.prep_multiplier(2, 1, False, 1, 1.5) / world.prep_multiplier(2, 1, False, 1)
    assert float(slower) > 1.05


# -- the history -------------------------------------------------------------------------


def test_history_draws_waits_from_the_supply(hist: history.History) -> None:
    n = hist["drivers_nearby"]
    assert np.all(n >= 0) and np.array_equal(n, np.round(n))
    assert 0.02 < float(np.mean(hist["event_multiplier"] > 1.0)) < 0.12
    none, many = n == 0, n >= 8
    assert none.sum() > 50 and many.sum() > 50
    for col in ("assign_delay_s", "pickup_distance_m", "wait_s"):
        assert hist[col][none].mean() > 1.3 * hist[col][many].mean(), col
    assert np.allclose(hist["total_s"], hist["prep_s"] + hist["wait_s"] + hist["travel_s"])


@pytest.mark.parametrize("name", ["old.npz", "old.csv"])
def test_a_history_saved_before_the_supply_columns_still_loads(
    hist: history.History, tmp_path: Path, name: str
) -> None:
    small = {k: v[:40] for k, v in hist.items()}
    back = history.load(history.save(small, tmp_path / f"new-{name}"))
    for k in ("drivers_nearby", "event_multiplier"):
        assert np.array_equal(back[k], small[k]), k
    old = {k: v for k, v in small.items() if k not in ("drivers_nearby", "event_multiplier")}
    p = tmp_path / name
    if name.endswith(".npz"):
        np.savez_compressed(p, **old)  # type: ignore[arg-type]
    else:
        cols = list(old)
        p.write_text(",".join(cols) + "\n" + "\n".join(
            ",".join(str(old[c][i]) for c in cols) for i in range(40)) + "\n")  # fmt: skip
    loaded = history.load(p)
    assert np.all(np.isnan(loaded["drivers_nearby"])) and len(loaded["drivers_nearby"]) == 40
    assert np.all(loaded["event_multiplier"] == 1.0)


# -- features and leakage ----------------------------------------------------------------


def test_wait_features_are_known_at_placement_only(hist: history.History) -> None:
    """Rewriting later orders' outcomes and conditions changes no earlier order's features."""
    base = kitchen_columns(hist)
    cut = float(np.quantile(hist["order_ts"], 0.7))
    later = hist["order_ts"] > cut
    future = dict(hist)
    for k in ("wait_s", "assign_delay_s", "pickup_distance_m", "pickup_travel_s", "prep_s"):
        future[k] = np.where(later, hist[k] * 3.0 + 600.0, hist[k])
    future["drivers_nearby"] = np.where(later, 0.0, hist["drivers_nearby"])
    moved = kitchen_columns(future)
    early = ~later
    a, b = _wait_x(base), _wait_x(moved)
    assert a.shape[1] == len(WAIT_FEATURES)
    assert np.array_equal(a[early], b[early], equal_nan=True)
    assert not np.array_equal(a[later], b[later], equal_nan=True)
    # No outcome is a feature: the wait itself, nor what decides it after placement.
    assert not {"wait_s", "assign_delay_s", "pickup_distance_m"} & set(WAIT_FEATURES)


def test_wait_training_learns_only_from_orders_before_the_held_out_ones(
    hist: history.History,
) -> None:
    cfg = TrainConfig(rounds=15, nthread=1, holdout=0.3)
    cut = float(np.quantile(hist["order_ts"], 1 - cfg.holdout))
    held = hist["order_ts"] >= cut
    future = dict(hist)
    for k in ("prep_s", "wait_s", "travel_s", "total_s"):
        future[k] = np.where(held, hist[k] * 2.0, hist[k])
    future["drivers_nearby"] = np.where(held, 0.0, hist["drivers_nearby"])
    a = train(hist, out_dir=None, config=cfg, progress=lambda _: None).model
    b = train(future, out_dir=None, config=cfg, progress=lambda _: None).model
    x = _wait_x(kitchen_columns(hist))
    assert a.wait is not None and b.wait is not None
    assert np.array_equal(a.predict_wait(x), b.predict_wait(x))
    assert a.wait_interval_scale == b.wait_interval_scale


# -- the model ---------------------------------------------------------------------------


def _wait_row(model: EtaModel, nearby: float, **kw: float) -> np.ndarray:
    x = wait_matrix(hour=kw.get("hour", 18), day_of_week=1, weather=kw.get("weather", 1),
                    event_multiplier=kw.get("event", 1.0), drivers_nearby=nearby,
                    restaurant_load=2, listed_prep_min=10.0, recent_prep_min=math.nan,
                    item_count=2)  # fmt: skip
    return model.predict_wait(x)[0]


def test_the_wait_model_learns_that_fewer_drivers_nearby_mean_a_longer_wait(
    trained: TrainResult,
) -> None:
    m = trained.model
    assert m.wait is not None
    # The wait's median moves less than its tail (the kitchen often still cooks when the
    # driver comes, even from afar); its expectation (the quantiles' mean) moves clearly.
    none, many = _wait_row(m, 0.0), _wait_row(m, 15.0)
    assert none.mean() > many.mean() + 1.5, (none, many)
    assert none[2] > many[2] + 2.0, (none, many)
    assert none[1] >= many[1] - 0.1, (none, many)
    unknown = _wait_row(m, math.nan)  # trained on the same orders with the count hidden
    assert many.mean() - 0.5 <= unknown.mean() <= none.mean()
    # Served: the same order with no driver nearby promises a longer pickup.
    few = estimate_delivery(_input(drivers_nearby=0.0), m)
    lots = estimate_delivery(_input(drivers_nearby=15.0), m)
    assert few.pickup.high > lots.pickup.high + 2.0
    assert few.pickup.median >= lots.pickup.median - 0.1
    assert few.interval.upper > lots.interval.upper
    assert few.prep == lots.prep and few.delivery == lots.delivery
    ho = trained.metrics["held_out"]
    assert ho["wait"]["model"] == "booster" and ho["wait"]["mae_min"] > 0
    assert 0.6 < ho["wait"]["interval80_coverage"] <= 1.0
    assert ho["total"]["mae_min"] < 1.02 * ho["total"]["wait_by_hour_mae_min"], ho["total"]


def test_a_model_file_without_the_wait_booster_loads_and_serves_the_wait_by_hour(
    trained: TrainResult, tmp_path: Path
) -> None:
    assert trained.path is not None
    loaded = load_model(trained.path)
    assert loaded.wait is not None
    x = wait_matrix(hour=np.arange(24), day_of_week=1, weather=1, event_multiplier=1.0,
                    drivers_nearby=np.arange(24) % 5, restaurant_load=1, listed_prep_min=12.0,
                    recent_prep_min=math.nan, item_count=2)  # fmt: skip
    assert np.allclose(loaded.predict_wait(x), trained.model.predict_wait(x))
    meta = json.loads(trained.path.with_name(f"eta-{loaded.version}.meta.json").read_text())
    assert meta["wait_features"] == list(WAIT_FEATURES)

    doc = json.loads(trained.path.read_text())
    for k in ("wait_booster", "wait_features", "wait_interval_scale"):
        del doc[k]
    old = tmp_path / "eta-20250101T000000000000Z.json"
    old.write_text(json.dumps(doc))
    m = load_model(old)
    assert m.wait is None
    est = estimate_delivery(_input(drivers_nearby=0.0), m)
    lo, mid, hi = m.pickup_wait_by_hour[18]
    assert (est.pickup.median, est.pickup.low, est.pickup.high) == (mid, lo, hi)
    with pytest.raises(ValueError, match="no pickup-wait booster"):
        m.predict_wait(x)
    # Refining an old model keeps it without one; it still serves.
    h = kitchen_columns(history.generate(RoadGraph.default(), orders=300, seed=8,
                                         restaurants=6, progress=lambda _: None))  # fmt: skip
    assert refine(m, h, rounds=5).wait is None

    doc = json.loads(trained.path.read_text())
    doc["wait_features"] = doc["wait_features"][:-1]
    bad = tmp_path / "eta-20250102T000000000000Z.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="wait features differ"):
        load_model(bad)


def test_refine_boosts_the_wait_model_on_the_platforms_deliveries(trained: TrainResult) -> None:
    h = kitchen_columns(history.generate(RoadGraph.default(), orders=400, seed=12,
                                         restaurants=8, progress=lambda _: None))  # fmt: skip
    h["wait_s"] = h["wait_s"] + 300.0  # the platform's pickups take five minutes longer
    out = refine(trained.model, h, rounds=30, learning_rate=0.2)
    assert out.wait is not None and out.wait is not trained.model.wait
    before, after = _wait_row(trained.model, 5.0), _wait_row(out, 5.0)
    assert after[1] > before[1] + 1.0, (before, after)
    assert "placement" in out.stage_residuals


def test_training_accepts_a_history_without_supply_or_events(hist: history.History) -> None:
    """The Order database's history before it records them: trained with them unknown."""
    old = {k: v for k, v in hist.items() if k not in ("drivers_nearby", "event_multiplier")}
    res = train(old, out_dir=None, config=TrainConfig(rounds=10, nthread=1),
                progress=lambda _: None)  # fmt: skip
    m = res.model
    assert m.wait is not None
    q = _wait_row(m, math.nan)
    assert np.all(np.isfinite(q)) and q[0] <= q[1] <= q[2]
    assert res.metrics["held_out"]["wait"]["mae_min"] > 0
