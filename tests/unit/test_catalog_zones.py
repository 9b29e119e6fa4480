"""Delivery zones: exact point-in-polygon (concave shapes, edges, vertices) and GeoJSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.catalog.zones import (
    E7,
    Polygon,
    PolygonError,
    from_e7,
    parse_geojson,
    polygon_problem,
    to_e7,
)

# A "U" opening north, in degrees (lat, lon): x in [0, 3], y in [0, 3] minus the notch
# x in (1, 2), y in (1, 3]. Concave, with a vertex pointing into the notch.
U = [(0.0, 0.0), (0.0, 3.0), (3.0, 3.0), (3.0, 2.0), (1.0, 2.0), (1.0, 1.0), (3.0, 1.0), (3.0, 0.0)]


def in_u(lat: float, lon: float) -> bool:
    """The U's membership by hand: inside the square and not strictly inside the notch."""
    in_square = 0 <= lat <= 3 and 0 <= lon <= 3
    in_notch = 1 < lon < 2 and 1 < lat <= 3
    return in_square and not in_notch


U_POLY = Polygon.of(U)


def test_points_in_the_notch_of_a_concave_zone_are_outside() -> None:
    assert U_POLY.contains(0.5, 1.5)  # the U's floor
    assert U_POLY.contains(2.0, 0.5)  # left arm
    assert U_POLY.contains(2.0, 2.5)  # right arm
    assert not U_POLY.contains(2.0, 1.5)  # the notch, between the arms
    assert not U_POLY.contains(3.5, 1.5)
    assert not U_POLY.contains(-0.1, 1.5)


@pytest.mark.parametrize("vertex", U)
def test_every_vertex_counts_as_inside(vertex: tuple[float, float]) -> None:
    assert U_POLY.contains(*vertex)


@pytest.mark.parametrize(
    "point",
    [(0.0, 1.5), (1.0, 1.5), (2.0, 1.0), (2.0, 2.0), (1.5, 0.0), (1.5, 3.0), (3.0, 0.5)],
)
def test_points_on_edges_count_as_inside(point: tuple[float, float]) -> None:
    assert U_POLY.contains(*point)


def test_a_point_just_beside_an_edge_is_decided_exactly() -> None:
    # One E7 unit (~1 cm) into the notch from its left wall, and on the wall.
    assert U_POLY.contains_e7(2 * E7, 1 * E7)
    assert not U_POLY.contains_e7(2 * E7, 1 * E7 + 1)
    assert U_POLY.contains_e7(2 * E7, 1 * E7 - 1)


def test_a_ray_through_a_vertex_is_not_counted_twice() -> None:
    diamond = Polygon.of([(0.0, 1.0), (1.0, 2.0), (2.0, 1.0), (1.0, 0.0)])
    # The horizontal through (1, 0.5) passes exactly through vertices (1, 0) and (1, 2).
    assert diamond.contains(1.0, 0.5)
    assert not diamond.contains(1.0, -0.5)
    assert not diamond.contains(1.0, 2.5)
    # A horizontal through the top vertex only.
    assert not diamond.contains(2.0, 0.5)


coord = st.integers(min_value=-1 * E7, max_value=4 * E7)


@given(coord, coord)
@settings(deadline=None)  # the machine is shared: no timing in tests
def test_the_concave_zone_agrees_with_its_definition_everywhere(y: int, x: int) -> None:
    assert U_POLY.contains_e7(y, x) == in_u(from_e7(y), from_e7(x))


@given(st.integers(0, 3 * E7), st.sampled_from([0, 1 * E7, 2 * E7, 3 * E7]))
@settings(deadline=None)  # the machine is shared: no timing in tests
def test_horizontal_edges_and_lines_through_them_are_exact(x: int, y: int) -> None:
    assert U_POLY.contains_e7(y, x) == in_u(from_e7(y), from_e7(x))


@given(coord, coord, st.integers(0, len(U) - 1), st.booleans())
@settings(deadline=None)  # the machine is shared: no timing in tests
def test_orientation_and_starting_vertex_do_not_matter(
    y: int, x: int, start: int, reverse: bool
) -> None:
    ring = U[start:] + U[:start]
    if reverse:
        ring = ring[::-1]
    assert Polygon.of(ring).contains_e7(y, x) == U_POLY.contains_e7(y, x)


def test_e7_rounding_is_symmetric() -> None:
    assert to_e7(1.23456785) == 12345679 or to_e7(1.23456785) == 12345678
    assert to_e7(-37.7749) == -to_e7(37.7749)
    assert from_e7(to_e7(-122.4194)) == pytest.approx(-122.4194, abs=1e-9)


def test_bad_shapes_are_named() -> None:
    assert polygon_problem(U_POLY) is None
    bowtie = Polygon.of([(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
    assert "cross" in (polygon_problem(bowtie) or "")
    line = Polygon.of([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)])
    assert "no area" in (polygon_problem(line) or "")
    dup = Polygon.of([(0.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 1.0)])
    assert "distinct" in (polygon_problem(dup) or "")


def test_geojson_polygon_is_read_as_lon_lat_and_unclosed() -> None:
    geo = {"type": "Polygon", "coordinates": [[[-122.5, 37.7], [-122.3, 37.7], [-122.3, 37.9],
                                                [-122.5, 37.7]]]}  # fmt: skip
    assert parse_geojson(json.dumps(geo)) == [(37.7, -122.5), (37.7, -122.3), (37.9, -122.3)]
    feature = {"type": "Feature", "geometry": geo, "properties": {}}
    assert len(parse_geojson(json.dumps(feature))) == 3


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "JSON"),
        ('{"type": "Point", "coordinates": [0, 0]}', "Polygon"),
        ('{"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]], [[0,0],[1,0],[1,1],'
         '[0,0]]]}', "holes"),
        ('{"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1]]]}', "closed"),
        ('{"type": "Polygon", "coordinates": [[[0,0],[1,0],[0,0]]]}', "four"),
        ('{"type": "Polygon", "coordinates": [[[0,0],[1,95],[1,1],[0,0]]]}', "out of range"),
    ],
)  # fmt: skip
def test_bad_geojson_says_why(text: str, why: str) -> None:
    with pytest.raises(PolygonError, match=why):
        parse_geojson(text)
