"""Vectorised search (``table.py``, ``zones.PolygonSet``) against the scalar reference."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.catalog.hours import Span
from servers.catalog.model import Address, Closure, Restaurant, Zone
from servers.catalog.search import Hit, Query, SearchDoc, Sort, ZoneDoc, paginate, search_docs
from servers.catalog.table import RegionTable, miles_between, search_table
from servers.catalog.text import TextQuery
from servers.catalog.zones import E7, Polygon, PolygonSet

# --- polygons ---------------------------------------------------------------------------------


@st.composite
def rings(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Random rings on a coarse grid (so points land on edges and vertices often), any shape:
    concave, self-crossing, with collinear and repeated vertices; some with more vertices
    than a padded block holds (the general path)."""
    n = draw(st.integers(3, 12) | st.integers(30, 40))
    scale = draw(st.sampled_from([1, 7, E7, 45 * E7]))
    pts = draw(st.lists(st.tuples(st.integers(-2, 2), st.integers(-4, 4)), min_size=n,
                        max_size=n))  # fmt: skip
    return [(a * scale, o * scale) for a, o in pts]


@st.composite
def probes(draw: st.DrawFn, ring: list[tuple[int, int]]) -> tuple[int, int]:
    """A point on a vertex, on an edge, a unit beside one, or anywhere near the ring."""
    kind = draw(st.sampled_from(["vertex", "edge", "beside", "any"]))
    i = draw(st.integers(0, len(ring) - 1))
    (ay, ax), (by, bx) = ring[i - 1], ring[i]
    if kind == "vertex":
        return by, bx
    if kind in ("edge", "beside"):
        k = draw(st.integers(0, 4))
        y, x = ay + (by - ay) * k // 4, ax + (bx - ax) * k // 4
        if kind == "beside":
            y, x = y + draw(st.integers(-1, 1)), x + draw(st.integers(-1, 1))
        return y, x
    lo_y, hi_y = min(p[0] for p in ring), max(p[0] for p in ring)
    lo_x, hi_x = min(p[1] for p in ring), max(p[1] for p in ring)
    return (draw(st.integers(lo_y - 2, hi_y + 2)), draw(st.integers(lo_x - 2, hi_x + 2)))


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_polygon_set_agrees_with_the_scalar_test(data: st.DataObject) -> None:
    polys = [Polygon.of_e7(data.draw(rings())) for _ in range(data.draw(st.integers(1, 6)))]
    cut = data.draw(st.integers(0, len(polys)))
    # Built at once, or merged from two sets (padded blocks widened, or the general path).
    ps = data.draw(st.sampled_from([PolygonSet(polys), PolygonSet.merge(
        [PolygonSet(polys[:cut]), PolygonSet(polys[cut:])])]))  # fmt: skip
    for _ in range(10):
        ring = list(zip(polys[0].lats, polys[0].lons, strict=True))
        y, x = data.draw(probes(ring))
        want = [p.contains_e7(y, x) for p in polys]
        assert ps.contains_e7(y, x).tolist() == want
        which = np.array(data.draw(st.lists(st.integers(0, len(polys) - 1), max_size=8)),
                         dtype=np.int64)  # fmt: skip
        assert ps.contains_e7(y, x, which).tolist() == [want[k] for k in which.tolist()]


@given(st.integers(-900_000_000, 900_000_000), st.integers(-1_800_000_000, 1_800_000_000))
@settings(deadline=None)
def test_polygon_set_does_not_overflow_at_the_extremes(y: int, x: int) -> None:
    # The widest zone there can be: every product is as large as it gets.
    big = Polygon.of_e7([(-90 * E7, -180 * E7), (-90 * E7, 180 * E7), (90 * E7, 180 * E7),
                         (90 * E7, -180 * E7), (0, 0)])  # fmt: skip
    assert PolygonSet([big]).contains_e7(y, x).tolist() == [big.contains_e7(y, x)]


def test_an_empty_polygon_set_holds_nothing() -> None:
    ps = PolygonSet([])
    assert len(ps) == 0 and ps.contains_e7(0, 0).tolist() == []


# --- whole searches ---------------------------------------------------------------------------

CENTER = (37.76, -122.43)
CUISINES = ["italian", "thai", "mexican", "sushi"]
ZONES = ["America/Los_Angeles", "America/New_York", "Asia/Kathmandu"]


