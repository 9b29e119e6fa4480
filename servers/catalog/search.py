"""Restaurant search: the search document, filters, the delivery-time heuristic, ranking and
the page cursor. Pure, no I/O. :func:`evaluate` and :func:`search_docs` are the reference,
one document at a time; ``table.py`` runs the same decisions vectorised over a region.

A search is exact: a restaurant is a hit when its great-circle distance from the
search point (:func:`foodmesh.core.geo.haversine_m`) is within the radius and
within its own maximum delivery distance, the point lies in one of its zones
(:mod:`servers.catalog.zones`, edges included), and it passes every filter.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from servers.catalog.hours import Span, is_open, local_now
from servers.catalog.model import Restaurant
from servers.catalog.text import TextQuery, doc_terms, relevance_step
from servers.catalog.zones import Polygon, to_e7

__all__ = [
    "ASSUMED_CITY_SPEED_MPH",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_RADIUS_MILES",
    "HANDOFF_MIN",
    "MAX_PAGE_SIZE",
    "MAX_RADIUS_MILES",
    "BadCursor",
    "Hit",
    "Page",
    "Query",
    "SearchDoc",
    "ZoneDoc",
    "Sort",
    "decode_cursor",
    "delivery_time_min",
    "encode_cursor",
    "evaluate",
    "paginate",
    "rank",
    "search_docs",
    "sort_key",
]

DEFAULT_RADIUS_MILES = 5.0
MAX_RADIUS_MILES = 25.0
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: Until the ETA service exists: a courier covers straight-line miles at this speed
#: (city streets, lights and detours folded in) ...
ASSUMED_CITY_SPEED_MPH = 12.0
#: ... plus this for pickup and hand-over at the door.
HANDOFF_MIN = 5


class Sort:
    """SearchSort values (the enum of catalog.proto), as plain ints."""

    DISTANCE = 1
    RATING = 2
    DELIVERY_TIME = 3
    POPULARITY = 4


def delivery_time_min(prep_min: int, distance_miles: float) -> int:
    """Order-to-door minutes: prep + travel at the assumed city speed + hand-over, rounded up."""
    travel = distance_miles / ASSUMED_CITY_SPEED_MPH * 60.0
    return prep_min + math.ceil(travel) + HANDOFF_MIN


@dataclass(frozen=True, slots=True)
class ZoneDoc:
    zone_id: str
    polygon: Polygon
    fee_minor: int
    minimum_minor: int


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """What search needs of one restaurant: kept in the Redis index as compact JSON."""

    restaurant_id: str
    name: str
    cuisines: tuple[str, ...]
    lat: float
    lon: float
    address: dict[str, str]
    time_zone: str
    hours: tuple[Span, ...]
    closures: frozenset[str]
    price_level: int
    currency: str
    minimum_minor: int
    rating: float
    review_count: int
    prep_min: int
    image_url: str
    paused: bool
    zones: tuple[ZoneDoc, ...]
    max_miles: float
    order_count: int
    #: Dishes on the menu that can be ordered: (name, description).
    dishes: tuple[tuple[str, str], ...] = ()
    #: Decayed recent orders (``popularity.py``), in log space: only the order matters.
    popularity: float = 0.0
    #: Derived, not stored: the words of name, cuisines and dishes (``text.doc_terms``).
    term_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)
    term_weights: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.term_ids:
            ids, weights = doc_terms(self.name, self.cuisines, self.dishes)
            object.__setattr__(self, "term_ids", ids)
            object.__setattr__(self, "term_weights", weights)

    @staticmethod
    def of(r: Restaurant) -> SearchDoc:
        a = r.address
        address = {
            k: v
            for k, v in (
                ("street", a.street),
                ("unit", a.unit),
                ("city", a.city),
                ("state", a.state),
                ("zip", a.zip),
                ("country", a.country),
            )
            if v
        }
        return SearchDoc(
            restaurant_id=r.restaurant_id,
            name=r.name,
            cuisines=r.cuisines,
            lat=a.lat,
            lon=a.lon,
            address=address,
            time_zone=r.time_zone,
            hours=r.hours,
            closures=frozenset(c.date for c in r.closures),
            price_level=r.price_level,
            currency=r.currency,
            minimum_minor=r.minimum_order_minor,
            rating=r.rating,
            review_count=r.review_count,
            prep_min=r.avg_prep_time_min,
            image_url=r.image_url,
            paused=r.paused,
            zones=tuple(
                ZoneDoc(z.zone_id, z.polygon, z.delivery_fee_minor, z.minimum_order_minor)
                for z in r.zones
            ),
            max_miles=r.max_delivery_miles,
            order_count=r.order_count,
            dishes=r.dishes,
            popularity=r.popularity,
        )

    def encode(self) -> bytes:
        return json.dumps(
            [
                self.restaurant_id,
                self.name,
                self.cuisines,
                self.lat,
                self.lon,
                self.address,
                self.time_zone,
                [[s.weekday, s.open_minute, s.close_minute] for s in self.hours],
                sorted(self.closures),
                self.price_level,
                self.currency,
                self.minimum_minor,
                self.rating,
                self.review_count,
                self.prep_min,
                self.image_url,
                self.paused,
                [
                    [z.zone_id, z.fee_minor, z.minimum_minor, z.polygon.flat_e7()]
                    for z in self.zones
                ],
                self.max_miles,
                self.order_count,
                [list(d) for d in self.dishes],
                self.popularity,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    @staticmethod
    def decode(raw: bytes) -> SearchDoc:
        fields = json.loads(raw)
        (rid, name, cuisines, lat, lon, address, tz, hours, closures, price, cur, minimum,
         rating, reviews, prep, image, paused, zones, max_miles, orders) = fields[:20]  # fmt: skip
        # Documents written before dishes and popularity were indexed have 20 fields.
        dishes = tuple((d[0], d[1]) for d in fields[20]) if len(fields) > 20 else ()
        popularity = float(fields[21]) if len(fields) > 21 else 0.0
        return SearchDoc(
            restaurant_id=rid,
            name=name,
            cuisines=tuple(cuisines),
            lat=lat,
            lon=lon,
            address=address,
            time_zone=tz,
            hours=_shared_hours(hours),
            closures=frozenset(closures) if closures else _NO_CLOSURES,
            price_level=price,
            currency=cur,
            minimum_minor=minimum,
            rating=rating,
            review_count=reviews,
            prep_min=prep,
            image_url=image,
            paused=paused,
            zones=tuple(ZoneDoc(z[0], Polygon.from_flat_e7(z[3]), z[1], z[2]) for z in zones),
            max_miles=max_miles,
            order_count=orders,
            dishes=dishes,
            popularity=popularity,
        )


_NO_CLOSURES: frozenset[str] = frozenset()
_HOURS: dict[tuple[tuple[int, int, int], ...], tuple[Span, ...]] = {}
_HOURS_MAX = 10_000


def _shared_hours(spans: list[list[int]]) -> tuple[Span, ...]:
    """One object for equal opening hours: most restaurants share a few weekly timetables,
    and every object a replica's copy of the index holds is one more for the collector."""
    key = tuple((s[0], s[1], s[2]) for s in spans)
    hours = _HOURS.get(key)
    if hours is None:
        if len(_HOURS) >= _HOURS_MAX:
            _HOURS.clear()
        hours = _HOURS[key] = tuple(Span(*s) for s in key)
    return hours


