"""Retraining from deliveries: a candidate is promoted only if it beats the serving model on
the latest held-out deliveries, and each model records what it learned from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from foodmesh.roads import RoadGraph
from foodmesh.sim import history
from servers.eta.model import load_model, model_files, save_model
from servers.eta.retrain import RetrainConfig, pass_due, retrain_once
from servers.eta.training import TrainConfig, train


@pytest.fixture(scope="module")
def deliveries() -> history.History:
    h = history.generate(RoadGraph.default(), orders=1500, seed=11, restaurants=15,
                         progress=lambda _: None)  # fmt: skip
    # What the Order database knows: no driver positions, vehicles or weather.
    n = len(h["order_ts"])
    for k in ("pickup_distance_m", "pickup_free_flow_s", "pickup_graph_s", "assign_delay_s",
              "pickup_travel_s", "driver_lat", "driver_lon"):  # fmt: skip
        h[k] = np.full(n, np.nan)
    h["vehicle"] = np.zeros(n, dtype=np.int8)
    return h


def test_too_few_deliveries_train_nothing(tmp_path: Path, deliveries: history.History) -> None:
    few = {k: v[:100] for k, v in deliveries.items()}
    out = retrain_once(few, tmp_path, config=RetrainConfig(min_orders=300), say=lambda _: None)
    assert out.decision == "skipped" and model_files(tmp_path) == []


def test_promoted_only_when_better(tmp_path: Path, deliveries: history.History) -> None:
    say: list[str] = []
    first = retrain_once(deliveries, tmp_path, config=RetrainConfig(rounds=60), say=say.append)
    assert first.decision == "promoted" and first.path is not None
    model = load_model(first.path)
    trained = model.metrics["trained_on"]
    assert trained["source"].startswith("order database")
    assert trained["orders"] == pytest.approx(0.8 * len(deliveries["order_ts"]), abs=2)
    assert trained["until_ts"] == float(deliveries["order_ts"].max())
    v = model.metrics["validation"]
    assert v["orders"] > 250 and v["mae_min"] == first.candidate_mae_min and v["mae_min"] < 5
    # A candidate that barely learned (two rounds) loses to it and is not promoted.
    weak = retrain_once(deliveries, tmp_path, config=RetrainConfig(rounds=2, min_refine=10**6),
                        say=say.append)  # fmt: skip
    assert weak.decision == "kept"
    assert weak.serving_version == model.version
    assert weak.candidate_mae_min is not None and weak.serving_mae_min is not None
    assert weak.candidate_mae_min >= weak.serving_mae_min
    assert [v for v, _ in model_files(tmp_path)] == [model.version]
    log = [json.loads(line) for line in (tmp_path / "retrain.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in log] == ["promoted", "kept"]
    assert any("kept" in s for s in say)


def test_a_model_of_another_world_is_refined_with_the_platforms_deliveries(
    tmp_path: Path, deliveries: history.History
) -> None:
    """Served: a model of kitchens 40 % slower than the city's. A few hundred deliveries
    refine it (no full retraining: too few), and the refined one is promoted."""
    other = dict(deliveries)
    slow = deliveries["prep_s"] * 1.4
    other["total_s"] = deliveries["total_s"] + slow - deliveries["prep_s"]
    other["prep_s"] = slow
    served = train(other, out_dir=None, config=TrainConfig(rounds=40, nthread=1),
                   progress=lambda _: None).model  # fmt: skip
    save_model(served, tmp_path)
    recent = {k: v[-400:] for k, v in deliveries.items()}
    out = retrain_once(recent, tmp_path, config=RetrainConfig(min_orders=10**6, min_refine=60),
                       say=lambda _: None)  # fmt: skip
    assert out.decision == "promoted", out
    assert out.candidate_mae_min is not None and out.serving_mae_min is not None
    assert out.candidate_mae_min < 0.7 * out.serving_mae_min
    assert out.path is not None
    m = load_model(out.path)
    assert m.metrics["trained_on"]["base_model"] == served.version
    assert "refined" in m.metrics["trained_on"]["how"]


def test_a_kept_model_gets_interval_bands_from_the_latest_deliveries(
    tmp_path: Path, deliveries: history.History
) -> None:
    """The serving model wins (the candidate barely learned), but the city drifted: it is
    written again, same trees, with bands from the latest deliveries."""
    first = retrain_once(deliveries, tmp_path, config=RetrainConfig(rounds=60), say=lambda _: None)
    assert first.decision == "promoted" and first.path is not None
    served = load_model(first.path)
    late = dict(deliveries)
    travel = np.asarray(deliveries["travel_s"], dtype=np.float64)
    late["total_s"] = np.asarray(deliveries["total_s"], dtype=np.float64) + 0.3 * travel
    late["travel_s"] = 1.3 * travel
    out = retrain_once(late, tmp_path, config=RetrainConfig(rounds=2, min_refine=10**6),
                       say=lambda _: None)  # fmt: skip
    assert out.decision == "kept" and out.path is not None and "recalibrated" in out.reason
    again = load_model(out.path)
    assert again.version > served.version
    assert again.metrics["recalibrated"]["from_version"] == served.version
    assert again.metrics["trained_on"] == served.metrics["trained_on"]  # nothing new learned
    # At placement the band is in units of each estimate's own spread, not minutes.
    placed_now, placed_before = (
        again.stage_residuals["placement"],
        served.stage_residuals["placement"],
    )
    assert placed_now.scaled and placed_now.high > placed_before.high + 0.2
    assert again.stage_residuals["pickup"].high > served.stage_residuals["pickup"].high + 1
    x = np.random.default_rng(0).uniform(0, 30, size=(50, again.prep.num_features()))
    assert np.array_equal(again.predict_prep(x), served.predict_prep(x))
    # The same deliveries again: the bands fit, nothing is written.
    same = retrain_once(late, tmp_path, config=RetrainConfig(rounds=2, min_refine=10**6),
                        say=lambda _: None)  # fmt: skip
    assert same.decision == "kept" and same.path is None


def test_a_pass_is_due_on_new_deliveries_since_the_last_pass_or_on_schedule() -> None:
    cfg = RetrainConfig(every_s=300, min_new=150, min_new_on_schedule=50)
    # 400 deliveries the serving model never learned from, but the last pass (which kept it)
    # saw them all: not again at every look, only when the schedule comes round.
    assert not pass_due(cfg, new_since_model=400, new_since_pass=0, since_pass_s=60)
    assert not pass_due(cfg, new_since_model=400, new_since_pass=149, since_pass_s=60)
    assert pass_due(cfg, new_since_model=400, new_since_pass=150, since_pass_s=60)
    assert pass_due(cfg, new_since_model=400, new_since_pass=0, since_pass_s=300)
    assert not pass_due(cfg, new_since_model=49, new_since_pass=49, since_pass_s=900)


def test_a_model_of_the_simulator_is_recalibrated_on_every_platform_delivery(
    tmp_path: Path, deliveries: history.History
) -> None:
    """A model trained on the simulator's history never saw one of the platform's
    deliveries: its bands come from all of them, even when they are too few to learn from
    (30 here: a 20 % slice would be 6, too few for a band)."""
    served = train(
        {k: v[:1000] for k, v in deliveries.items()}, out_dir=None,
        config=TrainConfig(rounds=40, nthread=1), progress=lambda _: None,
    ).model  # fmt: skip
    assert "trained_on" not in served.metrics  # the simulator's, not the platform's
    save_model(served, tmp_path)
    # The live city: every delivery 4 minutes later than the history's.
    late = {k: v[-30:] for k, v in deliveries.items()}
    late["total_s"] = np.asarray(late["total_s"], dtype=np.float64) + 240.0
    cfg = RetrainConfig(min_orders=10**6, min_refine=10**6)
    out = retrain_once(late, tmp_path, config=cfg, say=lambda _: None)
    assert out.decision == "kept" and out.path is not None, out
    assert "30 deliveries it never saw" in out.reason
    again = load_model(out.path)
    assert again.metrics["recalibrated"]["calibration_orders"] == 30
    before, now = served.stage_residuals["placement"], again.stage_residuals["placement"]
    assert now.n == 30 and now.low > before.low  # the band moved up, after the misses
    log = [json.loads(line) for line in (tmp_path / "retrain.jsonl").read_text().splitlines()]
    assert log[-1]["decision"] == "kept"
    # Fewer than a band needs: nothing is written.
    few = {k: v[-10:] for k, v in late.items()}
    assert retrain_once(few, tmp_path, config=cfg, say=lambda _: None).decision == "skipped"
