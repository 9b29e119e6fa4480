"""The default city, traffic multipliers, live overrides and turn-by-turn steps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from foodmesh.roads import (
    Overrides,
    RoadClass,
    RoadGraph,
    TrafficModel,
    Unreachable,
    decode_polyline,
    haversine_m,
    seed_base_multiplier,
)
from foodmesh.roads.city import BRIDGES, CROSSINGS, generate_city

SF = (37.7749, -122.4194)
#: The design's example points (restaurant, customer, driver fixes): all must route.
SEED_POINTS = [(37.7755, -122.4183), (37.7760, -122.4175), (37.7765, -122.4180), SF]
TUESDAY_RUSH = dt.datetime(2026, 11, 24, 18, 0)
TUESDAY_NIGHT = dt.datetime(2026, 11, 24, 3, 0)
SATURDAY_BRUNCH = dt.datetime(2026, 11, 28, 12, 0)
NORTH = (37.79, -122.43)  # north of the river
SOUTH = (37.72, -122.43)  # south of it


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> RoadGraph:
    return RoadGraph.default(cache_dir=tmp_path_factory.getbasetemp() / "roads")


def test_default_city_is_big_enough_and_around_san_francisco(city: RoadGraph) -> None:
    assert city.node_count >= 20_000
    lat0, lat1, lon0, lon1 = city.bounds()
    assert haversine_m(lat0, SF[1], lat1, SF[1]) >= 15_000
    assert haversine_m(SF[0], lon0, SF[0], lon1) >= 15_000
    assert lat0 < SF[0] < lat1 and lon0 < SF[1] < lon1
    for p in SEED_POINTS:
        assert city.snap(*p).distance_m < 60
    kinds = set(np.unique(city.road_class).tolist())
    assert {int(RoadClass.MOTORWAY), int(RoadClass.PRIMARY), int(RoadClass.RESIDENTIAL)} <= kinds
    assert city.oneway.any() and (~city.oneway).any()
    for name in (*BRIDGES.values(), "Market St", "US-101"):
        assert city.edges_named(name), name


def test_default_city_is_strongly_connected(city: RoadGraph) -> None:
    m = csr_matrix(
        (np.ones(city.edge_count), city.targets, city.offsets), shape=(city.node_count,) * 2
    )
    n, _ = connected_components(m, directed=True, connection="strong")
    assert n == 1


def test_default_city_is_generated_deterministically_and_cached(
    city: RoadGraph, tmp_path: Path
) -> None:
    again = generate_city()
    assert np.array_equal(again.lat, city.lat) and np.array_equal(again.targets, city.targets)
    assert np.allclose(again.length_m, city.length_m, rtol=1e-6)
    assert again.names == city.names
    first = RoadGraph.default(cache_dir=tmp_path)
    assert list(tmp_path.glob("default-city-*.npz"))
    assert RoadGraph.default(cache_dir=tmp_path) is first  # kept in memory per process


def test_a_corrupt_cached_city_is_regenerated(city: RoadGraph, tmp_path: Path) -> None:
    from foodmesh.roads.city import CITY_VERSION
    from foodmesh.roads.graph import FORMAT_VERSION

    cached = tmp_path / f"default-city-v{CITY_VERSION}-f{FORMAT_VERSION}.npz"
    cached.write_bytes(b"PK\x03\x04 truncated")
    again = RoadGraph.default(cache_dir=tmp_path)
    assert again.node_count == city.node_count
    assert RoadGraph.load(cached).node_count == city.node_count  # rewritten whole


def test_seed_example_route_is_short_and_has_steps(city: RoadGraph) -> None:
    r = city.route(SEED_POINTS[0], SEED_POINTS[1], depart_at=TUESDAY_NIGHT)
    assert 50 < r.distance_m < 1_500
    assert r.steps[0].maneuver == "depart" and r.steps[-1].maneuver == "arrive"
    assert sum(s.distance_m for s in r.steps) == pytest.approx(r.distance_m)
    assert sum(s.duration_s for s in r.steps) == pytest.approx(r.duration_s)
    decoded = decode_polyline(r.polyline)
    assert len(decoded) == len(r.path)
    assert decoded[0] == pytest.approx(r.path[0], abs=1e-5)


def test_a_route_around_corners_says_which_way_to_turn(city: RoadGraph) -> None:
    # Diagonal across blocks: has to turn at least once, and every step names its street.
    r = city.route(SF, (37.7900, -122.4000), depart_at=TUESDAY_NIGHT)
    middle = [s.maneuver for s in r.steps[1:-1]]
    assert any(m.startswith(("turn", "slight")) for m in middle)
    assert all(s.street for s in r.steps)
    assert all(s.distance_m > 0 for s in r.steps[:-1])


def test_seed_traffic_table() -> None:
    assert seed_base_multiplier(1, 8) == 1.5  # weekday morning rush
    assert seed_base_multiplier(4, 18) == 1.5  # weekday evening rush
    assert seed_base_multiplier(2, 12) == 1.2  # weekday lunch
    assert seed_base_multiplier(2, 3) == 1.0
    assert seed_base_multiplier(5, 12) == 1.3  # weekend brunch
    assert seed_base_multiplier(6, 22) == 0.9


def test_rush_hour_is_between_one_and_a_half_and_two_times_by_road_class() -> None:
    tm = TrafficModel()
    assert tm.multiplier(RoadClass.PRIMARY, TUESDAY_RUSH) == pytest.approx(2.0)
    assert tm.multiplier(RoadClass.MOTORWAY, TUESDAY_RUSH) == pytest.approx(2.0)
    assert tm.multiplier(RoadClass.RESIDENTIAL, TUESDAY_RUSH) == pytest.approx(1.5)
    assert tm.multiplier(RoadClass.RESIDENTIAL, TUESDAY_NIGHT) == 1.0
    assert tm.multiplier(RoadClass.RESIDENTIAL, SATURDAY_BRUNCH) == pytest.approx(1.3)
    assert list(tm.multipliers(TUESDAY_RUSH)) == [tm.multiplier(c, TUESDAY_RUSH) for c in RoadClass]
    assert TrafficModel(scale=0.0).multiplier(RoadClass.PRIMARY, TUESDAY_RUSH) == 1.0


def test_traffic_uses_the_citys_local_time() -> None:
    tm = TrafficModel(timezone="America/Los_Angeles")
    # 02:00 UTC on a Wednesday is 18:00 on Tuesday in San Francisco: rush hour.
    utc = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
    assert tm.multiplier(RoadClass.PRIMARY, utc) == pytest.approx(2.0)
    assert tm.bucket(utc) == (1, 18)
    la = dt.datetime(2026, 11, 24, 18, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert tm.multiplier(RoadClass.PRIMARY, la) == pytest.approx(2.0)


def test_rush_hour_routes_take_longer_than_at_night(city: RoadGraph) -> None:
    tm = TrafficModel()
    night = city.route(SF, SOUTH, depart_at=TUESDAY_NIGHT, traffic=tm)
    rush = city.route(SF, SOUTH, depart_at=TUESDAY_RUSH, traffic=tm)
    assert night.duration_s == pytest.approx(night.free_flow_s)
    assert 1.5 * night.duration_s <= rush.duration_s <= 2.0 * night.duration_s + 1e-6
    assert 1.5 <= rush.traffic_multiplier <= 2.0


def test_closing_the_bridge_in_use_detours_and_closing_all_is_unreachable(
    city: RoadGraph,
) -> None:
    first = city.route(NORTH, SOUTH, depart_at=TUESDAY_NIGHT)
    used = {city.street(e) for e in first.edges} & set(CROSSINGS)
    assert len(used) == 1
    closed = Overrides().with_closed(e for name in used for e in city.edges_named(name))
    detour = city.route(NORTH, SOUTH, depart_at=TUESDAY_NIGHT, overrides=closed)
    assert not set(detour.edges) & closed.closed
    assert detour.duration_s > first.duration_s
    assert {city.street(e) for e in detour.edges} & set(CROSSINGS) - used
    everything = Overrides().with_closed(e for name in CROSSINGS for e in city.edges_named(name))
    with pytest.raises(Unreachable):
        city.route(NORTH, SOUTH, depart_at=TUESDAY_NIGHT, overrides=everything)
    times = city.travel_times([NORTH, SF], SOUTH, depart_at=TUESDAY_NIGHT, overrides=everything)
    assert np.isinf(times).all()
    # Same side of the river still routes with every crossing closed.
    city.route(NORTH, SF, depart_at=TUESDAY_NIGHT, overrides=everything)


def test_an_incident_slows_the_route_that_crosses_it(city: RoadGraph) -> None:
    base = city.route(SF, (37.7749, -122.3900), depart_at=TUESDAY_NIGHT)
    mid = base.path[len(base.path) // 2]
    slow = Overrides().with_slowdown(city.edges_near(mid[0], mid[1], 30), 20.0)
    assert slow.slowdowns
    after = city.route(SF, (37.7749, -122.3900), depart_at=TUESDAY_NIGHT, overrides=slow)
    assert after.duration_s > base.duration_s
    with pytest.raises(ValueError):
        Overrides.of(slowdowns={1: 0.5})


def test_batch_travel_times_match_single_routes(city: RoadGraph) -> None:
    rng = np.random.default_rng(3)
    lat0, lat1, lon0, lon1 = city.bounds()
    drivers = [
        (float(a), float(b))
        for a, b in zip(rng.uniform(lat0, lat1, 200), rng.uniform(lon0, lon1, 200), strict=True)
    ]
    restaurant = SEED_POINTS[0]
    tm = TrafficModel()
    times = city.travel_times(drivers, restaurant, depart_at=TUESDAY_RUSH, traffic=tm)
    assert times.shape == (200,) and np.isfinite(times).all()
    for i in range(0, 200, 40):
        r = city.route(drivers[i], restaurant, depart_at=TUESDAY_RUSH, traffic=tm)
        assert times[i] == pytest.approx(r.duration_s, rel=1e-9)
    capped = city.travel_times(drivers, restaurant, depart_at=TUESDAY_RUSH, limit_s=300)
    assert np.isinf(capped).any() and (capped[np.isfinite(capped)] <= 300).all()


def test_the_generated_and_the_cached_city_route_identically(
    city: RoadGraph, tmp_path: Path
) -> None:
    fresh = generate_city()
    loaded = RoadGraph.load(fresh.save(tmp_path / "c.npz"))
    assert np.array_equal(fresh.length_m, loaded.length_m)
    assert np.array_equal(fresh.speed_mps, loaded.speed_mps)
    a = fresh.route(NORTH, SOUTH, depart_at=TUESDAY_RUSH, traffic=TrafficModel())
    b = loaded.route(NORTH, SOUTH, depart_at=TUESDAY_RUSH, traffic=TrafficModel())
    assert a.duration_s == b.duration_s and a.polyline == b.polyline
