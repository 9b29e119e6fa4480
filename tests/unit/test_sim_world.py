"""One world: the offline history and the live simulator's agents draw the same kitchens
and trips (foodmesh.sim.world), so a model trained offline serves the live city."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from foodmesh.roads import RoadGraph, TrafficModel
from foodmesh.sim import history, world
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.demand import distance_m
from foodmesh.sim.driver_motion import Router
from foodmesh.sim.kitchens import plan_kitchen


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.default()


@pytest.fixture(scope="module")
def hist(graph: RoadGraph) -> history.History:
    return history.generate(graph, orders=2000, seed=5, restaurants=20, progress=lambda _: None)


def _close_quantiles(a: np.ndarray, b: np.ndarray, *, rel: float) -> None:
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        qa, qb = float(np.quantile(a, q)), float(np.quantile(b, q))
        assert qa == pytest.approx(qb, rel=rel), (q, qa, qb)


def test_live_kitchens_cook_as_the_history_says(hist: history.History) -> None:
    specs = {r.restaurant_id: r for r in build_city(seed=7, restaurants=20, drivers=0,
                                                    customers=1).restaurants}  # fmt: skip
    rng = random.Random(3)
    live = np.array([
        plan_kitchen(rng, specs[str(r)], items=int(i), load=int(ld),
                     peak=bool(world.is_peak(h, d)), weather=int(w)).ready_s / 60.0
        for r, i, ld, h, d, w in zip(hist["restaurant_id"], hist["item_count"],
                                     hist["restaurant_load"], hist["hour"],
                                     hist["day_of_week"], hist["weather"], strict=True)
    ])  # fmt: skip
    _close_quantiles(live, hist["prep_s"] / 60.0, rel=0.05)
    # Per kitchen too: each restaurant's live mean within 6 % of its history's.
    for rid in np.unique(hist["restaurant_id"])[:8]:
        m = hist["restaurant_id"] == rid
        assert live[m].mean() == pytest.approx(hist["prep_s"][m].mean() / 60.0, rel=0.06), rid


def test_live_drivers_drive_as_the_history_says(graph: RoadGraph, hist: history.History) -> None:
    router = Router(graph=graph, traffic=TrafficModel())
    rng = random.Random(4)
    rows = np.random.default_rng(0).choice(len(hist["order_ts"]), size=250, replace=False)
    live, past = [], []
    for i in rows:
        a = (float(hist["restaurant_lat"][i]), float(hist["restaurant_lon"][i]))
        b = (float(hist["customer_lat"][i]), float(hist["customer_lon"][i]))
        when = dt.datetime.fromtimestamp(float(hist["order_ts"][i]), dt.UTC)
        w = int(hist["weather"][i])
        leg = router.leg(a, b, when=when, vehicle=int(hist["vehicle"][i]), rng=rng,
                         pace=world.driver_pace(str(hist["driver_id"][i])))  # fmt: skip
        # The history's weather slows its drives; the live city's sky is clear.
        clear = leg.duration_s * world.WEATHER_TRAVEL[w]
        live.append(clear + world.parking_seconds(rng, distance_m(b, CENTER) / 1000.0))
        past.append(float(hist["travel_s"][i]))
    _close_quantiles(np.array(live), np.array(past), rel=0.1)
