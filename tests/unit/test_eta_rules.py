"""The ETA service's pure rules: rerouting, confidence, intervals, features, the baseline."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foodmesh.roads.vehicles import vehicle_time_s
from foodmesh.v1 import common_pb2
from servers.eta.confidence import Part, combine, confidence
from servers.eta.estimate import BASELINE_PREP_MIN, estimate_delivery
from servers.eta.features import is_peak
from servers.eta.reroute import Reason, decide, deviation_m
from servers.eta.routing import Leg
from tests.unit._eta import delivery_input

# A straight street running east from the design's point, about 880 m long.
STREET = [(37.7749, -122.4194), (37.7749, -122.4144), (37.7749, -122.4094)]
M_PER_DEG_LAT = 111_195.0


def north_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / M_PER_DEG_LAT, lon


def test_deviation_is_distance_to_the_nearest_segment() -> None:
    assert deviation_m(*STREET[1], STREET) == pytest.approx(0.0, abs=0.01)
    assert deviation_m(*north_of(37.7749, -122.4160, 120.0), STREET) == pytest.approx(
        120.0, rel=1e-3
    )
    # Beyond the end: the distance to the end point, not to the infinite line.
    east = (37.7749, -122.4094 + 300 / (M_PER_DEG_LAT * math.cos(math.radians(37.7749))))
    assert deviation_m(*east, STREET) == pytest.approx(300.0, rel=1e-3)
    assert deviation_m(37.7749, -122.4194, []) == math.inf


@given(t=st.floats(0.0, 1.0), off=st.floats(0.0, 2000.0))
def test_deviation_of_a_point_beside_the_route_is_its_offset(t: float, off: float) -> None:
    lon = -122.4194 + t * 0.01
    assert deviation_m(*north_of(37.7749, lon, off), STREET) == pytest.approx(off, abs=0.5)


def test_reroute_when_more_than_500_m_off_route() -> None:
    assert decide(deviation=501.0, current_eta_s=None, new_eta_s=None).reason is Reason.OFF_ROUTE
    assert decide(deviation=499.0, current_eta_s=None, new_eta_s=None).reason is Reason.NONE
    assert decide(deviation=500.0, current_eta_s=None, new_eta_s=None).reason is Reason.NONE


def test_reroute_when_eta_moves_more_than_5_minutes_either_way() -> None:
    assert decide(deviation=10, current_eta_s=1000, new_eta_s=1301).reason is Reason.ETA_CHANGED
    assert decide(deviation=10, current_eta_s=1000, new_eta_s=699).reason is Reason.ETA_CHANGED
    d = decide(deviation=10, current_eta_s=1000, new_eta_s=1299)
    assert d.reason is Reason.NONE and not d.reroute and d.eta_change_s == 299


def test_off_route_wins_over_eta_change() -> None:
    d = decide(deviation=900, current_eta_s=0, new_eta_s=10_000)
    assert d.reason is Reason.OFF_ROUTE and d.reroute


def test_parts_add_in_quadrature() -> None:
    i = combine([Part(10, 7, 13), Part(5, 1, 9), Part.exact(3)])
    assert i.total == 18
    assert i.lower == pytest.approx(18 - 5.0)
    assert i.upper == pytest.approx(18 + 5.0)


def test_confidence_falls_as_the_interval_widens_and_is_a_probability() -> None:
    narrow = combine([Part(20, 19, 21)])
    wide = combine([Part(20, 10, 35)])
    kw = {"driver_assigned": True, "peak": False, "restaurant_orders": 1000}
    c_narrow, c_wide = confidence(narrow, **kw), confidence(wide, **kw)  # type: ignore[arg-type]
    assert 0 < c_wide < c_narrow <= 0.99
    # 80% interval of ±5 min: sigma 3.9 min, P(|e| <= 5) = 0.8.
    assert confidence(combine([Part(20, 15, 25)]), **kw) == pytest.approx(0.8, abs=1e-3)  # type: ignore[arg-type]


def test_confidence_applies_the_seeds_heuristics() -> None:
    i = combine([Part(20, 17, 24)])
    base = confidence(i, driver_assigned=True, peak=False, restaurant_orders=1000)
    assert confidence(i, driver_assigned=False, peak=False, restaurant_orders=1000) == (
        pytest.approx(base * 0.8)
    )
    assert confidence(i, driver_assigned=True, peak=True, restaurant_orders=1000) == (
        pytest.approx(base * 0.9)
    )
    assert confidence(i, driver_assigned=True, peak=False, restaurant_orders=40) == (
        pytest.approx(base * 0.85)
    )
    assert confidence(i, driver_assigned=True, peak=False, restaurant_orders=None) == base


def test_peak_hours_follow_the_seed() -> None:
    assert is_peak(12, 2) and is_peak(19, 2) and not is_peak(15, 2) and not is_peak(11, 5)
    assert is_peak(14, 6) and not is_peak(14, 3)


def test_vehicle_profiles() -> None:
    VT = common_pb2.VehicleType
    assert vehicle_time_s(VT.VEHICLE_TYPE_CAR, 100, 150) == 150
    assert vehicle_time_s(VT.VEHICLE_TYPE_UNSPECIFIED, 100, 150) == 150
    assert vehicle_time_s(VT.VEHICLE_TYPE_BICYCLE, 100, 150) == pytest.approx(170)
    assert 100 < vehicle_time_s(VT.VEHICLE_TYPE_SCOOTER, 100, 150) < 150


_input = delivery_input


def test_baseline_estimate_is_routing_time_plus_fixed_prep_and_parts_add_up() -> None:
    e = estimate_delivery(_input(), None)
    assert e.model_version == "baseline" and not e.from_model
    assert e.prep.median == BASELINE_PREP_MIN
    assert e.delivery.median == pytest.approx(10.0)  # 600 s by road
    total = e.prep.median + e.pickup.median + e.delivery.median
    assert e.interval.total == pytest.approx(total)
    assert e.interval.lower < total < e.interval.upper


def test_prep_left_shrinks_with_time_and_vanishes_after_pickup() -> None:
    start = dt.datetime(2026, 1, 6, 20, 0, tzinfo=dt.UTC)
    later = start + dt.timedelta(minutes=8)
    e = estimate_delivery(_input(order_time=start, now=later), None)
    assert e.prep.median == pytest.approx(BASELINE_PREP_MIN - 8)
    picked = estimate_delivery(_input(status=common_pb2.ORDER_STATUS_PICKED_UP), None)
    assert picked.prep.median == 0 and picked.pickup.median == 0
    assert picked.interval.total == pytest.approx(picked.delivery.median)


def test_a_known_driver_adds_only_the_drive_beyond_the_prep_left() -> None:
    near = estimate_delivery(_input(pickup_leg=Leg(500, 120, 100, False), driver_known=True), None)
    far = estimate_delivery(
        _input(pickup_leg=Leg(9000, 1800, 1500, False), driver_known=True), None
    )
    assert near.pickup.median == pytest.approx(2.0)  # the counter only: the food is not ready
    assert far.pickup.median == pytest.approx(30 - BASELINE_PREP_MIN + 2.0)
    assert far.confidence < near.confidence  # a longer drive, a wider interval


def test_straight_line_legs_are_flagged() -> None:
    e = estimate_delivery(_input(delivery_leg=Leg(3000, 600, 600, True)), None)
    assert e.straight_line


@pytest.mark.parametrize("vehicle", [0, 1, 2, 3, 4])
def test_scalar_vehicle_profile_matches_the_vectorised_one(vehicle: int) -> None:
    from servers.eta.features import vehicle_seconds

    assert vehicle_seconds(vehicle, 100.0, 160.0) == pytest.approx(
        float(vehicle_time_s(vehicle, 100.0, 160.0))
    )
