"""Routing on random graphs against a reference Dijkstra (scipy), snapping, polylines."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from foodmesh.roads import (
    GraphFormatError,
    OutsideGraph,
    Overrides,
    RoadClass,
    RoadGraph,
    Snap,
    TrafficModel,
    Unreachable,
    decode_polyline,
    encode_polyline,
)
from foodmesh.roads.geo import LocalPlane

RUSH = dt.datetime(2026, 11, 24, 18, 0)  # a Tuesday, 6 pm local
NIGHT = dt.datetime(2026, 11, 24, 3, 0)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> RoadGraph:
    return RoadGraph.default(cache_dir=tmp_path_factory.getbasetemp() / "roads")


@st.composite
def random_graphs(draw: st.DrawFn) -> tuple[RoadGraph, frozenset[int]]:
    """A small random directed road graph (not necessarily connected) and edges to close."""
    n = draw(st.integers(2, 24))
    cells = draw(st.lists(st.integers(0, 399), min_size=n, max_size=n, unique=True))
    jitter = draw(st.lists(st.floats(-0.3, 0.3), min_size=2 * n, max_size=2 * n))
    plane = LocalPlane(37.7749, -122.4194)
    x = np.array([(c % 20 + jitter[2 * i]) * 150.0 for i, c in enumerate(cells)])
    y = np.array([(c // 20 + jitter[2 * i + 1]) * 150.0 for i, c in enumerate(cells)])
    lat, lon = plane.to_latlon(x, y)
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from(RoadClass)),
            min_size=1,
            max_size=4 * n,
        )
    )
    pairs = [p for p in pairs if p[0] != p[1]] or [(0, 1, RoadClass.PRIMARY)]
    u = [p[0] for p in pairs]
    v = [p[1] for p in pairs]
    cls = [int(p[2]) for p in pairs]
    speeds = draw(st.lists(st.floats(3.0, 30.0), min_size=len(pairs), max_size=len(pairs)))
    g = RoadGraph.from_edges(
        lat=lat,
        lon=lon,
        u=u,
        v=v,
        road_class=cls,
        speed_mps=speeds,
        name_idx=[i % 3 for i in range(len(pairs))],
        oneway=[True] * len(pairs),
        names=["A St", "B Ave", "C Blvd"],
        meta={"timezone": "America/Los_Angeles"},
        largest_component=False,
    )
    closed = draw(st.frozensets(st.integers(0, g.edge_count - 1), max_size=3))
    return g, closed


def reference_times(g: RoadGraph, w: np.ndarray, source: int) -> np.ndarray:
    """scipy's Dijkstra on a matrix of the fastest open edge per node pair."""
    best: dict[tuple[int, int], float] = {}
    for a, b, c in zip(g.sources.tolist(), g.targets.tolist(), w.tolist(), strict=True):
        if math.isfinite(c) and c < best.get((a, b), math.inf):
            best[(a, b)] = c
    rows = [a for a, _ in best]
    cols = [b for _, b in best]
    m = csr_matrix((list(best.values()), (rows, cols)), shape=(g.node_count,) * 2)
    return np.asarray(dijkstra(m, directed=True, indices=source))


def check_route_is_a_walk(g: RoadGraph, route_edges: tuple[int, ...]) -> None:
    for a, b in zip(route_edges, route_edges[1:], strict=False):
        assert g.targets[a] == g.sources[b], "consecutive edges of a route must join"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.data(), st.booleans())
