"""A live round: the store's state through ``live.py`` into the planner, and back as offers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from foodmesh.v1 import common_pb2
from servers.dispatch import assignment
from servers.dispatch.engine import EngineConfig
from servers.dispatch.live import live_state, proposal_of
from servers.dispatch.matching import Candidate
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.trips import TripRound, plan_trips

REST = (37.7755, -122.4183)
NOW = 1_000_000.0
MILE_LAT = 1 / 69.05  # degrees of latitude in a mile
CONFIG = EngineConfig()  # the service's defaults: one order a trip, offered at once


def order(oid: str = "o1", **kw: Any) -> Assignment:
    t0 = dt.datetime.fromtimestamp(NOW - 60, dt.UTC)
    base: dict[str, Any] = dict(
        order_id=oid, region="9q8y", status=AssignmentStatus.PENDING, driver_id="",
        pickup_lat=REST[0], pickup_lon=REST[1], pickup_label="Pizza",
        dropoff_lat=REST[0] - 0.01, dropoff_lon=REST[1], dropoff_label="door",
        ready_at=dt.datetime.fromtimestamp(NOW + 600, dt.UTC), offers_made=0, excluded=[],
        radius_miles=5.0, front=False, tip_minor=0, currency="USD", est_pickup_at=None,
        est_delivery_at=None, created_at=t0, updated_at=t0,
    )  # fmt: skip
    base.update(kw)
    return Assignment(**base)


def driver(did: str, miles_north: float, **kw: Any) -> Candidate:
    return Candidate(driver_id=did, lat=REST[0] + miles_north * MILE_LAT, lon=REST[1], **kw)


def plan(orders: list[Assignment], drivers: list[Candidate], *, greedy: bool = False) -> TripRound:
    cfg = CONFIG.trip_config()
    state = live_state(orders, drivers, [], now=NOW, config=cfg, expiry_s=CONFIG.rules.expiry_s)
    return plan_trips(state.orders, state.drivers, now=NOW, interval_s=CONFIG.batch_interval_s,
                      travel=CONFIG.travel(), config=cfg,
                      solver=assignment.greedy if greedy else assignment.solve)  # fmt: skip


def given(rnd: TripRound) -> dict[str, str]:
    return {o: p.driver_id for p in rnd.plans if p.commit for o in p.order_ids}


def test_the_nearest_of_equal_drivers_is_offered_with_times_distance_and_why() -> None:
    rnd = plan([order()], [driver("far", 3), driver("near", 0.5), driver("mid", 1.5)])
    (tp,) = rnd.plans
    assert tp.driver_id == "near" and tp.commit
    p = proposal_of(tp, "o1", now=NOW, config=CONFIG.trip_config(),
                    driver_at=(REST[0] + 0.5 * MILE_LAT, REST[1]))  # fmt: skip
    assert p.to_pickup_miles == pytest.approx(0.5, rel=0.01)
    assert p.pickup_at == NOW + 600  # arrives before the food is ready: waits for it
    assert p.delivery_at > p.pickup_at
    assert 0 <= p.score <= 1
    # Why: the weighted parts add up to the planner's cost; three drivers could have taken it.
    assert sum(w * v for _, w, v in p.parts) == pytest.approx(p.cost)
    assert p.alternatives == 3 and p.bundle == ()
    assert p.why()["delivery_at"] == round(p.delivery_at, 1)


def test_an_order_considers_drivers_inside_its_radius_widened_after_a_round_of_nobody() -> None:
    far = driver("far", 8)
    rnd = plan([order()], [far])
    assert rnd.plans == [] and rnd.waiting == ["o1"]  # the engine widens it to 10 mi
    assert given(plan([order(radius_miles=10.0)], [far])) == {"o1": "far"}
    too_far = driver("x", 12)
    assert plan([order(radius_miles=10.0)], [too_far]).plans == []
    assert plan([order(radius_miles=15.0)], [too_far]).plans  # escalated


def test_decliners_are_excluded_and_vehicles_must_fit_the_trip() -> None:
    cands = [driver("a", 0.2), driver("b", 0.4)]
    assert given(plan([order(excluded=["a"])], cands)) == {"o1": "b"}
    walker = driver("w", 0.3, vehicle_type=common_pb2.VEHICLE_TYPE_WALKING)
    long_trip = order(dropoff_lat=REST[0] - 3 * MILE_LAT)
    assert plan([long_trip], [walker]).plans == []
    assert plan([order()], [walker]).plans


def test_a_likely_decline_costs_minutes_so_a_keen_driver_a_little_farther_goes_first() -> None:
    choosy = driver("choosy", 0.1, acceptance=0.4)
    keen = driver("keen", 0.6, acceptance=0.9)
    assert given(plan([order()], [choosy, keen])) == {"o1": "keen"}
    assert given(plan([order()], [choosy])) == {"o1": "choosy"}  # nobody else: still served


def test_the_round_assigns_globally_where_greedy_steals_the_shared_nearest_driver() -> None:
    # o1 (first) is next to both drivers; o2 is reachable only cheaply from "a".
    o1 = order("o1", ready_at=dt.datetime.fromtimestamp(NOW, dt.UTC))
    o2 = order("o2", pickup_lat=REST[0] + 1.2 * MILE_LAT,
               ready_at=dt.datetime.fromtimestamp(NOW, dt.UTC))  # fmt: skip
    a, b = driver("a", 1.0), driver("b", -0.2)
    assert given(plan([o1, o2], [a, b])) == {"o1": "b", "o2": "a"}


def test_orders_at_the_front_of_the_pool_win_a_scarce_driver() -> None:
    rnd = plan([order("new"), order("lost", front=True)], [driver("only", 1)])
    assert given(rnd) == {"lost": "only"} and rnd.waiting == ["new"]
