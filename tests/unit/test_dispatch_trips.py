"""Trips: bundles, kitchen-timed release, drivers about to be free; the replay's physics."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from foodmesh.core.geo import haversine_m
from foodmesh.core.trace import load_trace
from foodmesh.v1 import common_pb2
from servers.dispatch.live import free_driver, live_state, paced
from servers.dispatch.matching import Candidate
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.replay import ReplayPolicy, SimConfig, generate_trace, simulate
from servers.dispatch.stacking import next_stop, plan_stops
from servers.dispatch.trips import (
    FreeDriver,
    TravelRule,
    TripConfig,
    TripOrder,
    plan_trips,
    reposition,
)

REST = (40.75, -73.98)
M_LAT = 1 / 111_195.0
M_LON = M_LAT / math.cos(math.radians(REST[0]))
TRAVEL = TravelRule(speed_mps=5.0)
VT = common_pb2.VehicleType


def east(m: float, north: float = 0.0) -> tuple[float, float]:
    """A point ``m`` metres east (and ``north`` metres north) of the restaurant."""
    return REST[0] + north * M_LAT, REST[1] + m * M_LON


def order(oid: str, *, ready: float, to: tuple[float, float], rest: str = "r1",
          where: tuple[float, float] = REST, placed: float = 0.0) -> TripOrder:  # fmt: skip
    return TripOrder(oid, rest, *where, *to, placed_at=placed, ready_at=ready)


def test_two_orders_of_one_restaurant_go_together_when_drivers_are_scarce() -> None:
    orders = [order("a", ready=600, to=east(2000)), order("b", ready=660, to=east(2500, 300))]
    driver = FreeDriver("d1", *east(-1500), free_at=0.0)
    rnd = plan_trips(orders, [driver], now=300.0, interval_s=30.0, travel=TRAVEL,
                     config=TripConfig())  # fmt: skip
    assert len(rnd.plans) == 1
    plan = rnd.plans[0]
    assert set(plan.order_ids) == {"a", "b"} and plan.why.bundle_size == 2
    kinds = [leg.kind for leg in plan.legs]
    assert kinds == ["pickup", "dropoff", "dropoff"]
    # The nearer door first; the pickup waits for the later food.
    assert plan.legs[1].order_ids == ("a",)
    assert plan.legs[0].depart_at == max(plan.legs[0].arrive_at, 660.0) + 240.0
    assert plan.commit  # 1.5 km = 300 s away, food at 660 s: the driver leaves now
    assert "2 order(s)" in plan.why.text()


def test_an_order_waits_until_the_kitchen_is_nearly_done_before_it_is_offered() -> None:
    o = order("a", ready=1800, to=east(2000))
    driver = FreeDriver("d1", *east(-1500), free_at=0.0)  # 300 s away
    cfg = TripConfig(release_margin_s=60.0)

    def at(now: float) -> bool:
        rnd = plan_trips([o], [driver], now=now, interval_s=30.0, travel=TRAVEL, config=cfg)
        assert [p.driver_id for p in rnd.plans] == ["d1"]
        return rnd.plans[0].commit

    assert not at(0.0)  # planned, not sent: the driver would wait 25 min at the counter
    assert not at(1400.0)  # release at 1800 - 300 - 60 = 1440
    assert at(1420.0)  # the round before the release sends it
    release = plan_trips([o], [driver], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg)
    assert abs(release.plans[0].why.release_at - 1440.0) < 0.01
    at_once = TripConfig(release_at_once=True)
    sent = plan_trips([o], [driver], now=0.0, interval_s=30.0, travel=TRAVEL, config=at_once)
    assert sent.plans[0].commit


def test_a_longer_prep_estimate_is_released_with_a_wider_margin() -> None:
    # The estimate misses by a share of itself: a 30-minute kitchen's driver is sent
    # earlier (before its estimate) than a 10-minute kitchen's.
    driver = FreeDriver("d1", *east(-1500), free_at=0.0)  # 300 s away
    cfg = TripConfig(release_margin_s=30.0, release_spread=0.1)

    def release(placed: float, ready: float) -> float:
        o = order("a", ready=ready, to=east(2000), placed=placed)
        rnd = plan_trips([o], [driver], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg)
        return rnd.plans[0].why.release_at

    assert abs(release(placed=1200.0, ready=1800.0) - (1800 - 300 - 30 - 60)) < 0.01
    assert abs(release(placed=0.0, ready=1800.0) - (1800 - 300 - 30 - 180)) < 0.01
    # Without a spread (replay: readiness is known), the margin alone.
    plain = plan_trips([order("a", ready=1800, to=east(2000))], [driver], now=0.0,
                       interval_s=30.0, travel=TRAVEL,
                       config=TripConfig(release_margin_s=30.0))  # fmt: skip
    assert abs(plain.plans[0].why.release_at - (1800 - 300 - 30)) < 0.01


def test_of_the_drivers_in_time_the_nearest_is_chosen_and_sent_at_the_kitchens_time() -> None:
    # Food ready in 25 min; both drivers can be there in time. Sent now, the far one
    # would wait least, but nobody is sent now: the near one goes later, by the kitchen.
    o = order("a", ready=1500, to=east(2000))
    near = FreeDriver("near", *east(-600), free_at=0.0)  # 120 s away
    far = FreeDriver("far", *east(-6000), free_at=0.0)  # 1200 s away
    cfg = TripConfig(release_margin_s=60.0)
    rnd = plan_trips([o], [far, near], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg)
    (p,) = rnd.plans
    assert (p.driver_id, p.commit) == ("near", False)
    assert abs(p.why.release_at - (1500 - 120 - 60)) < 0.01
    # Sent at once (the plain baseline), the nearer is chosen too: only the drive differs.
    at_once = plan_trips([o], [far, near], now=0.0, interval_s=30.0, travel=TRAVEL,
                         config=TripConfig(release_at_once=True))  # fmt: skip
    assert [(q.driver_id, q.commit) for q in at_once.plans] == [("near", True)]


def test_a_known_road_time_replaces_the_straight_line_in_the_choice_and_the_release() -> None:
    o = order("a", ready=700, to=east(2000))
    near = FreeDriver("near", *east(-1500), free_at=0.0)  # 300 s by the line
    far = FreeDriver("far", *east(-6000), free_at=0.0)  # 1200 s by the line: late
    cfg = TripConfig(release_margin_s=60.0)

    def plan(road: dict[tuple[str, str], float] | None) -> tuple[str, float, float]:
        rnd = plan_trips([o], [near, far], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg,
                         to_pickup_s=road)  # fmt: skip
        (p,) = rnd.plans
        return p.driver_id, round(p.why.release_at, 1), round(p.legs[0].arrive_at, 1)

    assert plan(None) == ("near", 340.0, 300.0)
    # The road is faster than the line: released later, and the driver arrives by it.
    assert plan({("near", "a"): 120.0}) == ("near", 520.0, 120.0)
    # Across a river the near one is far by road: the other is chosen.
    assert plan({("near", "a"): 900.0, ("far", "a"): 500.0}) == ("far", 140.0, 500.0)
    # Pairs of other drivers or orders, and nonsense times, change nothing.
    assert plan({("ghost", "a"): 1.0, ("near", "x"): 1.0, ("far", "a"): math.nan}) == plan(None)


def test_a_driver_about_to_be_free_next_door_beats_an_idle_one_far_away() -> None:
    o = order("a", ready=400, to=east(2000))
    far = FreeDriver("far", *east(-6000), free_at=0.0)  # 20 min away
    soon = FreeDriver("soon", *east(100), free_at=200.0)  # next door, free in 200 s
    rnd = plan_trips([o], [far, soon], now=0.0, interval_s=30.0, travel=TRAVEL,
                     config=TripConfig())  # fmt: skip
    assert [(p.driver_id, p.commit) for p in rnd.plans] == [("soon", False)]
    # Once free, the driver is sent when they must leave (400 - 20 s away - 60 s margin).
    later = plan_trips([o], [far, FreeDriver("soon", *east(100), free_at=200.0)], now=300.0,
                       interval_s=30.0, travel=TRAVEL, config=TripConfig())  # fmt: skip
    assert [(p.driver_id, p.commit) for p in later.plans] == [("soon", True)]


def test_declined_drivers_and_drivers_off_shift_are_never_planned() -> None:
    o = TripOrder("a", "r1", *REST, *east(2000), placed_at=0.0, ready_at=0.0,
                  excluded=frozenset({"near"}))  # fmt: skip
    near = FreeDriver("near", *east(10), free_at=0.0)
    gone = FreeDriver("gone", *east(20), free_at=0.0, off_at=0.0)
    other = FreeDriver("other", *east(-3000), free_at=0.0)
    rnd = plan_trips([o], [near, gone, other], now=0.0, interval_s=30.0, travel=TRAVEL,
                     config=TripConfig())  # fmt: skip
    assert [p.driver_id for p in rnd.plans] == ["other"]
    alone = plan_trips([o], [near, gone], now=0.0, interval_s=30.0, travel=TRAVEL,
                       config=TripConfig())  # fmt: skip
    assert alone.plans == [] and alone.waiting == ["a"]


def test_bundles_respect_the_food_wait_and_the_detour_limits() -> None:
    cfg = TripConfig(max_food_wait_s=300.0, max_delay_s=600.0, scarcity_bundling=False)
    late = [order("a", ready=0, to=east(2000)), order("b", ready=900, to=east(2000))]
    rnd = plan_trips(late, [FreeDriver("d", *REST, free_at=0.0)] * 1, now=0.0, interval_s=30.0,
                     travel=TRAVEL, config=cfg)  # fmt: skip
    assert rnd.bundles == 2  # b's food is 15 min later: a does not wait for it
    opposite = [order("a", ready=0, to=east(4000)), order("b", ready=0, to=east(-4000))]
    rnd = plan_trips(opposite, [FreeDriver("d", *REST, free_at=0.0)], now=0.0, interval_s=30.0,
                     travel=TRAVEL, config=cfg)  # fmt: skip
    assert rnd.bundles == 2  # the second door is 27 min past the first: too long a detour
    three = [order(x, ready=0, to=east(2000, 100 * i)) for i, x in enumerate("abcd")]
    rnd = plan_trips(three, [FreeDriver("d", *REST, free_at=0.0)], now=0.0, interval_s=30.0,
                     travel=TRAVEL, config=cfg)  # fmt: skip
    assert sorted(p.why.bundle_size for p in rnd.plans) == [3]  # K = 3; the fourth waits
    assert len(rnd.waiting) == 1


def test_idle_drivers_move_towards_a_busy_restaurant_nobody_covers() -> None:
    idle = [FreeDriver("x", *east(-9000), free_at=0.0), FreeDriver("y", *east(9000), free_at=0.0)]
    moves = reposition(idle, [(d.lat, d.lon) for d in idle],
                       [("r1", *REST, 5.0), ("r2", *east(8500), 1.0)], travel=TRAVEL,
                       config=TripConfig(cover_s=600.0))  # fmt: skip
    # r2 has y within 100 s; r1 is 30 min from anyone: the nearer of x and y goes there.
    assert [(m.restaurant_id, m.driver_id) for m in moves] == [("r1", "y")] or [
        (m.restaurant_id, m.driver_id) for m in moves
    ] == [("r1", "x")]
    assert reposition(idle, [], [("r1", *REST, 1.0)], travel=TRAVEL,
                      config=TripConfig(cover_s=0.0)) == []  # fmt: skip


def one_order_trace(**kw: Any) -> dict[str, Any]:
    lat, lon = east(-3000)
    dlat, dlon = east(4000)
    doc: dict[str, Any] = {
        "format": "foodmesh-trace/1",
        "name": "one",
        "origin": {"lat": REST[0], "lon": REST[1]},
        "speed_mps": 5.0,
        "pickup_service_s": 240,
        "dropoff_service_s": 180,
        "target_click_to_door_s": 2400,
        "couriers": [{"id": "c1", "lat": lat, "lon": lon, "on_s": 0, "off_s": 7200}],
        "restaurants": [{"id": "r1", "lat": REST[0], "lon": REST[1]}],
        "orders": [{"id": "o1", "placed_s": 100, "restaurant_id": "r1", "ready_s": 400,
                    "dropoff": {"lat": dlat, "lon": dlon}}],
    }  # fmt: skip
    doc.update(kw)
    return doc


def test_the_replay_follows_the_trace_physics() -> None:
    doc = one_order_trace()
    leg = haversine_m(*REST, *east(4000)) / 5.0
    far = haversine_m(*east(-3000), *REST) / 5.0  # ~600 s
    # The courier is 3 km (600 s) away; the food is ready at 400 s. Ours sends at once
    # (leaving at 100 s they arrive at 700, after the food); the plain baseline at its
    # next 60 s batch (120 s). Each leaves after the 240 s pickup service; the delivery
    # ends with the 180 s drop-off service; click-to-door counts from 100 s.
    runs: tuple[tuple[ReplayPolicy, float], ...] = (("batch", 100.0), ("plain", 120.0))
    for policy, sent in runs:
        m = simulate(load_trace(doc), SimConfig(policy=policy, accept_prob=1.0))
        assert m.delivered == 1 and m.orders_per_trip == 1.0
        expect = max(sent + far, 400.0) + 240.0 + leg + 180.0 - 100.0
        assert abs(m.click_to_door_mean_min * 60 - expect) < 1e-6, policy
        assert abs(m.food_wait_mean_min * 60 - (sent + far - 400.0)) < 1e-6
    ceil = simulate(load_trace(doc), SimConfig(policy="plain", accept_prob=1.0, ceil_minutes=True))
    expect = 120.0 + math.ceil(far / 60) * 60 + 240.0 + math.ceil(leg / 60) * 60 + 180.0 - 100.0
    assert abs(ceil.click_to_door_mean_min * 60 - expect) < 1e-6


def test_a_courier_takes_nothing_after_the_end_of_the_shift() -> None:
    doc = one_order_trace()
    doc["couriers"][0]["off_s"] = 90  # gone before the order is placed
    m = simulate(load_trace(doc), SimConfig(accept_prob=1.0, drain_s=3600))
    assert m.delivered == 0 and m.unassigned == 1


def test_bundling_serves_a_scarce_city_with_fewer_courier_hours() -> None:
    trace = load_trace(generate_trace(orders=300, couriers=60, hours=2.0, restaurants=20, seed=4))
    bundled = simulate(trace, SimConfig(accept_prob=1.0, batch_interval_s=30.0))
    single = simulate(
        trace,
        SimConfig(accept_prob=1.0, batch_interval_s=30.0, trips=TripConfig(max_orders=1)),
    )
    assert bundled.delivered == single.delivered == 300
    assert bundled.orders_per_trip > 1.1 and single.orders_per_trip == 1.0
    assert bundled.courier_hours_per_order < single.courier_hours_per_order
    assert bundled.click_to_door_p90_min < single.click_to_door_p90_min


def held(oid: str, status: str, *, deliver_at: float, driver: str = "d1",
         to: tuple[float, float] = REST) -> Assignment:  # fmt: skip
    t0 = dt.datetime.fromtimestamp(1000.0, dt.UTC)
    return Assignment(
        order_id=oid, region="dr5r", status=AssignmentStatus(status), driver_id=driver,
        pickup_lat=REST[0], pickup_lon=REST[1], pickup_label="Pizza",
        dropoff_lat=to[0], dropoff_lon=to[1], dropoff_label=f"door of {oid}",
        ready_at=t0, offers_made=1, excluded=[], radius_miles=5.0, front=False, tip_minor=0,
        currency="USD", est_pickup_at=None,
        est_delivery_at=dt.datetime.fromtimestamp(deliver_at, dt.UTC), created_at=t0,
        updated_at=t0,
    )  # fmt: skip


def pooled(oid: str, *, at: tuple[float, float], to: tuple[float, float],
           ready: float) -> Assignment:  # fmt: skip
    t0 = dt.datetime.fromtimestamp(800.0, dt.UTC)
    return Assignment(
        order_id=oid, region="dr5r", status=AssignmentStatus.PENDING, driver_id="",
        pickup_lat=at[0], pickup_lon=at[1], pickup_label="Pizza",
        dropoff_lat=to[0], dropoff_lon=to[1], dropoff_label=f"door of {oid}",
        ready_at=dt.datetime.fromtimestamp(ready, dt.UTC), offers_made=0, excluded=[],
        radius_miles=5.0, front=False, tip_minor=0, currency="USD", est_pickup_at=None,
        est_delivery_at=None, created_at=t0, updated_at=t0,
    )  # fmt: skip


def test_a_pending_order_of_the_same_restaurant_joins_a_trip_not_yet_picked_up() -> None:
    cfg = TripConfig(max_orders=2, cover_s=0.0)
    on_trips = [
        held("a", "assigned", deliver_at=2000.0, to=east(1000)),
        held("b", "picked_up", deliver_at=2100.0, driver="d2"),  # under way: can't grow
    ]
    pool = [
        pooled("x", at=east(3000), to=east(1500), ready=1000.0),  # another restaurant
        pooled("l", at=REST, to=east(1500), ready=1000.0 + 3600),  # its food much later
        pooled("n", at=REST, to=east(1500), ready=1100.0),
    ]
    state = live_state(pool, [], on_trips, now=900.0, config=cfg, expiry_s=20.0)
    assert [t.driver_id for t in state.open_trips] == ["d1"]
    # Both are horizon drivers, free at their last drop-off.
    assert {d.driver_id: d.free_at for d in state.drivers} == {"d1": 2000.0, "d2": 2100.0}
    rnd = plan_trips(state.orders, state.drivers, open_trips=state.open_trips, now=900.0,
                     interval_s=2.0, travel=TRAVEL, config=cfg)  # fmt: skip
    joins = [(p.new_order_ids, p.driver_id, p.joins, p.commit) for p in rnd.plans if p.joins]
    assert joins == [(("n",), "d1", ("a",), True)]
    joined = next(p for p in rnd.plans if p.joins)
    assert [leg.kind for leg in joined.legs] == ["pickup", "dropoff", "dropoff"]
    # An open offer not yet accepted: the join is planned, not offered.
    offered = [held("a", "offered", deliver_at=2000.0, to=east(1000))]
    waiting = live_state(pool, [], offered, now=900.0, config=cfg, expiry_s=20.0)
    assert [t.accepted for t in waiting.open_trips] == [False]
    rnd = plan_trips(waiting.orders, waiting.drivers, open_trips=waiting.open_trips, now=900.0,
                     interval_s=2.0, travel=TRAVEL, config=cfg)  # fmt: skip
    assert [(p.new_order_ids, p.commit) for p in rnd.plans if p.joins] == [(("n",), False)]
    full = [held("a", "assigned", deliver_at=2000.0), held("c", "assigned", deliver_at=2050.0)]
    assert live_state(pool, [], full, now=900.0, config=cfg, expiry_s=20.0).open_trips == []


def test_the_trip_plan_is_one_pickup_then_the_drop_offs_in_promised_order() -> None:
    trip = [held("b", "assigned", deliver_at=2500.0), held("a", "at_restaurant", deliver_at=2000.0)]
    stops = [(s.kind, s.order_id) for s in plan_stops(trip)]
    assert stops == [("pickup", "b"), ("dropoff", "a"), ("dropoff", "b")]
    nxt = next_stop(trip)
    assert nxt is not None and nxt[1] == REST
    carried = [held("b", "picked_up", deliver_at=2500.0)]
    assert [s.kind for s in plan_stops(carried)] == ["dropoff"]
    assert next_stop([]) is None


def test_in_replay_an_order_joins_the_trip_whose_driver_is_still_on_the_way() -> None:
    # o1 is sent at once (its courier is 600 s away); o2, of the same restaurant, is
    # placed while the courier drives there: nobody else is free, so it joins the trip.
    doc = one_order_trace()
    dlat, dlon = east(4000, north=300)
    doc["orders"].append({"id": "o2", "placed_s": 300, "restaurant_id": "r1", "ready_s": 600,
                          "dropoff": {"lat": dlat, "lon": dlon}})  # fmt: skip
    m = simulate(load_trace(doc), SimConfig(policy="batch", accept_prob=1.0))
    assert m.delivered == 2 and m.trips == 1 and m.orders_per_trip == 2.0
    alone = simulate(
        load_trace(doc),
        SimConfig(policy="batch", accept_prob=1.0, trips=TripConfig(max_orders=1)),
    )
    assert alone.delivered == 2 and alone.trips == 2
    assert m.courier_hours_per_order < alone.courier_hours_per_order


def test_live_a_better_rated_driver_far_away_does_not_beat_a_good_one_next_door() -> None:
    o = order("a", ready=1500, to=east(2000))
    near = free_driver(Candidate("near", *east(-600), rating=4.5, deliveries=100),
                       now=0.0, expiry_s=20.0)  # fmt: skip  # 2 min away
    far = free_driver(Candidate("far", *east(-4500), rating=5.0, deliveries=2000),
                      now=0.0, expiry_s=20.0)  # fmt: skip  # 15 min away, still in time
    cfg = TripConfig(release_margin_s=60.0)
    (p,) = plan_trips([o], [far, near], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg).plans
    assert p.driver_id == "near"
    # Equally near, the better one goes.
    twin = free_driver(Candidate("twin", *east(-600, 30), rating=5.0, deliveries=2000),
                       now=0.0, expiry_s=20.0)  # fmt: skip
    (q,) = plan_trips([o], [near, twin], now=0.0, interval_s=30.0, travel=TRAVEL, config=cfg).plans
    assert q.driver_id == "twin"


def test_a_car_a_little_farther_beats_a_bicycle_next_door_to_a_far_door() -> None:
    # Food ready in 25 min, the door 6 km away (1,200 s by the rule). The bicycle next
    # door takes 1.7 times the rule's time, the car 1.5 km away the rule's: both are at
    # the restaurant in time, but the car's customer eats 14 minutes sooner.
    o = order("a", ready=1500, to=east(6000))
    bike = FreeDriver("bike", *east(-300), free_at=0.0, vehicle=VT.VEHICLE_TYPE_BICYCLE, pace=1.7)
    car = FreeDriver("car", *east(-1500), free_at=0.0, vehicle=VT.VEHICLE_TYPE_CAR, pace=1.0)
    for cfg in (TripConfig(release_margin_s=60.0), TripConfig(release_at_once=True)):
        (p,) = plan_trips([o], [bike, car], now=0.0, interval_s=30.0, travel=TRAVEL,
                          config=cfg).plans  # fmt: skip
        assert p.driver_id == "car"
    # Alone, the bicycle's plan reaches the door by its own pace (the service time as is),
    # and its drive to the restaurant (no road time known) is its pace times the line.
    (b,) = plan_trips([o], [bike], now=0.0, interval_s=30.0, travel=TRAVEL,
                      config=TripConfig(release_margin_s=60.0)).plans  # fmt: skip
    pick, drop = b.legs
    assert pick.arrive_at == pytest.approx(60.0 * 1.7)
    assert drop.depart_at - pick.depart_at == pytest.approx(1200.0 * 1.7 + 240.0)
    assert drop.arrive_at == pytest.approx(drop.depart_at - 240.0)
    assert b.why.release_at == pytest.approx(1500 - 60.0 * 1.7 - 60.0)
    # Two doors on one trip: both drives scaled, both services not.
    two = [order("a", ready=600, to=east(2000)), order("b", ready=600, to=east(4000))]
    (t,) = plan_trips(two, [FreeDriver("bike", *REST, free_at=0.0, pace=2.0)], now=0.0,
                      interval_s=30.0, travel=TRAVEL, config=TripConfig()).plans  # fmt: skip
    pick, first, second = t.legs
    assert first.depart_at - pick.depart_at == pytest.approx(400.0 * 2.0 + 240.0)
    assert second.depart_at - first.depart_at == pytest.approx(400.0 * 2.0 + 240.0)


def test_live_drivers_carry_their_vehicle_and_its_pace() -> None:
    bike, car, scooter = VT.VEHICLE_TYPE_BICYCLE, VT.VEHICLE_TYPE_CAR, VT.VEHICLE_TYPE_SCOOTER
    cands = [Candidate("b", *east(-300), vehicle_type=bike),
             Candidate("c", *east(-900), vehicle_type=car),
             Candidate("s", *east(-900), vehicle_type=scooter)]  # fmt: skip
    state = live_state([], cands, [], now=0.0, config=TripConfig(), expiry_s=20.0)
    assert [d.vehicle for d in state.drivers] == [bike, car, scooter]
    # ETA answered for bicycles and cars, not scooters: those keep the rule's pace.
    paced_state = paced(state, {bike: 1.7, car: 1.2})
    assert [d.pace for d in paced_state.drivers] == [1.7, 1.2, 1.0]
    assert paced(state, {}) is state
    # A driver on a trip (free at their last drop-off) is timed in their vehicle too.
    on_trip = [held("a", "picked_up", deliver_at=2000.0, driver="d9")]
    busy = live_state([], [], on_trip, now=900.0, config=TripConfig(), expiry_s=20.0,
                      vehicles={"d9": bike})  # fmt: skip
    assert [(d.driver_id, d.vehicle, d.free_at) for d in busy.drivers] == [("d9", bike, 2000.0)]
    assert [d.pace for d in paced(busy, {bike: 1.7}).drivers] == [1.7]