def test_route_time_equals_reference_dijkstra_on_random_graphs(
    gc: tuple[RoadGraph, frozenset[int]], data: st.DataObject, with_traffic: bool
) -> None:
    g, closed = gc
    traffic = TrafficModel() if with_traffic else None
    overrides = Overrides.of(closed=closed, slowdowns={e: 2.5 for e in list(closed)[:1]})
    a = data.draw(st.integers(0, g.node_count - 1))
    b = data.draw(st.integers(0, g.node_count - 1))
    # Snaps exactly on the nodes: a coordinate could also lie on an edge passing over it.
    origin, dest = g.node_snap(a), g.node_snap(b)
    w = g.weights(depart_at=RUSH, traffic=traffic, overrides=overrides)
    ref = reference_times(g, w, a)[b]
    if not math.isfinite(ref):
        with pytest.raises(Unreachable):
            g.route(origin, dest, depart_at=RUSH, traffic=traffic, overrides=overrides)
        return
    r = g.route(origin, dest, depart_at=RUSH, traffic=traffic, overrides=overrides)
    assert r.duration_s == pytest.approx(ref, rel=1e-9, abs=1e-6)
    assert not closed & set(r.edges), "a route never uses a closed edge"
    check_route_is_a_walk(g, r.edges)
    assert r.distance_m == pytest.approx(float(np.sum(g.length_m[list(r.edges)])), abs=1e-6)
    # Many-to-one and one-to-many agree with the same reference.
    many = g.travel_times(
        [origin, dest], dest, depart_at=RUSH, traffic=traffic, overrides=overrides
    )
    assert many[0] == pytest.approx(ref, rel=1e-9, abs=1e-6)
    assert many[1] == pytest.approx(0.0, abs=1e-9)
    back = g.travel_times_from(origin, [dest], depart_at=RUSH, traffic=traffic, overrides=overrides)
    assert back[0] == pytest.approx(ref, rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(random_graphs(), st.data())
def test_route_between_points_on_edges_matches_a_graph_split_at_those_points(
    gc: tuple[RoadGraph, frozenset[int]], data: st.DataObject
) -> None:
    """Mid-edge endpoints: compare with Dijkstra on a graph that has them as real nodes."""
    g, _ = gc
    e1 = data.draw(st.integers(0, g.edge_count - 1))
    e2 = data.draw(st.integers(0, g.edge_count - 1))
    t1 = data.draw(st.floats(0.05, 0.95))
    t2 = data.draw(st.floats(0.05, 0.95))

    def point(e: int, t: float) -> tuple[float, float]:
        s, d = g.sources[e], g.targets[e]
        lat, lon = g.plane.to_latlon(g.x[s] + (g.x[d] - g.x[s]) * t, g.y[s] + (g.y[d] - g.y[s]) * t)
        return float(lat), float(lon)

    p1, p2 = point(e1, t1), point(e2, t2)
    o, d = g.snap(*p1), g.snap(*p2)
    w = g.weights(depart_at=NIGHT)
    # Reference: add O and D as nodes n, n+1 wired by the snapped fractions.
    n = g.node_count
    us, vs, ws = g.sources.tolist(), g.targets.tolist(), w.tolist()

    def edge(a: int, b: int, cost: float) -> None:
        us.append(a)
        vs.append(b)
        ws.append(cost)

    def along(sn: Snap) -> dict[int, float]:
        """Every edge drawn on the point's segment (either way, parallel ones too): position."""
        out = {}
        for e in range(g.edge_count):
            if (g.sources[e], g.targets[e]) == (sn.source, sn.target):
                out[e] = sn.fraction
            elif (g.sources[e], g.targets[e]) == (sn.target, sn.source):
                out[e] = 1 - sn.fraction
        return out

    at_o, at_d = along(o), along(d)
    for e, a in at_o.items():  # O leaves along any edge of its segment
        edge(n, int(g.targets[e]), (1 - a) * w[e])
    for e, b in at_d.items():  # D is reached along any edge of its segment
        edge(int(g.sources[e]), n + 1, b * w[e])
    for e, a in at_o.items():
        if e in at_d and at_d[e] >= a:
            edge(n, n + 1, (at_d[e] - a) * w[e])
    best: dict[tuple[int, int], float] = {}
    for a_, b_, c_ in zip(us, vs, ws, strict=True):
        best[(a_, b_)] = min(best.get((a_, b_), math.inf), max(c_, 1e-12))
    m = csr_matrix(
        (list(best.values()), ([k[0] for k in best], [k[1] for k in best])), shape=(n + 2, n + 2)
    )
    ref = float(dijkstra(m, directed=True, indices=n)[n + 1])
    if not math.isfinite(ref):
        with pytest.raises(Unreachable):
            g.route(o, d, depart_at=NIGHT)
        assert np.isinf(g.travel_times([p1], p2, depart_at=NIGHT)).all()
        return
    r = g.route(o, d, depart_at=NIGHT)
    assert r.duration_s == pytest.approx(ref, rel=1e-9, abs=1e-6)
    # The batch forms take raw coordinates of mid-edge points the same way.
    assert g.travel_times([p1], p2, depart_at=NIGHT)[0] == pytest.approx(ref, rel=1e-9, abs=1e-6)
    assert g.travel_times_from(p1, [p2], depart_at=NIGHT)[0] == pytest.approx(
        ref, rel=1e-9, abs=1e-6
    )
    assert r.path[0] == pytest.approx((o.lat, o.lon)) and r.path[-1] == pytest.approx(
        (d.lat, d.lon)
    )


def brute_force_snap(g: RoadGraph, lat: float, lon: float) -> float:
    px, py = g.plane.to_xy(lat, lon)
    ax, ay = g.x[g.sources], g.y[g.sources]
    bx, by = g.x[g.targets], g.y[g.targets]
    dx, dy = bx - ax, by - ay
    l2 = np.where(dx * dx + dy * dy > 0, dx * dx + dy * dy, 1.0)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / l2, 0, 1)
    return float(np.min(np.hypot(ax + t * dx - px, ay + t * dy - py)))


