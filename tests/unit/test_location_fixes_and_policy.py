"""The Location service's pure parts: which fixes are accepted, and how often apps report."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foodmesh.core.geo import geohash_decode, geohash_encode
from servers.location.fixes import (
    MAX_AGE_S,
    MAX_FUTURE_S,
    CellCache,
    Fix,
    Rejection,
    Throttle,
    check_fix,
)
from servers.location.policy import Activity, DriverActivity, IntervalPolicy, next_interval_s

NOW = 1_800_000_000.0


def fix(**kw: Any) -> Fix:
    base = Fix(driver_id="driver_456", lat=37.7765, lon=-122.418, accuracy_m=10.0,
               heading_deg=45.0, speed_mps=11.0, device_ts=NOW - 1, received_ts=NOW)  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_a_good_fix_is_accepted() -> None:
    assert check_fix(fix(), last_device_ts=None) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lat": 90.0001}, Rejection.BAD_COORDINATES),
        ({"lon": -180.5}, Rejection.BAD_COORDINATES),
        ({"lat": math.nan}, Rejection.BAD_COORDINATES),
        ({"lon": math.inf}, Rejection.BAD_COORDINATES),
        ({"accuracy_m": -1.0}, Rejection.BAD_ACCURACY),
        ({"accuracy_m": math.nan}, Rejection.BAD_ACCURACY),
        ({"heading_deg": 360.0}, Rejection.BAD_HEADING),
        ({"speed_mps": -0.1}, Rejection.BAD_SPEED),
        ({"device_ts": NOW + MAX_FUTURE_S + 1}, Rejection.IN_THE_FUTURE),
        ({"device_ts": NOW - MAX_AGE_S - 1}, Rejection.TOO_OLD),
    ],
)
def test_a_bad_fix_is_rejected_with_its_reason(change: dict[str, float], reason: Rejection) -> None:
    assert check_fix(fix(**change), last_device_ts=None) is reason


def test_same_or_older_timestamp_is_out_of_order() -> None:
    assert check_fix(fix(device_ts=NOW - 5), last_device_ts=NOW - 5) is Rejection.OUT_OF_ORDER
    assert check_fix(fix(device_ts=NOW - 6), last_device_ts=NOW - 5) is Rejection.OUT_OF_ORDER
    assert check_fix(fix(device_ts=NOW - 4), last_device_ts=NOW - 5) is None


def test_the_edges_of_the_world_are_valid() -> None:
    for lat, lon in ((90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)):
        assert check_fix(fix(lat=lat, lon=lon), last_device_ts=None) is None


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_the_throttle_never_allows_more_than_rate_plus_burst(gaps: list[float]) -> None:
    throttle = Throttle(rate=5.0, burst=10.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += throttle.allow(now)
    assert allowed <= 10 + 5.0 * now + 1e-9


def test_a_flood_is_throttled_and_a_steady_driver_is_not() -> None:
    flood = Throttle(rate=5.0, burst=10.0)
    assert sum(flood.allow(0.0) for _ in range(100)) == 10
    steady = Throttle(rate=5.0, burst=10.0)
    assert all(steady.allow(t * 0.2) for t in range(1000))  # exactly 5 fixes/s


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=-90, max_value=90),
            st.floats(min_value=-180, max_value=180),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_the_cell_cache_always_answers_what_the_encoder_does(
    moves: list[tuple[str, float, float]],
) -> None:
    cells = CellCache(max_drivers=2)  # small: the cache is also cleared along the way
    for driver, lat, lon in moves:
        assert cells.cell(driver, lat, lon) == geohash_encode(lat, lon, 6)


def test_the_cell_cache_is_exact_on_cell_edges_and_when_a_driver_moves() -> None:
    cells = CellCache()
    gh = cells.cell("d", 37.7749, -122.4194)
    lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(gh)
    # A cell holds its lower edges, not its upper ones: the next cell starts there.
    for lat, lon in ((lat_lo, lon_lo), (lat_hi, lon_lo), (lat_lo, lon_hi), (lat_hi, lon_hi),
                     (math.nextafter(lat_hi, -90), math.nextafter(lon_hi, -180))):  # fmt: skip
        assert cells.cell("d", lat, lon) == geohash_encode(lat, lon, 6)
        assert cells.cell("d", 37.7749, -122.4194) == gh  # and back
    for lat, lon in ((90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (-0.0, -0.0)):
        assert cells.cell("e", lat, lon) == geohash_encode(lat, lon, 6)


def test_on_a_delivery_the_app_reports_every_5_seconds() -> None:
    a = DriverActivity(Activity.ON_DELIVERY, distance_to_stop_m=4000, speed_mps=10)
    assert next_interval_s(a) == 5.0


def test_near_the_next_stop_the_app_reports_faster() -> None:
    close = DriverActivity(Activity.ON_DELIVERY, distance_to_stop_m=300, speed_mps=5)
    fast_approach = DriverActivity(Activity.ON_DELIVERY, distance_to_stop_m=800, speed_mps=30)
    assert next_interval_s(close) == 2.0
    assert next_interval_s(fast_approach) == 2.0


def test_idle_drivers_report_slowly_and_slower_when_parked() -> None:
    moving = DriverActivity(Activity.AVAILABLE, speed_mps=8, stationary_s=0)
    parked = DriverActivity(Activity.AVAILABLE, speed_mps=0, stationary_s=600)
    assert next_interval_s(moving) == 15.0
    assert next_interval_s(parked) == 30.0
    assert next_interval_s(DriverActivity(Activity.PAUSED)) == 60.0


@given(
    st.sampled_from(list(Activity)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=1e5),
)
def test_the_interval_always_stays_within_the_policy_bounds(
    activity: Activity, distance: float | None, speed: float, still: float
) -> None:
    policy = IntervalPolicy()
    s = next_interval_s(DriverActivity(activity, distance, speed, still), policy)
    assert policy.min_s <= s <= policy.max_s
    if activity is Activity.ON_DELIVERY:
        assert s <= policy.on_delivery_s  # a watched delivery is never reported less often
