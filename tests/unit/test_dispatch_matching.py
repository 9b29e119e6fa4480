"""One batch of matching: radius widening, filters, relaxation, exclusions, policies."""

from __future__ import annotations

from typing import Any

import pytest

from foodmesh.core.errors import FailedPrecondition
from foodmesh.v1 import common_pb2
from servers.dispatch.matching import Candidate, MatchConfig, PendingOrder, plan_batch
from servers.dispatch.offers import Action, AssignmentStatus, OfferRules, step

REST = (37.7755, -122.4183)
NOW = 1_000_000.0
MILE_LAT = 1 / 69.05  # degrees of latitude in a mile


def order(oid: str = "o1", **kw: Any) -> PendingOrder:
    base: dict[str, Any] = dict(
        order_id=oid,
        pickup_lat=REST[0],
        pickup_lon=REST[1],
        dropoff_lat=REST[0] - 0.01,
        dropoff_lon=REST[1],
        ready_at=NOW + 600,
    )
    base.update(kw)
    return PendingOrder(**base)


def driver(did: str, miles_north: float, **kw: Any) -> Candidate:
    return Candidate(driver_id=did, lat=REST[0] + miles_north * MILE_LAT, lon=REST[1], **kw)


def test_the_nearest_of_equal_drivers_is_proposed_with_times_and_distance() -> None:
    plan = plan_batch(
        [order()],
        [driver("far", 3), driver("near", 0.5), driver("mid", 1.5)],
        now=NOW,
        config=MatchConfig(),
    )
    (p,) = plan.proposals
    assert p.driver_id == "near"
    assert p.to_pickup_miles == pytest.approx(0.5, rel=0.01)
    assert p.pickup_at == NOW + 600  # arrives before the food is ready: waits for it
    assert p.delivery_at > p.pickup_at
    assert 0 < p.score <= 1
    # Why: the weighted parts add up to the score; three drivers could have taken it.
    assert [n for n, _, _ in p.parts] == ["distance", "eta", "quality", "acceptance", "opportunity"]
    assert sum(w * v for _, w, v in p.parts) == pytest.approx(p.score)
    assert p.alternatives == 3 and p.bundle == ()
    why = p.why()
    assert why["parts"][0][0] == "distance" and why["delivery_at"] == round(p.delivery_at, 1)


def test_radius_widens_to_ten_miles_when_too_few_drivers_are_inside_five() -> None:
    far = driver("far", 8)
    assert (
        plan_batch([order()], [far], now=NOW, config=MatchConfig()).proposals[0].driver_id == "far"
    )
    strict = MatchConfig(min_candidates=0)
    plan = plan_batch([order()], [far], now=NOW, config=strict)
    assert plan.proposals == [] and plan.unmatched == ["o1"]
    too_far = driver("x", 12)
    assert plan_batch([order()], [too_far], now=NOW, config=MatchConfig()).unmatched == ["o1"]
    escalated = order(radius_miles=15.0)
    assert plan_batch([escalated], [too_far], now=NOW, config=MatchConfig()).proposals


def test_decliners_are_excluded_and_vehicles_must_fit_the_trip() -> None:
    cands = [driver("a", 0.2), driver("b", 0.4)]
    plan = plan_batch([order(excluded=frozenset({"a"}))], cands, now=NOW, config=MatchConfig())
    assert plan.proposals[0].driver_id == "b"
    walker = driver("w", 0.3, vehicle_type=common_pb2.VEHICLE_TYPE_WALKING)
    long_trip = order(dropoff_lat=REST[0] - 3 * MILE_LAT)
    assert plan_batch([long_trip], [walker], now=NOW, config=MatchConfig()).proposals == []
    assert plan_batch([order()], [walker], now=NOW, config=MatchConfig()).proposals


def test_low_acceptance_drivers_are_used_only_when_nobody_qualifies() -> None:
    choosy = driver("choosy", 0.1, acceptance=0.4)
    keen = driver("keen", 2.0, acceptance=0.9)
    plan = plan_batch([order()], [choosy, keen], now=NOW, config=MatchConfig())
    assert plan.proposals[0].driver_id == "keen"
    relaxed = plan_batch([order()], [choosy], now=NOW, config=MatchConfig())
    assert relaxed.proposals[0].driver_id == "choosy"


def test_batch_assigns_globally_where_greedy_steals_the_shared_nearest_driver() -> None:
    # o1 (first) is next to both drivers; o2 is reachable only cheaply from "a".
    o1 = order("o1")
    o2 = order("o2", pickup_lat=REST[0] + 1.2 * MILE_LAT)
    a, b = driver("a", 1.0), driver("b", -0.2)
    batch = {
        p.order_id: p.driver_id
        for p in plan_batch([o1, o2], [a, b], now=NOW, config=MatchConfig()).proposals
    }
    assert batch == {"o1": "b", "o2": "a"}
    greedy_cfg = MatchConfig(policy="greedy")
    closer_a = driver("a", 0.1)
    greedy = {
        p.order_id: p.driver_id
        for p in plan_batch([o1, o2], [closer_a, b], now=NOW, config=greedy_cfg).proposals
    }
    assert greedy == {"o1": "a", "o2": "b"}


def test_orders_at_the_front_of_the_pool_win_a_scarce_driver() -> None:
    plan = plan_batch(
        [order("new"), order("lost", front=True)],
        [driver("only", 1)],
        now=NOW,
        config=MatchConfig(),
    )
    assert [p.order_id for p in plan.proposals] == ["lost"]
    assert plan.unmatched == ["new"]


def test_steps_of_a_delivery_must_come_in_order_and_retries_are_no_ops() -> None:
    S = AssignmentStatus
    assert step(S.ASSIGNED, Action.ARRIVED_AT_RESTAURANT) is S.AT_RESTAURANT
    assert step(S.ASSIGNED, Action.PICKED_UP) is S.PICKED_UP
    assert step(S.PICKED_UP, Action.PICKED_UP) is None
    assert step(S.AT_CUSTOMER, Action.DELIVERED) is S.DELIVERED
    with pytest.raises(FailedPrecondition, match="delivered"):
        step(S.ASSIGNED, Action.DELIVERED)
    with pytest.raises(FailedPrecondition):
        step(S.DELIVERED, Action.PICKED_UP)


def test_third_failure_escalates_with_wider_radius_and_higher_pay() -> None:
    rules = OfferRules()
    S = AssignmentStatus
    kw = dict(radius_miles=5.0, wide=10.0, escalated_radius=15.0)
    assert rules.after_failure(offers_made=1, status=S.PENDING, **kw).status is S.PENDING
    third = rules.after_failure(offers_made=3, status=S.PENDING, **kw)
    assert third.status is S.ESCALATED and third.escalated_now and third.radius_miles == 15.0
    again = rules.after_failure(offers_made=4, status=S.ESCALATED, **kw)
    assert again.status is S.ESCALATED and not again.escalated_now
    assert rules.earnings_minor(2.0, escalated=True) > rules.earnings_minor(2.0, escalated=False)
    assert rules.earnings_minor(2.0, escalated=False) == 300 + 300
