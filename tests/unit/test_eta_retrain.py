"""Retraining from deliveries: a candidate is promoted only if it beats the serving model on
the latest held-out deliveries, and each model records what it learned from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from foodmesh.roads import RoadGraph
from foodmesh.sim import history
from servers.eta.model import load_model, model_files
from servers.eta.retrain import RetrainConfig, retrain_once


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
    weak = retrain_once(deliveries, tmp_path, config=RetrainConfig(rounds=2), say=say.append)
    assert weak.decision == "kept"
    assert weak.serving_version == model.version
    assert weak.candidate_mae_min is not None and weak.serving_mae_min is not None
    assert weak.candidate_mae_min >= weak.serving_mae_min
    assert [v for v, _ in model_files(tmp_path)] == [model.version]
    log = [json.loads(line) for line in (tmp_path / "retrain.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in log] == ["promoted", "kept"]
    assert any("kept" in s for s in say)
