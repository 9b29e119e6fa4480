"""The pure part of drivers' routes: the active leg, when to route or check, the messages."""

from __future__ import annotations

import datetime as dt

import pytest

from foodmesh.core.geo import haversine_m
from foodmesh.roads import decode_polyline
from foodmesh.v1 import common_pb2, dispatch_pb2, eta_pb2
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.routes import (
    ARRIVING_S,
    Leg,
    LegState,
    Next,
    arriving,
    leg_of,
    leg_state,
    next_step,
    reason_of,
    seconds_left,
    straight_line,
    update_from_reroute,
    update_from_route,
)

S = AssignmentStatus
R = dispatch_pb2.RouteUpdateReason
REST = (37.7755, -122.4183)
HOME = (37.7849, -122.4094)
EVERY = 12.0


def _assignment(status: AssignmentStatus = S.ASSIGNED) -> Assignment:
    now = dt.datetime.now(dt.UTC)
    return Assignment(
        order_id="o1", region="9q8y", status=status, driver_id="d1",
        pickup_lat=REST[0], pickup_lon=REST[1], pickup_label="Luigi's",
        dropoff_lat=HOME[0], dropoff_lon=HOME[1], dropoff_label="456 Mission St",
        ready_at=now, offers_made=1, excluded=[], radius_miles=5.0, front=False,
        tip_minor=0, currency="USD", est_pickup_at=None, est_delivery_at=None,
        created_at=now, updated_at=now,
    )  # fmt: skip


def _state(**kw: object) -> LegState:
    st = leg_state(_assignment(), Leg.TO_RESTAURANT, vehicle_type=common_pb2.VEHICLE_TYPE_CAR)
    for k, v in kw.items():
        setattr(st, k, v)
    return st


@pytest.mark.parametrize(
    ("status", "leg"),
    [
        (S.PENDING, None), (S.OFFERED, None), (S.ASSIGNED, Leg.TO_RESTAURANT),
        (S.AT_RESTAURANT, None), (S.PICKED_UP, Leg.TO_CUSTOMER), (S.AT_CUSTOMER, None),
        (S.DELIVERED, None), (S.CANCELLED, None), (S.ESCALATED, None),
    ],
)  # fmt: skip
def test_only_assigned_and_picked_up_drivers_drive_a_leg(
    status: AssignmentStatus, leg: Leg | None
) -> None:
    assert leg_of(status) is leg


def test_each_leg_leads_to_its_stop_and_the_customer_leg_starts_at_the_restaurant() -> None:
    a = _assignment()
    to_r = leg_state(a, Leg.TO_RESTAURANT, vehicle_type=common_pb2.VEHICLE_TYPE_CAR)
    assert to_r.dest == REST and to_r.label == "Luigi's" and to_r.origin_hint is None
    to_c = leg_state(a, Leg.TO_CUSTOMER, vehicle_type=common_pb2.VEHICLE_TYPE_BICYCLE)
    assert to_c.dest == HOME and to_c.label == "456 Mission St" and to_c.origin_hint == REST
    assert to_c.vehicle_type == common_pb2.VEHICLE_TYPE_BICYCLE


def test_a_new_leg_is_routed_at_once_then_retried_on_a_fix_or_after_the_interval() -> None:
    st = _state()
    assert next_step(st, now=100.0, every_s=EVERY, can_route=True) is Next.ROUTE
    # Asked, but no route could be had (no position known yet).
    st.tried_at = 100.0
    assert next_step(st, now=101.0, every_s=EVERY, can_route=True) is Next.WAIT
    st.fix, st.fix_at = REST, 102.0
    assert next_step(st, now=102.5, every_s=EVERY, can_route=True) is Next.ROUTE
    st.fix_at = 99.0  # a fix older than the try does not count
    assert next_step(st, now=102.5, every_s=EVERY, can_route=True) is Next.WAIT
    assert next_step(st, now=112.0, every_s=EVERY, can_route=True) is Next.ROUTE
    # Without the ETA service the stand-in is still made.
    assert next_step(_state(), now=0.0, every_s=EVERY, can_route=False) is Next.ROUTE


def test_a_route_is_checked_only_on_a_new_fix_and_at_most_every_interval() -> None:
    st = _state(update=dispatch_pb2.RouteUpdate(polyline="x"), tried_at=100.0, checked_at=100.0)
    assert next_step(st, now=200.0, every_s=EVERY, can_route=True) is Next.WAIT  # no fix
    st.fix, st.fix_at = REST, 101.0
    assert next_step(st, now=105.0, every_s=EVERY, can_route=True) is Next.WAIT  # too soon
    assert next_step(st, now=112.0, every_s=EVERY, can_route=True) is Next.CHECK
    st.checked_at = 112.0  # checked; the same fix is not checked again
    assert next_step(st, now=500.0, every_s=EVERY, can_route=True) is Next.WAIT
    st.fix_at = 113.0
    assert next_step(st, now=120.0, every_s=EVERY, can_route=True) is Next.WAIT
    assert next_step(st, now=124.0, every_s=EVERY, can_route=True) is Next.CHECK
    # No ETA service: nothing to check against.
    assert next_step(st, now=124.0, every_s=EVERY, can_route=False) is Next.WAIT


