"""History generator, training, model files and hot reload, and batch legs over the real graph."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foodmesh.roads import RoadGraph
from foodmesh.sim import history
from servers.eta.model import ModelLoadError, ModelWatcher, load_model, model_files
from servers.eta.routing import Router
from servers.eta.training import TrainConfig, TrainResult, train

SMALL = {"orders": 3000, "seed": 3, "restaurants": 30, "progress": lambda _: None}


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.default()


@pytest.fixture(scope="module")
def hist(graph: RoadGraph) -> history.History:
    return history.generate(graph, **SMALL)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(hist: history.History, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(rounds=80, nthread=1)
    return train(hist, out_dir=out, config=cfg, progress=lambda _: None)


def test_history_is_deterministic_by_seed(graph: RoadGraph, hist: history.History) -> None:
    tiny = {**SMALL, "orders": 200, "restaurants": 6}
    again = history.generate(graph, **tiny)  # type: ignore[arg-type]
    other = history.generate(graph, **{**tiny, "seed": 4})  # type: ignore[arg-type]
    same = history.generate(graph, **tiny)  # type: ignore[arg-type]
    for k in history.COLUMNS:
        assert np.array_equal(again[k], same[k]), k
    assert not np.array_equal(again["prep_s"], other["prep_s"])
    assert set(hist) == set(history.COLUMNS)
    assert len(hist["order_ts"]) == 3000
    assert np.all(np.diff(hist["order_ts"]) >= 0)  # in time order


def test_history_is_plausible(hist: history.History) -> None:
    total = hist["total_s"] / 60
    assert 15 < np.median(total) < 60
    assert np.allclose(hist["total_s"], hist["prep_s"] + hist["wait_s"] + hist["travel_s"])
    # Travel follows the road graph: never faster than free flow on a car by much.
    car = hist["vehicle"] == 3
    assert np.median(hist["travel_s"][car] / hist["route_graph_s"][car]) > 0.9
    # Rush hour is slower on the graph than the night.
    rush = (hist["hour"] == 18) & (hist["day_of_week"] < 5)
    night = hist["hour"] == 23
    mult = hist["route_graph_s"] / hist["route_free_flow_s"]
    assert mult[rush].mean() > mult[night].mean() + 0.2


def test_history_round_trips_through_npz_and_csv(hist: history.History, tmp_path: Path) -> None:
    small = {k: v[:50] for k, v in hist.items()}
    for name in ("h.npz", "h.csv"):
        path = history.save(small, tmp_path / name)
        back = history.load(path)
        for k in history.COLUMNS:
            if back[k].dtype.kind == "f":
                assert np.allclose(back[k], small[k]), k
            else:
                assert np.array_equal(back[k], small[k]), k
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception):  # noqa: B017 — numpy's own error for a broken file
        history.load(tmp_path / "bad.npz")


def test_trained_model_beats_the_routing_only_baseline(trained: TrainResult) -> None:
    ho = trained.metrics["held_out"]
    for part in ("prep", "travel", "total", "total_driver_assigned"):
        assert ho[part]["mae_min"] < 0.8 * ho[part]["baseline_mae_min"], (part, ho[part])
        assert ho[part]["p90_min"] < ho[part]["baseline_p90_min"], part
    assert ho["total"]["mae_min"] < 5.0  # the design's target, even on this small history
    # The honest baselines: (a) route + the restaurant's rolling mean prep, (b) the seed's.
    assert ho["total"]["mae_min"] < 0.85 * ho["total"]["rolling_baseline_mae_min"], ho["total"]
    assert ho["total"]["mae_min"] < ho["total"]["seed_baseline_mae_min"], ho["total"]
    assert 0.6 < ho["total"]["interval80_coverage"] <= 1.0


def test_model_file_is_versioned_with_metrics_and_features(trained: TrainResult) -> None:
    assert trained.path is not None and trained.path.exists()
    meta = json.loads(trained.path.with_name(f"eta-{trained.model.version}.meta.json").read_text())
    assert meta["version"] == trained.model.version
    assert "restaurant_recent_prep_min" in meta["prep_features"]
    assert "driver_speed_ratio" in meta["travel_features"]
    assert meta["metrics"]["held_out"]["total"]["mae_min"] > 0
    loaded = load_model(trained.path)
    assert loaded.version == trained.model.version
    x = np.array([[20.0, 18.5, 10, 2, 30.0, 12, 1, 1, 3, 1]])
    assert np.allclose(loaded.predict_prep(x), trained.model.predict_prep(x))
    q = loaded.predict_prep(x)[0]
    assert q[0] <= q[1] <= q[2]


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"format": "something-else"}', b"truncated"],
)
def test_a_corrupt_model_file_is_refused_with_a_clear_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "eta-20990101T000000000000Z.json"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match="eta-20990101T000000000000Z.json refused"):
        load_model(p)


def test_a_model_with_a_damaged_booster_is_refused(trained: TrainResult, tmp_path: Path) -> None:
    assert trained.path is not None
    doc = json.loads(trained.path.read_text())
    doc["travel_booster"] = doc["travel_booster"][: len(doc["travel_booster"]) // 2]
    p = tmp_path / "eta-20990101T000000000000Z.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="refused"):
        load_model(p)


def test_watcher_loads_the_newest_and_keeps_the_previous_one_when_a_newer_file_is_bad(
    trained: TrainResult, tmp_path: Path
) -> None:
    assert trained.path is not None
    w = ModelWatcher(tmp_path)
    assert not w.poll_once() and w.current is None  # empty: baseline
    shutil.copy(trained.path, tmp_path / trained.path.name)
    assert w.poll_once() and w.current is not None
    assert w.current.version == trained.model.version
    bad = tmp_path / "eta-29990101T000000000000Z.json"
    bad.write_text('{"format": "foodmesh-eta/1", "version": "x"')
    assert not w.poll_once()
    assert w.current.version == trained.model.version
    assert w.last_error is not None and bad.name in w.last_error
    assert not w.poll_once()  # refused once, not retried until it changes
    assert [v for v, _ in model_files(tmp_path)][-1] == "29990101T000000000000Z"


def test_batch_legs_match_single_routes(graph: RoadGraph) -> None:
    router = Router(graph)
    rng = np.random.default_rng(5)
    origins = [(37.7749 + rng.uniform(-0.03, 0.03), -122.4194 + rng.uniform(-0.03, 0.03))
               for _ in range(30)]  # fmt: skip
    dest = [(37.7800, -122.4100)] * 20 + [(37.7650, -122.4300)] * 10
    when = dt.datetime(2026, 1, 6, 18, tzinfo=dt.UTC)
    # Many drivers to two restaurants (searches from the destinations), and two kitchens
    # to many customers (searches from the origins).
    legs = router.legs(origins, dest, depart_at=when) + router.legs(dest, origins, depart_at=when)
    for o, d, leg in zip(origins + dest, dest + origins, legs, strict=True):
        r = router.route(o, d, depart_at=when)
        assert leg.duration_s == pytest.approx(r.duration_s, rel=1e-6)
        assert leg.distance_m == pytest.approx(r.distance_m, rel=1e-6)
        assert leg.free_flow_s == pytest.approx(r.free_flow_s, rel=1e-6)
        assert not leg.straight_line


def test_points_off_the_roads_fall_back_to_a_straight_line(graph: RoadGraph) -> None:
    router = Router(graph)
    when = dt.datetime(2026, 1, 6, 18, tzinfo=dt.UTC)
    sea = (37.7749, -122.75)  # ~29 km west of the design's point, in the Pacific
    r = router.route((37.7749, -122.4194), sea, depart_at=when)
    assert r.straight_line and r.distance_m > 25_000
    legs = router.legs([sea, (37.7749, -122.4194)], [(37.78, -122.41)] * 2, depart_at=when)
    assert legs[0].straight_line and not legs[1].straight_line


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    edges=st.lists(
        st.tuples(st.integers(0, 39), st.integers(0, 39), st.floats(1.0, 500.0)),
        min_size=1,
        max_size=150,
    ),  # fmt: skip
    root=st.integers(0, 39),
    reverse=st.booleans(),
)
def test_tree_sums_equal_a_walk_up_the_predecessor_tree(
    n: int, edges: list[tuple[int, int, float]], root: int, reverse: bool
) -> None:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    from foodmesh.roads._trees import EdgeIndex, tree_sums

    es = [(u % n, v % n, w) for u, v, w in edges if u % n != v % n]
    if not es:
        return
    u = np.array([e[0] for e in es])
    v = np.array([e[1] for e in es])
    w = np.array([e[2] for e in es])
    order = np.lexsort((w, v, u))
    u, v, w = u[order], v[order], w[order]
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])  # one edge per pair: the lightest
    u, v, w = u[keep], v[keep], w[keep]
    keys = u.astype(np.int64) * n + v
    index = EdgeIndex(keys=keys, ids=np.arange(len(keys), dtype=np.int64), n=n)
    m = csr_matrix((w, (v, u)) if reverse else (w, (u, v)), shape=(n, n))
    dist, pred = dijkstra(m, directed=True, indices=root % n, return_predecessors=True)
    values = np.column_stack([w, 2 * w])
    sums = tree_sums(pred, index=index, values=values, reverse=reverse)
    for node in range(n):
        if not np.isfinite(dist[node]):
            continue
        total, x = 0.0, node
        while pred[x] >= 0:
            a, b = (x, pred[x]) if reverse else (pred[x], x)
            total += float(w[int(np.flatnonzero((u == a) & (v == b))[0])])
            x = pred[x]
        assert sums[node, 0] == pytest.approx(total) == pytest.approx(dist[node])
        assert sums[node, 1] == pytest.approx(2 * total)
