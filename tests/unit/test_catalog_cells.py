"""The cache of popular searches (``cells.py``): one 0.01° cell's candidates serve every
point of the cell with exactly the uncached answer; entries expire, are bounded, and die
with the table they were computed on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from servers.catalog.cells import CellCache
from servers.catalog.search import Query, SearchDoc, paginate
from servers.catalog.table import RegionTable, cell_of, cell_reach_miles, search_table
from servers.catalog.zones import E7, Polygon, PolygonSet
from tests.unit.test_catalog_table import random_docs, random_query, rings, same


def points_of_the_cell(rng: random.Random, lat: float, lon: float) -> list[tuple[float, float]]:
    """Points whose lat/lon round to the same 2 places as ``lat, lon``: corners, edges, any."""
    clat, clon = cell_of(lat, lon)
    out = [(lat, lon)]
    for _ in range(6):
        dy = rng.choice([-0.00499999, 0.00499999, 0.0, rng.uniform(-0.005, 0.005)])
        dx = rng.choice([-0.00499999, 0.00499999, 0.0, rng.uniform(-0.005, 0.005)])
        p = (clat + dy, clon + dx)
        if cell_of(*p) == (clat, clon):
            out.append(p)
    return out


@given(st.integers(0, 2**32), st.sampled_from([1, 3]))
@settings(max_examples=30, deadline=None)
def test_a_cells_candidates_give_every_point_of_the_cell_the_uncached_answer(
    seed: int, regions: int
) -> None:
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(1, 150))
    parts: list[list[SearchDoc]] = [[] for _ in range(regions)]
    for d in docs:
        parts[rng.randrange(regions)].append(d)
    if regions > 1:
        parts[-1].append(docs[0])  # a restaurant moving between regions: in two at once
    merged = RegionTable.merge([RegionTable(p) for p in parts])
    now = dt.datetime(2026, 3, 6, rng.randint(0, 23), rng.randint(0, 59), tzinfo=dt.UTC)
    cache = CellCache()
    for _ in range(6):
        base = random_query(rng, docs)
        chosen = sorted(rng.sample(range(regions), rng.randint(1, regions)))
        for lat, lon in points_of_the_cell(rng, base.lat, base.lon):
            # Another sort and page in the same cell: the same entry, an exact answer.
            q = dataclasses.replace(base, lat=lat, lon=lon, sort=rng.choice([1, 2, 3, 4]))
            rows, zones = cache.rows(merged, q, chosen)
            got = search_table(merged, q, now, parts=chosen, rows=rows, zones=zones)
            want = search_table(merged, q, now, parts=chosen)
            assert len(got) == len(want)
            for a, b in zip(got[:], want[:], strict=True):
                same(a, b)
            assert paginate(got, q, "").next_token == paginate(want, q, "").next_token
    assert cache.hits > 0


def test_the_reach_covers_every_point_that_rounds_to_the_cell() -> None:
    for clat, clon in [(0.0, 0.0), (37.77, -122.42), (64.15, -21.94), (-33.87, 151.21),
                       (89.99, 10.0), (12.34, 180.0)]:  # fmt: skip
        reach = cell_reach_miles(clat, clon)
        for dy in (-0.005, 0.0, 0.005):
            for dx in (-0.005, 0.0, 0.005):
                lat = max(-90.0, min(90.0, clat + dy))
                assert haversine_m(clat, clon, lat, clon + dx) / METERS_PER_MILE <= reach
        assert reach < 0.5  # a 0.01° cell: under half a mile from its centre


def table_of(seed: int, n: int = 40) -> RegionTable:
    return RegionTable(random_docs(random.Random(seed), n))


def test_entries_are_reused_within_the_ttl_then_computed_again() -> None:
    clock = [0.0]
    cache = CellCache(ttl_s=10.0, clock=lambda: clock[0])
    table = table_of(1)
    q = Query(lat=37.7601, lon=-122.4301, radius_miles=3.0)
    first = cache.rows(table, q, [0])
    near = dataclasses.replace(q, lat=37.7649, lon=-122.4251, sort=2, page_size=5)
    assert cache.rows(table, near, [0])[0] is first[0]
    assert (cache.hits, cache.misses) == (1, 1)
    # Another cell, radius or point-free filter is another entry.
    cache.rows(table, dataclasses.replace(q, lat=37.7701), [0])
    cache.rows(table, dataclasses.replace(q, radius_miles=5.0), [0])
    cache.rows(table, dataclasses.replace(q, cuisines=frozenset({"thai"})), [0])
    assert (cache.hits, cache.misses) == (1, 4)
    clock[0] = 10.5
    assert cache.rows(table, q, [0])[0] is not first[0]
    assert (cache.hits, cache.misses) == (1, 5)


def test_a_new_table_drops_every_entry() -> None:
    cache = CellCache()
    old, new = table_of(1), table_of(2)
    q = Query(lat=37.76, lon=-122.43, radius_miles=5.0)
    cache.rows(old, q, [0])
    cache.rows(old, dataclasses.replace(q, radius_miles=1.0), [0])
    assert len(cache) == 2
    rows, zones = cache.rows(new, q, [0])  # the table changed (a restaurant did): recomputed
    assert (cache.hits, cache.misses, cache.invalidations, len(cache)) == (0, 3, 1, 1)
    want_rows, want_zones = new.candidates(q, [0])
    assert (rows.tolist(), zones.tolist()) == (want_rows.tolist(), want_zones.tolist())


def test_the_memory_is_bounded_least_recently_used_first() -> None:
    cache = CellCache(max_entries=3)
    table = table_of(3)
    qs = [Query(lat=37.70 + i * 0.01, lon=-122.43) for i in range(4)]
    for q in qs[:3]:
        cache.rows(table, q, [0])
    cache.rows(table, qs[0], [0])  # used again: the oldest is now qs[1]
    cache.rows(table, qs[3], [0])
    assert len(cache) == 3
    hits = cache.hits
    cache.rows(table, qs[0], [0])
    assert cache.hits == hits + 1
    cache.rows(table, qs[1], [0])
    assert cache.hits == hits + 1  # it was evicted


def test_a_zero_ttl_caches_nothing() -> None:
    cache = CellCache(ttl_s=0)
    table = table_of(4)
    q = Query(lat=37.76, lon=-122.43)
    cache.rows(table, q, [0])
    cache.rows(table, q, [0])
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_a_settled_zone_holds_all_or_none_of_the_square(data: st.DataObject) -> None:
    ring = data.draw(rings())
    polys = PolygonSet([Polygon.of_e7(ring)])
    half = data.draw(st.sampled_from([1, 3, 50_001, E7]))
    y = data.draw(st.integers(-3 * E7, 3 * E7))
    x = data.draw(st.integers(-5 * E7, 5 * E7))
    (settled,) = polys.settled_e7(y, x, half, np.array([0], dtype=np.int64)).tolist()
    if settled < 0:
        return
    grid = [(y + dy * half // 4, x + dx * half // 4) for dy in range(-4, 5) for dx in range(-4, 5)]
    for py, px in grid:
        (inside,) = polys.contains_e7(py, px, np.array([0], dtype=np.int64)).tolist()
        assert inside == bool(settled), (py, px)