def test_a_stand_in_is_replaced_only_while_the_eta_service_is_configured() -> None:
    st = _state(update=dispatch_pb2.RouteUpdate(), stand_in=True, tried_at=100.0, checked_at=100.0)
    st.fix, st.fix_at = REST, 105.0
    assert next_step(st, now=105.0, every_s=EVERY, can_route=True) is Next.WAIT
    assert next_step(st, now=112.0, every_s=EVERY, can_route=True) is Next.ROUTE
    assert next_step(st, now=112.0, every_s=EVERY, can_route=False) is Next.WAIT


def test_reroute_reasons_map_and_no_reroute_is_none() -> None:
    assert reason_of(eta_pb2.REROUTE_REASON_UNSPECIFIED) is None
    assert reason_of(eta_pb2.REROUTE_REASON_OFF_ROUTE) == R.ROUTE_UPDATE_REASON_OFF_ROUTE
    assert reason_of(eta_pb2.REROUTE_REASON_ETA_CHANGED) == R.ROUTE_UPDATE_REASON_ETA_CHANGED


def test_a_route_answer_becomes_an_update_with_its_steps_leg_stop_and_eta() -> None:
    resp = eta_pb2.RouteResponse(
        distance_meters=1234.5, duration_seconds=300.25, polyline="_p~iF~ps|U_ulLnnqC",
        source=eta_pb2.ESTIMATE_SOURCE_ROAD_GRAPH,
        steps=[eta_pb2.RouteStep(maneuver=eta_pb2.MANEUVER_DEPART, street_name="Market St"),
               eta_pb2.RouteStep(maneuver=eta_pb2.MANEUVER_ARRIVE)],
    )  # fmt: skip
    u = update_from_route(resp, _state(), reason=R.ROUTE_UPDATE_REASON_INITIAL, now=1000.0)
    assert u.order_id == "o1" and u.leg == dispatch_pb2.ROUTE_LEG_TO_RESTAURANT
    assert u.reason == R.ROUTE_UPDATE_REASON_INITIAL
    assert (u.destination.location.lat, u.destination.location.lon) == REST
    assert u.destination.label == "Luigi's"
    assert u.polyline == resp.polyline and u.distance_meters == 1234.5
    assert u.duration.ToNanoseconds() == 300_250_000_000
    assert u.eta.ToNanoseconds() == 1_300_250_000_000
    assert [s.street_name for s in u.steps] == ["Market St", ""]
    assert u.source == eta_pb2.ESTIMATE_SOURCE_ROAD_GRAPH


def test_a_reroute_answer_alone_gives_the_new_route_without_steps() -> None:
    resp = eta_pb2.CheckRerouteResponse(
        reason=eta_pb2.REROUTE_REASON_OFF_ROUTE, polyline="abc", distance_meters=900.0,
        duration_seconds=120.0,
    )  # fmt: skip
    resp.eta.FromSeconds(5000)
    u = update_from_reroute(resp, _state(), reason=R.ROUTE_UPDATE_REASON_OFF_ROUTE)
    assert u.reason == R.ROUTE_UPDATE_REASON_OFF_ROUTE and u.polyline == "abc"
    assert u.eta.seconds == 5000 and u.duration.seconds == 120 and not u.steps


def test_the_stand_in_is_the_straight_line_flagged_as_such() -> None:
    origin = (37.7700, -122.4300)
    st = _state()
    u = straight_line(origin, st, reason=R.ROUTE_UPDATE_REASON_INITIAL, now=1000.0)
    assert u.source == eta_pb2.ESTIMATE_SOURCE_STRAIGHT_LINE and not u.steps
    pts = decode_polyline(u.polyline)
    assert pts[0] == pytest.approx(origin, abs=1e-5) and pts[-1] == pytest.approx(REST, abs=1e-5)
    crow = haversine_m(*origin, *REST)
    assert crow < u.distance_meters < 2 * crow  # streets are longer than the crow's flight
    secs = u.duration.ToNanoseconds() / 1e9
    assert 1.0 < u.distance_meters / secs < 20.0  # an urban speed, m/s
    assert u.eta.ToNanoseconds() / 1e9 == pytest.approx(1000.0 + secs)
    bike = _state(vehicle_type=common_pb2.VEHICLE_TYPE_BICYCLE)
    slow = straight_line(origin, bike, reason=R.ROUTE_UPDATE_REASON_INITIAL, now=1000.0)
    assert slow.duration.ToNanoseconds() > u.duration.ToNanoseconds()


def test_the_customer_hears_arriving_once_under_three_minutes_on_the_customer_leg() -> None:
    a = _assignment(S.PICKED_UP)
    st = leg_state(a, Leg.TO_CUSTOMER, vehicle_type=common_pb2.VEHICLE_TYPE_CAR)
    assert seconds_left(st) is None and not arriving(st)  # no fix yet
    st.fix = REST
    far = seconds_left(st)
    assert far is not None
    # 180 s by car (6.9 m/s) with the 1.35 detour is 920 m as the crow flies.
    metres = haversine_m(REST[0], REST[1], HOME[0], HOME[1])
    assert far == pytest.approx(metres * 1.35 / 6.9)
    assert arriving(st) is (far < ARRIVING_S)
    st.fix = (HOME[0] + 0.012, HOME[1])  # ~1.3 km away: over 4 min
    assert not arriving(st)
    st.fix = (HOME[0] + 0.005, HOME[1])  # ~560 m: under 2 min
    assert arriving(st)
    st.arriving_said = True
    assert not arriving(st)  # once
    to_r = leg_state(a, Leg.TO_RESTAURANT, vehicle_type=common_pb2.VEHICLE_TYPE_CAR)
    to_r.fix = REST
    assert not arriving(to_r)  # only on the way to the customer
