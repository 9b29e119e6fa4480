"""Text search (``text.py``), completions (``suggest.py``) and popularity's decay, pure."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from servers.catalog import popularity
from servers.catalog.model import Address, Restaurant, Zone
from servers.catalog.search import Query, SearchDoc, Sort, search_docs
from servers.catalog.suggest import Kind, matched_dishes, suggest
from servers.catalog.text import TextQuery, Vocabulary, doc_terms, edit_distance, words
from servers.catalog.zones import Polygon

CENTER = (37.7749, -122.4194)
NOW = dt.datetime(2026, 3, 6, 19, 0, tzinfo=dt.UTC)


def doc(rid: str, name: str, cuisines: tuple[str, ...], dishes: tuple[str, ...], *,
        dlat: float = 0.0, rating_sum: int = 0, reviews: int = 0,
        pop: float = 0.0) -> SearchDoc:  # fmt: skip
    lat, lon = CENTER[0] + dlat, CENTER[1]
    ring = [(lat - 0.2, lon - 0.2), (lat - 0.2, lon + 0.2), (lat + 0.2, lon + 0.2),
            (lat + 0.2, lon - 0.2)]  # fmt: skip
    zone = Zone("z", Polygon.of(ring), 299, 0)
    return SearchDoc.of(Restaurant(
        restaurant_id=rid, name=name, cuisines=cuisines, address=Address(lat, lon),
        time_zone="UTC", hours=(), closures=(), price_level=2, currency="USD",
        minimum_order_minor=0, avg_prep_time_min=15, image_url="", paused=False,
        zones=(zone,), max_delivery_miles=25.0, owner_id="o", rating_sum=rating_sum,
        review_count=reviews, dishes=tuple((d, f"{d}, made to order") for d in dishes),
        popularity=pop,
    ))  # fmt: skip


DOCS = [
    doc(
        "r1", "Luigi's Pizza", ("italian", "pizza"), ("Margherita Pizza", "Caesar Salad"), dlat=0.02
    ),
    doc("r2", "Tokyo Ramen", ("japanese",), ("Tonkotsu Ramen", "Gyoza"), dlat=0.001),
    doc("r3", "Bella Napoli", ("italian",), ("Pepperoni Pizza",), dlat=0.01),
    doc("r4", "Pizza Planet", ("american",), ("Cheeseburger",), dlat=0.03),
]


def hits(text: str, *, sort: int = Sort.DISTANCE, prefix: bool = False) -> list[str]:
    q = Query(lat=CENTER[0], lon=CENTER[1], sort=sort, text=TextQuery.parse(text, prefix=prefix))
    return [h.doc.restaurant_id for h in search_docs(DOCS, q, NOW)]


def test_words_are_folded_and_split() -> None:
    assert words("Crème Brûlée & Luigi's PIZZA!") == ["creme", "brulee", "luigi", "s", "pizza"]


def test_edit_distance_counts_swaps_as_one_and_stops_past_the_limit() -> None:
    assert edit_distance("margarita", "margherita", 2) == 2
    assert edit_distance("pizaz", "pizza", 2) == 1  # a swap of neighbours
    assert edit_distance("teh", "the", 1) == 1
    assert edit_distance("ramen", "pizza", 1) == 2  # limit + 1


def test_a_misspelt_dish_finds_the_restaurants_that_serve_it() -> None:
    assert hits("margarita") == ["r1"]
    assert hits("margarita pizza") == ["r1"]
    assert hits("tonkatsu") == ["r2"]  # one edit
    assert hits("sushi") == []


def test_names_rank_above_dishes_then_the_sort_decides() -> None:
    # "pizza": r4 and r1 have it in the name (weight 3), r3 only in a dish (2).
    assert hits("pizza") == ["r1", "r4", "r3"]
    # Equal relevance: nearest first (r1 is nearer than r4).
    assert hits("italian") == ["r3", "r1"]


def test_a_word_being_typed_completes_by_prefix() -> None:
    assert set(hits("piz")) == {"r1", "r3", "r4"}  # three letters: a prefix in search too
    assert hits("gy", prefix=True) == ["r2"]  # "gyoza", being typed
    assert hits("gy") == []  # two letters in a search: a whole word only


def test_suggestions_are_dishes_and_cuisines_by_count_then_restaurants() -> None:
    q = Query(lat=CENTER[0], lon=CENTER[1], text=TextQuery.parse("piz", prefix=True))
    found = suggest(search_docs(DOCS, q, NOW), q.text, limit=8)  # type: ignore[arg-type]
    got = [(s.kind, s.text, s.restaurant_count) for s in found]
    assert got[0] == (Kind.CUISINE, "pizza", 1)
    assert (Kind.DISH, "Margherita Pizza", 1) in got and (Kind.DISH, "Pepperoni Pizza", 1) in got
    restaurants = [s.restaurant_id for s in found if s.kind == Kind.RESTAURANT]
    assert restaurants == ["r1", "r4"]
    assert len(suggest(search_docs(DOCS, q, NOW), q.text, limit=2)) == 2  # type: ignore[arg-type]


def test_matched_dishes_name_what_matched() -> None:
    assert matched_dishes(DOCS[0], TextQuery.parse("margarita")) == ["Margherita Pizza"]
    assert matched_dishes(DOCS[0], TextQuery.parse("salad")) == ["Caesar Salad"]


def test_documents_round_trip_with_dishes_and_read_old_ones_without() -> None:
    d = DOCS[0]
    back = SearchDoc.decode(d.encode())
    assert back == d and back.term_ids == d.term_ids and back.dishes == d.dishes
    old = json.loads(d.encode())[:20]  # written before dishes and popularity
    legacy = SearchDoc.decode(json.dumps(old).encode())
    assert legacy.dishes == () and legacy.popularity == 0.0 and legacy.name == d.name


def test_a_word_keeps_its_best_field_weight() -> None:
    v = Vocabulary()
    ids, weights = doc_terms("Pizza Place", ["pizza"], [("Pizza", "pizza")], v)
    assert dict(zip(ids, weights, strict=True))[v.intern("pizza")] == 3.0


def test_popularity_sorts_by_decayed_recent_orders() -> None:
    old = popularity.EPOCH + dt.timedelta(days=60)
    recent = old + dt.timedelta(days=28)
    p_many_old = 0.0
    for _ in range(10):
        p_many_old = popularity.add_order(p_many_old, old)
    p_few_new = popularity.add_order(popularity.add_order(0.0, recent), recent)
    now = recent + dt.timedelta(hours=1)
    # 10 orders four weeks ago are worth 10 * e^-4 ~ 0.18 now; 2 an hour ago ~ 2.
    assert popularity.decayed_count(p_many_old, now) == pytest.approx(10 * math.exp(-4.006), 1e-2)
    assert popularity.decayed_count(p_few_new, now) == pytest.approx(2.0, 1e-2)
    assert p_few_new > p_many_old
    assert popularity.decayed_count(0.0, now) == 0.0
    DOCS2 = [doc("a", "A", ("x",), (), pop=p_many_old), doc("b", "B", ("x",), (), pop=p_few_new)]
    q = Query(lat=CENTER[0], lon=CENTER[1], sort=Sort.POPULARITY)
    assert [h.doc.restaurant_id for h in search_docs(DOCS2, q, NOW)] == ["b", "a"]