def random_docs(rng: random.Random, n: int) -> list[SearchDoc]:
    docs = []
    for i in range(n):
        # Coarse positions: co-located restaurants and equal distances (ties) happen.
        lat = CENTER[0] + rng.randint(-40, 40) * 0.0025
        lon = CENTER[1] + rng.randint(-40, 40) * 0.0025
        zones = []
        for k in range(rng.choice([1, 1, 2, 3])):
            h, w = rng.randint(1, 30) * 0.0025, rng.randint(1, 30) * 0.0025
            if rng.random() < 0.3:  # a triangle, edges through grid points on a slant
                poly = Polygon.of([(lat - h, lon - w), (lat - h, lon + w), (lat + h, lon)])
            else:
                poly = Polygon.of([(lat - h, lon - w), (lat - h, lon + w), (lat + h, lon + w),
                                   (lat + h, lon - w)])  # fmt: skip
            zones.append(Zone(f"z{k}", poly, rng.choice([0, 99, 199]), rng.choice([0, 1500])))
        reviews = rng.randint(0, 4)
        start = rng.randrange(0, 1440, 30)
        r = Restaurant(
            restaurant_id=f"r{rng.randint(0, 10**6):07d}-{i}", name=f"R{i}",
            cuisines=tuple(rng.sample(CUISINES, rng.randint(1, 2))),
            address=Address(lat, lon), time_zone=rng.choice(ZONES),
            hours=tuple(Span(d, start, start + rng.choice([60, 600, 1440])) for d in range(1, 8)
                        if rng.random() < 0.8),
            closures=(Closure("2026-03-06"),) if rng.random() < 0.1 else (),
            price_level=rng.randint(1, 4), currency="USD",
            minimum_order_minor=rng.choice([0, 1000, 2000]),
            avg_prep_time_min=rng.choice([10, 15, 20]), image_url="", paused=rng.random() < 0.1,
            zones=tuple(zones), max_delivery_miles=rng.choice([1.0, 3.0, 5.0, 25.0]),
            owner_id="o", rating_sum=rng.randint(reviews, 5 * reviews), review_count=reviews,
            order_count=rng.randint(0, 3),
            dishes=tuple((d, f"{d}, {rng.choice(['spicy', 'fresh', ''])}")
                         for d in rng.sample(DISHES, rng.randint(0, 3))),
            popularity=rng.choice([0.0, 0.0, 1.5, 3.0]),
        )  # fmt: skip
        docs.append(SearchDoc.of(r))
    return docs


DISHES = ["Margherita Pizza", "Pepperoni Pizza", "Tonkotsu Ramen", "Pad Thai", "Caesar Salad",
          "Fish Taco", "Green Curry", "Crème Brûlée"]  # fmt: skip
TEXTS = ["pizza", "margarita", "piz", "ramen noodles", "taco", "curry", "salad", "creme", "xyz",
         "r1", "thai"]  # fmt: skip


def random_query(rng: random.Random, docs: list[SearchDoc]) -> Query:
    if rng.random() < 0.3:  # exactly on a restaurant, or on a zone's vertex
        d = rng.choice(docs)
        lat, lon = (d.lat, d.lon) if rng.random() < 0.5 else d.zones[0].polygon.vertices[0]
    else:
        lat = CENTER[0] + rng.randint(-40, 40) * 0.0025
        lon = CENTER[1] + rng.randint(-40, 40) * 0.0025
    return Query(
        lat=lat, lon=lon, radius_miles=rng.choice([0.5, 1.0, 3.0, 5.0, 25.0]),
        cuisines=frozenset(rng.sample(CUISINES + ["none"], rng.randint(0, 2))),
        min_rating=rng.choice([0.0, 0.0, 2.5, 4.0]),
        max_delivery_time_min=rng.choice([0, 0, 25, 35]),
        price_levels=frozenset(rng.sample([1, 2, 3, 4], rng.randint(0, 2))),
        open_now=rng.random() < 0.4, sort=rng.choice([1, 2, 3, 4]),
        page_size=rng.choice([5, 20, 100]),
        text=TextQuery.parse(rng.choice(TEXTS)) if rng.random() < 0.5 else None,
    )  # fmt: skip


def same(a: Hit, b: Hit) -> None:
    assert a.doc.restaurant_id == b.doc.restaurant_id
    assert a.distance_miles == b.distance_miles
    assert (a.delivery_time_min, a.fee_minor, a.minimum_minor, a.is_open) == (
        b.delivery_time_min, b.fee_minor, b.minimum_minor, b.is_open)  # fmt: skip
    assert a.key == b.key


@given(st.integers(0, 2**32), st.sampled_from([1, 3]))
@settings(max_examples=60, deadline=None)
def test_a_vectorised_search_gives_the_reference_hits_in_order(seed: int, regions: int) -> None:
    rng = random.Random(seed)
    docs = random_docs(rng, rng.randint(0, 150))
    # Split over tables as regions would be (a restaurant moving: in two of them at once).
    parts: list[list[SearchDoc]] = [[] for _ in range(regions)]
    for d in docs:
        parts[rng.randrange(regions)].append(d)
    if docs and regions > 1:
        parts[-1].append(docs[0])
    tables = [RegionTable(p) for p in parts]
    merged = RegionTable.merge(tables)
    now = dt.datetime(2026, 3, 6, rng.randint(0, 23), rng.randint(0, 59), tzinfo=dt.UTC)
    for _ in range(15):
        q = random_query(rng, docs) if docs else Query(lat=CENTER[0], lon=CENTER[1])
        chosen = sorted(rng.sample(range(regions), rng.randint(1, regions)))
        # The reference sees the chosen parts' documents in the same order.
        want = search_docs([d for i in chosen for d in tables[i].docs], q, now)
        got = search_table(merged, q, now, parts=chosen)
        assert len(got) == len(want)
        for a, b in zip(got[:], want, strict=True):
            same(a, b)
        # Pages through a cursor, the same.
        token, seen = "", 0
        while True:
            mine, ref = paginate(got, q, token), paginate(want, q, token)
            assert mine.total == ref.total and mine.next_token == ref.next_token
            for a, b in zip(mine.hits, ref.hits, strict=True):
                same(a, b)
            seen += len(mine.hits)
            token = mine.next_token
            if not token:
                break
        assert seen == len(want)


