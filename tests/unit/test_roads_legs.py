"""Many legs at once and one-to-all trees (``RoadGraph.legs``, ``RoadGraph.reach``)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from scipy.sparse.csgraph import dijkstra

from foodmesh.roads import OutsideGraph, Overrides, RoadGraph, TrafficModel
from tests.unit._roads import CD_MID, A, B, C, D, P, junction_graph

RUSH = dt.datetime(2026, 11, 24, 18, 0)  # a Tuesday, 6 pm local
POINTS = [P, B, C, D, A, CD_MID, (37.7710, -122.4200), (37.7720, -122.4185)]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> RoadGraph:
    return RoadGraph.default(cache_dir=tmp_path_factory.getbasetemp() / "roads")


def _agree(g: RoadGraph, origins: list, dests: list, **kw: object) -> None:
    legs = g.legs(origins, dests, depart_at=RUSH, **kw)  # type: ignore[arg-type]
    assert len(legs) == len(origins)
    for i, (o, d) in enumerate(zip(origins, dests, strict=True)):
        r = g.route(o, d, depart_at=RUSH, **kw)  # type: ignore[arg-type]
        assert legs.duration_s[i] == pytest.approx(r.duration_s, rel=1e-9), (o, d)
        assert legs.distance_m[i] == pytest.approx(r.distance_m, rel=1e-9), (o, d)
        assert legs.free_flow_s[i] == pytest.approx(r.free_flow_s, rel=1e-9), (o, d)


@pytest.mark.parametrize("one", POINTS)
def test_legs_agree_with_route_at_a_node_snap_mid_edge_and_on_parallel_edges(
    one: tuple[float, float],
) -> None:
    g = junction_graph()
    assert g.snap(*P).distance_m < 0.01 and g._parallel.any()
    others = [p for p in POINTS if p != one]
    traffic = TrafficModel()
    for kw in ({}, {"traffic": traffic}):
        _agree(g, [one] * len(others), others, **kw)  # from the origin's tree
        _agree(g, others, [one] * len(others), **kw)  # from the destination's tree


def test_legs_agree_with_route_on_the_city_with_a_closed_street(city: RoadGraph) -> None:
    rng = np.random.default_rng(11)
    pts = [(37.7749 + rng.uniform(-0.03, 0.03), -122.4194 + rng.uniform(-0.03, 0.03))
           for _ in range(12)]  # fmt: skip
    rest = (37.7800, -122.4100)
    closed = Overrides.of(closed=city.edges_near(37.7760, -122.4150, 150.0))
    kw = {"traffic": TrafficModel(), "overrides": closed}
    _agree(city, pts, [rest] * len(pts), **kw)
    _agree(city, [rest] * len(pts), pts, **kw)
    _agree(city, pts[:6], pts[6:], **kw)  # distinct pairs: one search each


def test_legs_beyond_the_limit_are_inf_and_off_map_points_raise(city: RoadGraph) -> None:
    o, d = (37.7749, -122.4194), (37.80, -122.44)
    legs = city.legs([o, o], [d, o], depart_at=RUSH, limit_s=10.0)
    assert math.isinf(legs.duration_s[0]) and math.isinf(legs.distance_m[0])
    assert legs.duration_s[1] == 0.0
    with pytest.raises(OutsideGraph) as err:
        city.legs([o, (37.7749, -122.75)], [d, d], depart_at=RUSH, max_snap_m=500.0)
    assert err.value.which == "origins[1]"


def test_reach_from_a_node_is_dijkstra_and_its_sums_are_the_routes(city: RoadGraph) -> None:
    node = 1234
    ws = city._weights_for(None, None, None)
    want = dijkstra(city._forward(ws), directed=True, indices=node)
    r = city.reach(node)
    np.testing.assert_allclose(r.time_s, want)
    for target in (17, 9000, 20000):
        route = city.route(city.node_snap(node), city.node_snap(target), depart_at=RUSH)
        assert r.sums[target, 0] == pytest.approx(route.distance_m, rel=1e-9)
        assert r.sums[target, 1] == pytest.approx(route.free_flow_s, rel=1e-9)
    back = city.reach(city.node_snap(node), reverse=True, limit_s=120.0)
    assert back.time_s[node] == 0.0 and np.isinf(back.time_s).any()
