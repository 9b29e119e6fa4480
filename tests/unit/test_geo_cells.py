"""Geohash encoding (bit-interleaved) and the cells a search circle can touch."""

from __future__ import annotations

import math
import random

import pytest

from foodmesh.core.geo import EARTH_RADIUS_M, cells_covering, geohash_decode, geohash_encode


def _bisect_encode(lat: float, lon: float, precision: int) -> str:
    """The textbook geohash: halve the ranges one bit at a time (the reference)."""
    base32 = "0123456789bcdefghjkmnpqrstuvwxyz"
    lat_r, lon_r, bits, even, out = [-90.0, 90.0], [-180.0, 180.0], [], True, []
    while len(out) < precision:
        r, v = (lon_r, lon) if even else (lat_r, lat)
        mid = (r[0] + r[1]) / 2
        bits.append(1 if v >= mid else 0)
        r[0 if v >= mid else 1] = mid
        even = not even
        if len(bits) == 5:
            out.append(base32[int("".join(map(str, bits)), 2)])
            bits = []
    return "".join(out)


def test_encoding_matches_the_bisecting_reference() -> None:
    rng = random.Random(3)
    points = [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (37.7749, -122.4194)]
    points += [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(5000)]
    for lat, lon in points:
        for p in (1, 4, 6, 9, 12):
            assert geohash_encode(lat, lon, p) == _bisect_encode(lat, lon, p), (lat, lon, p)


def _destination(lat: float, lon: float, bearing: float, d: float) -> tuple[float, float]:
    dl = d / EARTH_RADIUS_M
    la1, lo1 = math.radians(lat), math.radians(lon)
    la2 = math.asin(math.sin(la1) * math.cos(dl) + math.cos(la1) * math.sin(dl) * math.cos(bearing))
    lo2 = lo1 + math.atan2(
        math.sin(bearing) * math.sin(dl) * math.cos(la1),
        math.cos(dl) - math.sin(la1) * math.sin(la2),
    )
    return math.degrees(la2), (math.degrees(lo2) + 540) % 360 - 180


@pytest.mark.parametrize(
    "center", [(37.7749, -122.4194), (0.0, 179.99), (-33.9, 18.4), (84.0, 10.0)]
)
def test_every_point_of_the_circle_lies_in_a_covering_cell(center: tuple[float, float]) -> None:
    rng = random.Random(5)
    for radius in (50.0, 1_000.0, 16_093.0, 50_000.0):
        cells = set(cells_covering(*center, radius, 4))
        for _ in range(400):
            lat, lon = _destination(*center, rng.uniform(0, 2 * math.pi), rng.uniform(0, radius))
            assert geohash_encode(lat, lon, 4) in cells


def test_a_small_circle_inside_one_cell_needs_only_that_cell() -> None:
    lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode("9q8y")
    centre = ((lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2)
    assert cells_covering(*centre, 100.0, 4) == ["9q8y"]