@dataclass(frozen=True, slots=True)
class Query:
    """A validated search; ``radius_miles`` and ``page_size`` already defaulted and clamped."""

    lat: float
    lon: float
    radius_miles: float = DEFAULT_RADIUS_MILES
    cuisines: frozenset[str] = frozenset()
    min_rating: float = 0.0
    max_delivery_time_min: int = 0
    price_levels: frozenset[int] = frozenset()
    open_now: bool = False
    sort: int = Sort.DISTANCE
    page_size: int = DEFAULT_PAGE_SIZE
    #: Words to find in names, cuisines and dishes (``text.py``); empty: no text filter.
    text: TextQuery | None = None

    def fingerprint(self) -> str:
        """Identifies the result list (not the page): a cursor is only valid for the same."""
        text = json.dumps(
            [
                self.lat,
                self.lon,
                self.radius_miles,
                sorted(self.cuisines),
                self.min_rating,
                self.max_delivery_time_min,
                sorted(self.price_levels),
                self.open_now,
                self.sort,
                list(self.text.terms) if self.text else [],
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def prefilter(self, doc: SearchDoc) -> bool:
        """The filters that do not depend on the exact point or the time (cacheable)."""
        if self.cuisines and self.cuisines.isdisjoint(doc.cuisines):
            return False
        if self.price_levels and doc.price_level not in self.price_levels:
            return False
        return not (self.min_rating and doc.rating < self.min_rating)


@dataclass(frozen=True, slots=True)
class Hit:
    doc: SearchDoc
    distance_miles: float
    delivery_time_min: int
    fee_minor: int
    minimum_minor: int
    is_open: bool
    key: tuple[float | int | str, ...]


def sort_key(
    sort: int, doc: SearchDoc, miles: float, minutes: int, relevance: float | None = None
) -> tuple[float | int | str, ...]:
    """The rank of a hit; with a text query, its relevance step comes first."""
    # Every key ends in the restaurant id: a total, stable order for the cursor.
    if sort == Sort.RATING:
        key: tuple[float | int | str, ...] = (-doc.rating, -doc.review_count, miles,
                                              doc.restaurant_id)  # fmt: skip
    elif sort == Sort.DELIVERY_TIME:
        key = (minutes, miles, doc.restaurant_id)
    elif sort == Sort.POPULARITY:
        key = (-doc.popularity, -doc.order_count, -doc.review_count, miles, doc.restaurant_id)
    else:
        key = (miles, doc.restaurant_id)
    return key if relevance is None else (-relevance, *key)


def evaluate(
    doc: SearchDoc,
    q: Query,
    now: dt.datetime,
    *,
    local: dict[str, tuple[dt.date, int]] | None = None,
    point_e7: tuple[int, int] | None = None,
) -> Hit | None:
    """The hit ``doc`` makes for ``q`` at instant ``now``, or None if it is filtered out.

    ``local`` caches each time zone's local date and minute across one search.
    """
    if not q.prefilter(doc):
        return None
    relevance = None
    if q.text:
        score = q.text.score(doc.term_ids, doc.term_weights)
        if score <= 0.0:
            return None
        relevance = relevance_step(score)
    miles = haversine_m(q.lat, q.lon, doc.lat, doc.lon) / METERS_PER_MILE
    if miles > q.radius_miles or miles > doc.max_miles:
        return None
    y, x = point_e7 if point_e7 is not None else (to_e7(q.lat), to_e7(q.lon))
    zone: ZoneDoc | None = None
    for z in doc.zones:
        # Overlapping zones: the customer gets the cheapest fee (first listed on a tie).
        if (zone is None or z.fee_minor < zone.fee_minor) and z.polygon.contains_e7(y, x):
            zone = z
    if zone is None:
        return None
    minutes = delivery_time_min(doc.prep_min, miles)
    if q.max_delivery_time_min and minutes > q.max_delivery_time_min:
        return None
    if local is not None:
        here = local.get(doc.time_zone)
        if here is None:
            here = local[doc.time_zone] = local_now(now, doc.time_zone)
    else:
        here = None
    open_ = is_open(now, doc.time_zone, doc.hours, doc.closures, paused=doc.paused, local=here)
    if q.open_now and not open_:
        return None
    return Hit(
        doc=doc,
        distance_miles=miles,
        delivery_time_min=minutes,
        fee_minor=zone.fee_minor,
        minimum_minor=max(doc.minimum_minor, zone.minimum_minor),
        is_open=open_,
        key=sort_key(q.sort, doc, miles, minutes, relevance),
    )


def search_docs(docs: Iterable[SearchDoc], q: Query, now: dt.datetime) -> list[Hit]:
    """Every hit among ``docs`` (duplicates by id ignored), in the query's order."""
    local: dict[str, tuple[dt.date, int]] = {}
    point = (to_e7(q.lat), to_e7(q.lon))
    seen: set[str] = set()
    hits: list[Hit] = []
    for doc in docs:
        if doc.restaurant_id in seen:
            continue
        seen.add(doc.restaurant_id)
        hit = evaluate(doc, q, now, local=local, point_e7=point)
        if hit is not None:
            hits.append(hit)
    return rank(hits)


def rank(hits: list[Hit]) -> list[Hit]:
    hits.sort(key=lambda h: h.key)
    return hits


class BadCursor(ValueError):
    """A page token that is malformed or was issued for another search."""


def encode_cursor(fingerprint: str, key: Sequence[float | int | str]) -> str:
    """An opaque token: the search it belongs to and the sort key of the last hit served."""
    raw = json.dumps([fingerprint, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, fingerprint: str) -> tuple[float | int | str, ...]:
    """The key after which the next page starts; BadCursor if not this search's token."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fp, key = json.loads(raw)
    except (ValueError, TypeError):
        raise BadCursor("malformed page token") from None
    if fp != fingerprint:
        raise BadCursor("page token belongs to a different search (filters changed)")
    if not isinstance(key, list) or not key or not isinstance(key[-1], str):
        raise BadCursor("malformed page token")
    if not all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in key):
        raise BadCursor("malformed page token")
    return tuple(key)


@dataclass(frozen=True, slots=True)
class Page:
    hits: list[Hit]
    next_token: str
    total: int


def paginate(hits: Sequence[Hit], q: Query, token: str) -> Page:
    """The page after ``token`` (keyset: stable while the data is, no offsets to drift).

    ``hits`` in the query's order; only the page and the ~log2(n) probes are read.
    """
    fp = q.fingerprint()
    start = 0
    if token:
        after = decode_cursor(token, fp)
        try:
            start = bisect.bisect_right(hits, after, key=lambda h: h.key)
        except TypeError:  # a key of another sort's shape
            raise BadCursor("malformed page token") from None
    page = list(hits[start : start + q.page_size])
    more = start + q.page_size < len(hits)
    return Page(page, encode_cursor(fp, page[-1].key) if more and page else "", len(hits))