@settings(max_examples=40, deadline=None)
@given(
    random_graphs(), st.lists(st.tuples(st.floats(-500, 3500), st.floats(-500, 3500)), max_size=8)
)
def test_snap_finds_the_nearest_edge_like_a_brute_force_scan(
    gc: tuple[RoadGraph, frozenset[int]], pts: list[tuple[float, float]]
) -> None:
    g, _ = gc
    plane = LocalPlane(37.7749, -122.4194)
    lats, lons = plane.to_latlon([p[0] for p in pts], [p[1] for p in pts])
    many = g.snap_many(lats, lons)
    for lat, lon, s2 in zip(lats, lons, many, strict=True):
        s = g.snap(float(lat), float(lon))
        best = brute_force_snap(g, float(lat), float(lon))
        assert s.distance_m == pytest.approx(best, abs=1e-6)
        assert s2.distance_m == pytest.approx(best, abs=1e-6)
        foot = g.plane.to_xy(s.lat, s.lon)
        px, py = g.plane.to_xy(float(lat), float(lon))
        assert math.hypot(float(foot[0] - px), float(foot[1] - py)) == pytest.approx(
            s.distance_m, abs=1e-6
        )


def test_snap_on_the_default_city_matches_brute_force(city: RoadGraph) -> None:
    rng = np.random.default_rng(7)
    lat0, lat1, lon0, lon1 = city.bounds()
    lats = rng.uniform(lat0 - 0.01, lat1 + 0.01, 300)
    lons = rng.uniform(lon0 - 0.01, lon1 + 0.01, 300)
    snaps = city.snap_many(lats, lons)
    for lat, lon, s in zip(lats[:60], lons[:60], snaps[:60], strict=True):
        assert s.distance_m == pytest.approx(brute_force_snap(city, lat, lon), abs=1e-6)
        assert city.snap(float(lat), float(lon)).edge in (s.edge, s.twin) or math.isclose(
            city.snap(float(lat), float(lon)).distance_m, s.distance_m, abs_tol=1e-6
        )


def test_points_off_the_map_are_refused_with_the_argument_named(city: RoadGraph) -> None:
    here = (37.7749, -122.4194)
    with pytest.raises(OutsideGraph) as far:
        city.route((0.0, 0.0), here, depart_at=NIGHT)
    assert far.value.which == "origin" and far.value.distance_m > 1e6
    with pytest.raises(OutsideGraph) as nan:
        city.route(here, (float("nan"), 1.0), depart_at=NIGHT)
    assert nan.value.which == "destination"
    with pytest.raises(OutsideGraph) as many:
        city.travel_times([here, (91.0, 0.0)], here, depart_at=NIGHT)
    assert many.value.which == "origins[1]"
    with pytest.raises(OutsideGraph):
        city.snap(float("inf"), 0.0)


def test_polyline_encodes_googles_documented_example() -> None:
    pts = [(38.5, -120.2), (40.7, -120.95), (43.252, -126.453)]
    assert encode_polyline(pts) == "_p~iF~ps|U_ulLnnqC_mqNvxq`@"
    assert decode_polyline("_p~iF~ps|U_ulLnnqC_mqNvxq`@") == pts


@given(st.lists(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), max_size=50))
def test_polyline_round_trip_is_exact_to_five_decimals(pts: list[tuple[float, float]]) -> None:
    back = decode_polyline(encode_polyline(pts))
    assert len(back) == len(pts)
    for (a, b), (c, d) in zip(pts, back, strict=True):
        assert c == pytest.approx(round(a * 1e5) / 1e5, abs=1e-9)
        assert d == pytest.approx(round(b * 1e5) / 1e5, abs=1e-9)


@pytest.mark.parametrize("bad", ["?", "_p~iF~ps|U_", "\x01\x02"])
def test_polyline_decode_refuses_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_polyline(bad)


def test_graph_save_load_round_trip_and_corrupt_files(city: RoadGraph, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    p = city.save(tmp_path / "g.npz")
    back = RoadGraph.load(p)
    assert back.node_count == city.node_count and back.edge_count == city.edge_count
    assert np.array_equal(back.targets, city.targets) and back.names == city.names
    assert np.allclose(back.length_m, city.length_m, rtol=1e-6)
    (tmp_path / "bad.npz").write_bytes(b"not a zip at all")
    with pytest.raises(GraphFormatError):
        RoadGraph.load(tmp_path / "bad.npz")
    with pytest.raises(GraphFormatError):
        RoadGraph.load(tmp_path / "missing.npz")
    with pytest.raises(GraphFormatError, match="offsets|edge"):
        RoadGraph(
            lat=[37.0, 37.1],
            lon=[-122.0, -122.1],
            offsets=[0, 1, 1],
            targets=[5],
            length_m=[1.0],
            road_class=[1],
            speed_mps=[10.0],
            name_idx=[0],
            oneway=[True],
            names=["x"],
        )