def test_rows_exactly_on_the_radius_or_their_maximum_are_decided_like_the_scalar_search() -> None:
    # Restaurants due north about 1 m apart; the radius is exactly one row's distance as
    # the scalar haversine measures it, another row's maximum exactly its own distance.
    base = random_docs(random.Random(3), 1)[0]
    big = Polygon.of([(36.0, -123.0), (36.0, -121.0), (38.0, -121.0), (38.0, -123.0)])
    docs = []
    for k, deg in enumerate(np.linspace(0.0, 0.04, 4001).tolist()):
        docs.append(SearchDoc(**{**{f: getattr(base, f) for f in SearchDoc.__slots__},
                                 "restaurant_id": f"n{k:05d}", "lat": 37.0 + deg, "lon": -122.0,
                                 "zones": (ZoneDoc("z", big, 0, 0),), "max_miles": 25.0,
                                 "paused": False, "hours": ()}))  # fmt: skip
    edge = miles_between(37.0, -122.0, docs[2900])
    own = miles_between(37.0, -122.0, docs[1000])
    docs[1000] = SearchDoc(**{**{f: getattr(docs[1000], f) for f in SearchDoc.__slots__},
                              "max_miles": own})  # fmt: skip
    q = Query(lat=37.0, lon=-122.0, radius_miles=edge, sort=Sort.DELIVERY_TIME, page_size=100)
    now = dt.datetime(2026, 3, 6, 12, tzinfo=dt.UTC)
    want = search_docs(docs, q, now)
    got = search_table(RegionTable(docs), q, now)
    ids = [h.doc.restaurant_id for h in want]
    assert ids[-1] == "n02900" and "n01000" in ids and len(ids) == 2901
    assert [h.doc.restaurant_id for h in got[:]] == ids
    assert [h.delivery_time_min for h in got[:]] == [h.delivery_time_min for h in want]


@pytest.mark.parametrize(("lat", "lon"), [(10.0, 179.99), (-20.0, -179.995), (89.95, 30.0),
                                           (-89.99, -150.0), (0.0, 0.0)])  # fmt: skip
def test_the_longitude_prefilter_misses_nobody_across_the_antimeridian_or_near_a_pole(
    lat: float, lon: float
) -> None:
    rng = random.Random(5)
    base = random_docs(rng, 1)[0]
    docs = []
    for k in range(400):
        dlat, dlon = rng.uniform(-0.3, 0.3), rng.uniform(-8.0, 8.0)
        la = max(-90.0, min(90.0, lat + dlat))
        lo = (lon + dlon + 180.0) % 360.0 - 180.0
        docs.append(SearchDoc(**{**{f: getattr(base, f) for f in SearchDoc.__slots__},
                                 "restaurant_id": f"p{k:04d}", "lat": la, "lon": lo,
                                 "zones": (ZoneDoc("z", Polygon.of([(-90.0, -180.0), (-90.0, 180.0),
                                           (90.0, 180.0), (90.0, -180.0)]), 0, 0),),
                                 "max_miles": 25.0, "paused": False}))  # fmt: skip
    now = dt.datetime(2026, 3, 6, 12, tzinfo=dt.UTC)
    for radius in (1.0, 10.0, 25.0):
        q = Query(lat=lat, lon=lon, radius_miles=radius, page_size=100)
        want = [h.doc.restaurant_id for h in search_docs(docs, q, now)]
        assert [h.doc.restaurant_id for h in search_table(RegionTable(docs), q, now)[:]] == want
        if radius == 25.0:
            assert want


def test_opening_hours_are_reevaluated_when_the_local_minute_changes() -> None:
    doc = random_docs(random.Random(1), 1)[0]
    doc = SearchDoc(**{**{f: getattr(doc, f) for f in SearchDoc.__slots__},
                       "time_zone": "America/Los_Angeles", "paused": False, "closures": frozenset(),
                       "hours": tuple(Span(d, 600, 660) for d in range(1, 8))})  # fmt: skip
    table = RegionTable([doc])
    la_10_59 = dt.datetime(2026, 3, 6, 18, 59, 59, tzinfo=dt.UTC)
    assert table.open_at(la_10_59).tolist() == [True]
    assert table.open_at(la_10_59 + dt.timedelta(seconds=1)).tolist() == [False]
    assert math.isfinite(table.lat[0])
