"""Search's pure parts: the document round trip, filters, heuristic, ranking and cursors."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foodmesh.core.geo import haversine_m
from servers.catalog.hours import Span
from servers.catalog.model import Address, Closure, Restaurant, Zone
from servers.catalog.search import (
    BadCursor,
    Query,
    SearchDoc,
    Sort,
    decode_cursor,
    delivery_time_min,
    encode_cursor,
    evaluate,
    paginate,
    search_docs,
)
from servers.catalog.zones import Polygon

NOW = dt.datetime(2026, 3, 6, 20, 0, tzinfo=dt.UTC)  # Friday 12:00 in Los Angeles
SQUARE = Polygon.of([(37.6, -122.6), (37.6, -122.2), (37.9, -122.2), (37.9, -122.6)])


def restaurant(rid: str, lat: float, lon: float, **kw: object) -> Restaurant:
    base: dict[str, object] = dict(
        restaurant_id=rid, name=f"R {rid}", cuisines=("italian", "pizza"),
        address=Address(lat, lon, street="1 Main St", city="SF"), time_zone="America/Los_Angeles",
        hours=tuple(Span(d, 9 * 60, 22 * 60) for d in range(1, 8)),
        closures=(Closure("2026-12-25", "Christmas"),), price_level=2, currency="USD",
        minimum_order_minor=1000, avg_prep_time_min=15, image_url="https://img/x.jpg",
        paused=False, zones=(Zone("z1", SQUARE, 299, 1500),), max_delivery_miles=5.0,
        owner_id="o", rating_sum=9, review_count=2, order_count=7,
    )  # fmt: skip
    base.update(kw)
    return Restaurant(**base)  # type: ignore[arg-type]


def test_a_search_document_survives_the_index_round_trip() -> None:
    doc = SearchDoc.of(restaurant("r1", 37.77, -122.42))
    again = SearchDoc.decode(doc.encode())
    assert again == doc
    assert again.rating == 4.5


def test_delivery_time_is_prep_plus_travel_at_city_speed_plus_handoff() -> None:
    assert delivery_time_min(15, 0.0) == 20
    assert delivery_time_min(15, 2.0) == 15 + 10 + 5  # 2 mi at 12 mph = 10 min
    assert delivery_time_min(15, 2.01) == 15 + 11 + 5  # rounded up


def test_evaluate_applies_distance_zone_and_every_filter() -> None:
    doc = SearchDoc.of(restaurant("r1", 37.77, -122.42))
    q = Query(lat=37.78, lon=-122.41)
    hit = evaluate(doc, q, NOW)
    assert hit is not None
    assert hit.fee_minor == 299 and hit.minimum_minor == 1500 and hit.is_open
    assert hit.distance_miles == pytest.approx(
        haversine_m(37.78, -122.41, 37.77, -122.42) / 1609.344
    )
    assert evaluate(doc, Query(lat=37.95, lon=-122.41), NOW) is None  # outside the zone
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, cuisines=frozenset({"thai"})), NOW) is None
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, cuisines=frozenset({"thai", "pizza"})),
                    NOW) is not None  # fmt: skip
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, min_rating=4.6), NOW) is None
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, price_levels=frozenset({3})), NOW) is None
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, max_delivery_time_min=20), NOW) is None
    assert evaluate(doc, Query(lat=37.78, lon=-122.41, radius_miles=0.5), NOW) is None
    closed = SearchDoc.of(restaurant("r2", 37.77, -122.42, paused=True))
    assert evaluate(closed, Query(lat=37.78, lon=-122.41, open_now=True), NOW) is None
    assert evaluate(closed, Query(lat=37.78, lon=-122.41), NOW) is not None


def test_overlapping_zones_give_the_cheapest_fee() -> None:
    small = Polygon.of([(37.7, -122.5), (37.7, -122.3), (37.85, -122.3), (37.85, -122.5)])
    doc = SearchDoc.of(
        restaurant(
            "r1",
            37.77,
            -122.42,
            zones=(Zone("wide", SQUARE, 499, 0), Zone("near", small, 199, 2500)),
        )  # fmt: skip
    )
    hit = evaluate(doc, Query(lat=37.78, lon=-122.41), NOW)
    assert hit is not None and hit.fee_minor == 199 and hit.minimum_minor == 2500


def test_each_sort_orders_with_the_id_as_last_tie_break() -> None:
    rng = random.Random(7)
    docs = [
        SearchDoc.of(
            restaurant(
                f"r{i:02d}",
                37.77 + rng.uniform(-0.03, 0.03),
                -122.42 + rng.uniform(-0.03, 0.03),
                rating_sum=rng.randint(0, 10),
                review_count=2,
                order_count=rng.randint(0, 3),
                avg_prep_time_min=rng.choice([10, 20]),
            )
        )  # fmt: skip
        for i in range(40)
    ]
    for sort in (Sort.DISTANCE, Sort.RATING, Sort.DELIVERY_TIME, Sort.POPULARITY):
        hits = search_docs(docs, Query(lat=37.77, lon=-122.42, sort=sort), NOW)
        assert len(hits) == 40
        ids = [h.doc.restaurant_id for h in hits]
        assert len(set(ids)) == 40
        if sort == Sort.RATING:
            ratings = [h.doc.rating for h in hits]
            assert ratings == sorted(ratings, reverse=True)
        if sort == Sort.DELIVERY_TIME:
            times = [h.delivery_time_min for h in hits]
            assert times == sorted(times)
        if sort == Sort.POPULARITY:
            counts = [h.doc.order_count for h in hits]
            assert counts == sorted(counts, reverse=True)
        if sort == Sort.DISTANCE:
            miles = [h.distance_miles for h in hits]
            assert miles == sorted(miles)


@given(st.integers(1, 60), st.integers(1, 13), st.sampled_from([1, 2, 3, 4]))
@settings(deadline=None)  # the machine is shared: no timing in tests
def test_pages_cover_every_hit_once_in_order(n: int, size: int, sort: int) -> None:
    rng = random.Random(n * 31 + size)
    docs = [
        SearchDoc.of(
            restaurant(
                f"r{i:03d}",
                37.77 + rng.choice([0.0, 0.001, 0.002]),
                -122.42,
                rating_sum=rng.choice([4, 8]),
                review_count=2,
            )
        )  # fmt: skip
        for i in range(n)
    ]  # many ties: the id must break them
    q = Query(lat=37.77, lon=-122.42, sort=sort, page_size=size)
    hits = search_docs(docs, q, NOW)
    seen: list[str] = []
    token = ""
    for _ in range(n + 2):
        page = paginate(hits, q, token)
        assert page.total == n
        seen += [h.doc.restaurant_id for h in page.hits]
        token = page.next_token
        if not token:
            break
    assert seen == [h.doc.restaurant_id for h in hits]


def test_a_cursor_round_trips_and_is_bound_to_its_search() -> None:
    key = (1.25, -4.5, 3, "r_9")
    token = encode_cursor("abc", key)
    assert decode_cursor(token, "abc") == key
    with pytest.raises(BadCursor, match="different search"):
        decode_cursor(token, "xyz")
    for junk in ("!!!", "e30", encode_cursor("abc", [])):
        with pytest.raises(BadCursor):
            decode_cursor(junk, "abc")
    a = Query(lat=1.0, lon=2.0, sort=Sort.RATING)
    assert a.fingerprint() != Query(lat=1.0, lon=2.0, sort=Sort.DISTANCE).fingerprint()
    assert a.fingerprint() == Query(lat=1.0, lon=2.0, sort=Sort.RATING, page_size=5).fingerprint()
