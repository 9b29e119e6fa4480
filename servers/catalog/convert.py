"""Requests to plain data and back: every check on input lives here, each naming its field.

Decoders collect every violation of a request (``foodmesh.core.errors.Violations``)
and raise one INVALID_ARGUMENT listing them all, with paths as the request spells
them (``restaurant.zones[0].polygon[2].lat``, ``categories[1].items[0].price``).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from google.protobuf.timestamp_pb2 import Timestamp

from foodmesh.core.errors import Violations
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import common_pb2
from servers.catalog import search
from servers.catalog.hours import Span, span_problem, zone
from servers.catalog.model import (
    Address,
    Category,
    Closure,
    CustomizationGroup,
    Item,
    Menu,
    Option,
    Restaurant,
    Review,
    Zone,
)
from servers.catalog.suggest import (
    DEFAULT_SUGGESTIONS,
    MAX_SUGGESTIONS,
    Suggestion,
    matched_dishes,
)
from servers.catalog.text import MAX_QUERY_CHARS, TextQuery
from servers.catalog.zones import Polygon, PolygonError, parse_geojson, polygon_problem
from servers.runtime.ids import check_id
from servers.runtime.limits import max_items

__all__ = [
    "DEFAULT_CURRENCY",
    "DEFAULT_MAX_DELIVERY_MILES",
    "DEFAULT_PREP_MIN",
    "REVIEW_AUTHOR",
    "check_id",
    "menu_from_pb",
    "menu_to_pb",
    "page_size",
    "query_from_pb",
    "restaurant_from_pb",
    "restaurant_to_pb",
    "review_from_pb",
    "review_to_pb",
    "summary_to_pb",
]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_CURRENCY = "USD"
#: A restaurant that does not say how long it cooks is taken to need this long.
DEFAULT_PREP_MIN = 20
#: The design's average delivery radius, for restaurants that do not give theirs.
DEFAULT_MAX_DELIVERY_MILES = 5.0
MAX_DELIVERY_MILES = 50.0
MAX_PREP_MIN = 240
_NAME_MAX = 200
_TEXT_MAX = 2000
_URL_MAX = 2048
# The contract's caps (``max_items``): the runtime refuses larger requests before we see them.
_MAX_ZONES = max_items(pb.Restaurant.DESCRIPTOR, "zones")
_MAX_HOURS = max_items(pb.Restaurant.DESCRIPTOR, "hours")
_MAX_CLOSURES = max_items(pb.Restaurant.DESCRIPTOR, "closures")
_MAX_CATEGORIES = max_items(pb.UpsertMenuRequest.DESCRIPTOR, "categories")
#: Items of a whole menu (each category alone may hold as many).
_MAX_ITEMS = max_items(pb.MenuCategory.DESCRIPTOR, "items")
_MAX_GROUPS = max_items(pb.MenuItem.DESCRIPTOR, "customizations")
_MAX_OPTIONS = max_items(pb.CustomizationGroup.DESCRIPTOR, "options")


def _text(v: Violations, value: str, path: str, *, required: bool, limit: int = _NAME_MAX) -> None:
    if required and not value.strip():
        v.add(path, "is required")
    elif len(value) > limit:
        v.add(path, f"must be at most {limit} characters")


def _url(v: Violations, value: str, path: str) -> None:
    if value:
        v.check(
            len(value) <= _URL_MAX
            and value.startswith(("https://", "http://"))
            and " " not in value,
            path,
            f"must be an http(s) URL of at most {_URL_MAX} characters",
        )


def _money(
    v: Violations, m: common_pb2.Money, path: str, currency: str, *, allow_negative: bool = False
) -> int:
    if m.currency_code and m.currency_code != currency:
        if _CURRENCY.match(m.currency_code):
            v.add(f"{path}.currency_code", f"must be the restaurant's currency {currency}")
        else:
            v.add(f"{path}.currency_code", "must be an ISO 4217 code such as USD")
    if not allow_negative and m.amount_minor < 0:
        v.add(f"{path}.amount_minor", "must not be negative")
    return m.amount_minor


def _lat_lon(v: Violations, lat: float, lon: float, path: str) -> bool:
    ok = v.check(math.isfinite(lat) and -90 <= lat <= 90, f"{path}.lat", "must be within [-90, 90]")
    return (
        v.check(
            math.isfinite(lon) and -180 <= lon <= 180, f"{path}.lon", "must be within [-180, 180]"
        )
        and ok
    )


def _restaurant_currency(r: pb.Restaurant) -> str:
    codes = [r.minimum_order.currency_code]
    for z in r.zones:
        codes += (z.delivery_fee.currency_code, z.minimum_order.currency_code)
    return next((c for c in codes if c), DEFAULT_CURRENCY)


def _zone(v: Violations, z: pb.DeliveryZone, path: str, currency: str) -> Zone | None:
    check_id(v, z.zone_id, f"{path}.zone_id")
    fee = _money(v, z.delivery_fee, f"{path}.delivery_fee", currency)
    minimum = _money(v, z.minimum_order, f"{path}.minimum_order", currency)
    vertices: list[tuple[float, float]] = []
    if z.polygon and z.geojson:
        v.add(f"{path}.geojson", "give either polygon or geojson, not both")
        return None
    if z.geojson:
        try:
            vertices = parse_geojson(z.geojson)
        except PolygonError as exc:
            v.add(f"{path}.geojson", str(exc))
            return None
        where = f"{path}.geojson"
    else:
        ok = True
        for i, p in enumerate(z.polygon):
            ok = _lat_lon(v, p.lat, p.lon, f"{path}.polygon[{i}]") and ok
        if not ok:
            return None
        vertices = [(p.lat, p.lon) for p in z.polygon]
        where = f"{path}.polygon"
    if len(vertices) < 3:
        v.add(where, "a zone needs at least three vertices")
        return None
    try:
        polygon = Polygon.of(vertices)
    except PolygonError as exc:
        v.add(where, str(exc))
        return None
    problem = polygon_problem(polygon)
    if problem:
        v.add(where, problem)
        return None
    return Zone(z.zone_id, polygon, fee, minimum)


def restaurant_from_pb(r: pb.Restaurant, *, present: bool = True) -> Restaurant:
    """A validated restaurant from an upsert (output-only fields are ignored)."""
    v = Violations()
    p = "restaurant"
    if not present:
        v.add(p, "is required")
        v.raise_if_any()
    check_id(v, r.restaurant_id, f"{p}.restaurant_id")
    _text(v, r.name, f"{p}.name", required=True)
    cuisines: list[str] = []
    for i, c in enumerate(r.cuisines):
        c = c.strip().lower()
        if v.check(bool(c) and len(c) <= 50, f"{p}.cuisines[{i}]", "must be 1-50 characters"):
            if c not in cuisines:
                cuisines.append(c)
    if not r.HasField("address"):
        v.add(f"{p}.address", "is required")
    else:
        _lat_lon(v, r.address.lat, r.address.lon, f"{p}.address")
        for name in ("street", "unit", "city", "state", "zip", "country", "instructions"):
            _text(v, getattr(r.address, name), f"{p}.address.{name}", required=False)
    if not r.time_zone:
        v.add(f"{p}.time_zone", "is required (an IANA name such as America/Los_Angeles)")
    else:
        try:
            zone(r.time_zone)
        except ValueError as exc:
            v.add(f"{p}.time_zone", str(exc))
    if len(r.hours) > _MAX_HOURS:
        v.add(f"{p}.hours", f"at most {_MAX_HOURS} spans")
    hours: list[Span] = []
    for i, h in enumerate(r.hours):
        span = Span(h.weekday, h.open_minute, h.close_minute)
        problem = span_problem(span)
        if problem:
            v.add(f"{p}.hours[{i}].{problem[0]}", problem[1])
        else:
            hours.append(span)
    if len(r.closures) > _MAX_CLOSURES:
        v.add(f"{p}.closures", f"at most {_MAX_CLOSURES} closures")
    closures: list[Closure] = []
    for i, cl in enumerate(r.closures):
        ok = bool(_DATE.match(cl.date))
        if ok:
            try:
                dt.date.fromisoformat(cl.date)
            except ValueError:
                ok = False
        if v.check(ok, f"{p}.closures[{i}].date", "must be a date YYYY-MM-DD"):
            closures.append(Closure(cl.date, cl.reason))
        _text(v, cl.reason, f"{p}.closures[{i}].reason", required=False)
    v.check(1 <= r.price_level <= 4, f"{p}.price_level", "must be 1 ($) to 4 ($$$$)")
    currency = _restaurant_currency(r)
    if not _CURRENCY.match(currency):
        v.add(f"{p}.minimum_order.currency_code", "must be an ISO 4217 code such as USD")
        currency = DEFAULT_CURRENCY
    minimum = _money(v, r.minimum_order, f"{p}.minimum_order", currency)
    prep = r.avg_prep_time_min or DEFAULT_PREP_MIN
    v.check(
        0 < prep <= MAX_PREP_MIN, f"{p}.avg_prep_time_min", f"must be 1 to {MAX_PREP_MIN} minutes"
    )
    _url(v, r.image_url, f"{p}.image_url")
    max_miles = r.max_delivery_distance_miles or DEFAULT_MAX_DELIVERY_MILES
    v.check(
        math.isfinite(max_miles) and 0 < max_miles <= MAX_DELIVERY_MILES,
        f"{p}.max_delivery_distance_miles",
        f"must be more than 0 and at most {MAX_DELIVERY_MILES:g} miles",
    )
    _text(v, r.owner_id, f"{p}.owner_id", required=False)
    if len(r.zones) > _MAX_ZONES:
        v.add(f"{p}.zones", f"at most {_MAX_ZONES} zones")
    zones: list[Zone] = []
    seen: set[str] = set()
    for i, z in enumerate(r.zones):
        if z.zone_id in seen:
            v.add(f"{p}.zones[{i}].zone_id", f"duplicate zone id {z.zone_id!r}")
        seen.add(z.zone_id)
        found = _zone(v, z, f"{p}.zones[{i}]", currency)
        if found is not None:
            zones.append(found)
    v.raise_if_any()
    a = r.address
    return Restaurant(
        restaurant_id=r.restaurant_id,
        name=r.name.strip(),
        cuisines=tuple(cuisines),
        address=Address(
            a.lat, a.lon, a.street, a.unit, a.city, a.state, a.zip, a.country, a.instructions
        ),  # fmt: skip
        time_zone=r.time_zone,
        hours=tuple(hours),
        closures=tuple(closures),
        price_level=r.price_level,
        currency=currency,
        minimum_order_minor=minimum,
        avg_prep_time_min=prep,
        image_url=r.image_url,
        paused=r.paused,
        zones=tuple(zones),
        max_delivery_miles=max_miles,
        owner_id=r.owner_id,
    )


def _ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _money_pb(amount: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency_code=currency)


def restaurant_to_pb(r: Restaurant, *, is_open: bool) -> pb.Restaurant:
    a = r.address
    out = pb.Restaurant(
        restaurant_id=r.restaurant_id,
        name=r.name,
        cuisines=list(r.cuisines),
        address=common_pb2.Address(
            street=a.street,
            unit=a.unit,
            city=a.city,
            state=a.state,
            zip=a.zip,
            country=a.country,
            lat=a.lat,
            lon=a.lon,
            instructions=a.instructions,
        ),  # fmt: skip
        time_zone=r.time_zone,
        hours=[
            pb.OpeningHours(
                weekday=s.weekday, open_minute=s.open_minute, close_minute=s.close_minute
            )
            for s in r.hours
        ],  # fmt: skip
        closures=[pb.Closure(date=c.date, reason=c.reason) for c in r.closures],
        price_level=r.price_level,
        minimum_order=_money_pb(r.minimum_order_minor, r.currency),
        rating=r.rating,
        review_count=r.review_count,
        food_rating=r.food_rating,
        food_rating_count=r.food_rating_count,
        avg_prep_time_min=r.avg_prep_time_min,
        image_url=r.image_url,
        is_open=is_open,
        paused=r.paused,
        zones=[
            pb.DeliveryZone(
                zone_id=z.zone_id,
                polygon=[common_pb2.LatLng(lat=la, lon=lo) for la, lo in z.polygon.vertices],
                delivery_fee=_money_pb(z.delivery_fee_minor, r.currency),
                minimum_order=_money_pb(z.minimum_order_minor, r.currency),
            )
            for z in r.zones
        ],
        max_delivery_distance_miles=r.max_delivery_miles,
        owner_id=r.owner_id,
        order_count=r.order_count,
    )
    ts = _ts(r.update_time)
    if ts is not None:
        out.update_time.CopyFrom(ts)
    return out


def menu_from_pb(req: pb.UpsertMenuRequest, currency: str) -> Menu:
    """A validated menu in the restaurant's ``currency``; paths as UpsertMenuRequest spells them."""
    v = Violations()
    if len(req.categories) > _MAX_CATEGORIES:
        v.add("categories", f"at most {_MAX_CATEGORIES} categories")
    n_items = sum(len(c.items) for c in req.categories)
    if n_items > _MAX_ITEMS:
        v.add("categories", f"at most {_MAX_ITEMS} items in all")
    v.raise_if_any()
    categories: list[Category] = []
    cat_ids: set[str] = set()
    item_ids: set[str] = set()
    for ci, c in enumerate(req.categories):
        cp = f"categories[{ci}]"
        if check_id(v, c.category_id, f"{cp}.category_id") and c.category_id in cat_ids:
            v.add(f"{cp}.category_id", f"duplicate category id {c.category_id!r}")
        cat_ids.add(c.category_id)
        _text(v, c.name, f"{cp}.name", required=True)
        items: list[Item] = []
        for ii, it in enumerate(c.items):
            ip = f"{cp}.items[{ii}]"
            if check_id(v, it.item_id, f"{ip}.item_id") and it.item_id in item_ids:
                v.add(f"{ip}.item_id", f"duplicate item id {it.item_id!r} (unique per restaurant)")
            item_ids.add(it.item_id)
            _text(v, it.name, f"{ip}.name", required=True)
            _text(v, it.description, f"{ip}.description", required=False, limit=_TEXT_MAX)
            _url(v, it.image_url, f"{ip}.image_url")
            if not it.HasField("price"):
                v.add(f"{ip}.price", "is required")
            price = _money(v, it.price, f"{ip}.price", currency)
            groups: list[CustomizationGroup] = []
            if len(it.customizations) > _MAX_GROUPS:
                v.add(f"{ip}.customizations", f"at most {_MAX_GROUPS} groups")
            group_ids: set[str] = set()
            option_ids: set[str] = set()
            for gi, g in enumerate(it.customizations):
                gp = f"{ip}.customizations[{gi}]"
                if check_id(v, g.group_id, f"{gp}.group_id") and g.group_id in group_ids:
                    v.add(f"{gp}.group_id", f"duplicate group id {g.group_id!r}")
                group_ids.add(g.group_id)
                _text(v, g.name, f"{gp}.name", required=True)
                if len(g.options) > _MAX_OPTIONS:
                    v.add(f"{gp}.options", f"at most {_MAX_OPTIONS} options")
                if not g.options:
                    v.add(f"{gp}.options", "a group needs at least one option")
                v.check(g.min_choices >= 0, f"{gp}.min_choices", "must not be negative")
                v.check(
                    1 <= g.max_choices <= len(g.options) and g.max_choices >= g.min_choices,
                    f"{gp}.max_choices",
                    "must be at least 1 and min_choices, and at most the number of options",
                )
                options: list[Option] = []
                for oi, o in enumerate(g.options):
                    op = f"{gp}.options[{oi}]"
                    if check_id(v, o.option_id, f"{op}.option_id") and o.option_id in option_ids:
                        v.add(f"{op}.option_id", f"duplicate option id {o.option_id!r} in the item")
                    option_ids.add(o.option_id)
                    _text(v, o.name, f"{op}.name", required=True)
                    delta = _money(
                        v, o.price_delta, f"{op}.price_delta", currency, allow_negative=True
                    )
                    v.check(
                        price + delta >= 0,
                        f"{op}.price_delta.amount_minor",
                        "may not take the item's price below zero",
                    )
                    options.append(Option(o.option_id, o.name, delta, o.available))
                groups.append(
                    CustomizationGroup(
                        g.group_id, g.name, g.min_choices, g.max_choices, tuple(options)
                    )
                )
            items.append(
                Item(
                    it.item_id,
                    it.name,
                    it.description,
                    price,
                    it.available,
                    it.image_url,
                    tuple(groups),
                )  # fmt: skip
            )
        categories.append(Category(c.category_id, c.name, tuple(items)))
    v.raise_if_any()
    return Menu(req.restaurant_id, currency, tuple(categories))


def menu_to_pb(m: Menu) -> pb.Menu:
    out = pb.Menu(
        restaurant_id=m.restaurant_id,
        categories=[
            pb.MenuCategory(
                category_id=c.category_id,
                name=c.name,
                items=[
                    pb.MenuItem(
                        item_id=i.item_id,
                        name=i.name,
                        description=i.description,
                        price=_money_pb(i.price_minor, m.currency),
                        available=i.available,
                        image_url=i.image_url,
                        customizations=[
                            pb.CustomizationGroup(
                                group_id=g.group_id,
                                name=g.name,
                                min_choices=g.min_choices,
                                max_choices=g.max_choices,
                                options=[
                                    pb.CustomizationOption(
                                        option_id=o.option_id,
                                        name=o.name,
                                        price_delta=_money_pb(o.price_delta_minor, m.currency),
                                        available=o.available,
                                    )
                                    for o in g.options
                                ],
                            )
                            for g in i.customizations
                        ],
                    )
                    for i in c.items
                ],
            )
            for c in m.categories
        ],
    )
    ts = _ts(m.update_time)
    if ts is not None:
        out.update_time.CopyFrom(ts)
    return out


def page_size(v: Violations, value: int, path: str = "page_size") -> int:
    """0 is the default; more than the maximum is clamped (AIP-158); negative is an error."""
    v.check(value >= 0, path, "must not be negative")
    if value <= 0:
        return search.DEFAULT_PAGE_SIZE
    return min(value, search.MAX_PAGE_SIZE)


def query_from_pb(req: pb.SearchRestaurantsRequest) -> search.Query:
    v = Violations()
    v.check(math.isfinite(req.lat) and -90 <= req.lat <= 90, "lat", "must be within [-90, 90]")
    v.check(math.isfinite(req.lon) and -180 <= req.lon <= 180, "lon", "must be within [-180, 180]")
    radius = req.radius or search.DEFAULT_RADIUS_MILES
    v.check(
        math.isfinite(radius) and 0 < radius <= search.MAX_RADIUS_MILES,
        "radius",
        f"must be more than 0 and at most {search.MAX_RADIUS_MILES:g} miles (0: default "
        f"{search.DEFAULT_RADIUS_MILES:g})",
    )
    cuisines: set[str] = set()
    for i, c in enumerate(req.cuisine):
        c = c.strip().lower()
        if v.check(bool(c) and len(c) <= 50, f"cuisine[{i}]", "must be 1-50 characters"):
            cuisines.add(c)
    v.check(
        math.isfinite(req.min_rating) and 0 <= req.min_rating <= 5,
        "min_rating",
        "must be within [0, 5]",
    )
    v.check(req.max_delivery_time_min >= 0, "max_delivery_time_min", "must not be negative")
    for i, lvl in enumerate(req.price_level):
        v.check(1 <= lvl <= 4, f"price_level[{i}]", "must be 1 to 4")
    sort = req.sort or search.Sort.DISTANCE
    v.check(1 <= sort <= 4, "sort", "is not a SearchSort value")
    size = page_size(v, req.page_size)
    v.check(len(req.q) <= MAX_QUERY_CHARS, "q", f"at most {MAX_QUERY_CHARS} characters")
    v.check(not (req.cursor and req.page_token and req.cursor != req.page_token), "cursor",
            "differs from page_token (give one of them)")  # fmt: skip
    v.raise_if_any()
    text = TextQuery.parse(req.q)
    return search.Query(
        lat=req.lat,
        lon=req.lon,
        radius_miles=radius,
        cuisines=frozenset(cuisines),
        min_rating=req.min_rating,
        max_delivery_time_min=req.max_delivery_time_min,
        price_levels=frozenset(req.price_level),
        open_now=req.open_now,
        sort=sort,
        page_size=size,
        text=text if text else None,
    )


def autocomplete_from_pb(req: pb.AutocompleteRestaurantsRequest) -> tuple[search.Query, int]:
    """The search behind a completion (the last word a beginning), and the most suggestions."""
    v = Violations()
    v.check(math.isfinite(req.lat) and -90 <= req.lat <= 90, "lat", "must be within [-90, 90]")
    v.check(math.isfinite(req.lon) and -180 <= req.lon <= 180, "lon", "must be within [-180, 180]")
    radius = req.radius or search.DEFAULT_RADIUS_MILES
    v.check(math.isfinite(radius) and 0 < radius <= search.MAX_RADIUS_MILES, "radius",
            f"must be more than 0 and at most {search.MAX_RADIUS_MILES:g} miles")  # fmt: skip
    v.check(0 < len(req.q) <= MAX_QUERY_CHARS, "q", f"must be 1-{MAX_QUERY_CHARS} characters")
    v.check(0 <= req.limit <= MAX_SUGGESTIONS, "limit", f"must be 0 to {MAX_SUGGESTIONS}")
    v.raise_if_any()
    text = TextQuery.parse(req.q, prefix=True)
    q = search.Query(lat=req.lat, lon=req.lon, radius_miles=radius,
                     text=text if text else None)  # fmt: skip
    return q, req.limit or DEFAULT_SUGGESTIONS


def suggestion_to_pb(s: Suggestion) -> pb.Suggestion:
    return pb.Suggestion(text=s.text, kind=pb.SuggestionKind.ValueType(s.kind),
                         restaurant_id=s.restaurant_id,
                         restaurant_count=s.restaurant_count)  # fmt: skip


def one_line(a: dict[str, str]) -> str:
    """ "123 Market St, San Francisco, CA 94103": street (and unit), city, state and zip."""
    street = " ".join(x for x in (a.get("street", ""), a.get("unit", "")) if x)
    region = " ".join(x for x in (a.get("state", ""), a.get("zip", "")) if x)
    return ", ".join(x for x in (street, a.get("city", ""), region) if x)


def summary_to_pb(h: search.Hit, text: TextQuery | None = None) -> pb.RestaurantSummary:
    d = h.doc
    a = d.address
    return pb.RestaurantSummary(
        restaurant_id=d.restaurant_id,
        name=d.name,
        cuisines=d.cuisines,
        cuisine=d.cuisines,
        matched_dishes=matched_dishes(d, text) if text else (),
        rating=d.rating,
        review_count=d.review_count,
        distance_miles=round(h.distance_miles, 2),
        delivery_time_min=h.delivery_time_min,
        delivery_fee=_money_pb(h.fee_minor, d.currency),
        minimum_order=_money_pb(h.minimum_minor, d.currency),
        is_open=h.is_open,
        image_url=d.image_url,
        location=common_pb2.Address(
            street=a.get("street", ""),
            unit=a.get("unit", ""),
            city=a.get("city", ""),
            state=a.get("state", ""),
            zip=a.get("zip", ""),
            country=a.get("country", ""),
            lat=d.lat,
            lon=d.lon,
            address=one_line(a),
        ),  # fmt: skip
        price_level=d.price_level,
    )


def review_from_pb(req: pb.AddReviewRequest, now: dt.datetime) -> Review:
    v = Violations()
    if not req.HasField("review"):
        v.add("review", "is required")
        v.raise_if_any()
    r = req.review
    check_id(v, r.order_id, "review.order_id")
    check_id(v, r.restaurant_id, "review.restaurant_id")
    check_id(v, r.customer_id, "review.customer_id")
    v.check(1 <= r.rating <= 5, "review.rating", "must be 1 to 5")
    v.check(0 <= r.food_rating <= 5, "review.food_rating", "must be 0 (not rated) to 5")
    _text(v, r.text, "review.text", required=False, limit=_TEXT_MAX)
    v.raise_if_any()
    created = r.create_time.ToDatetime(tzinfo=dt.UTC) if r.HasField("create_time") else now
    return Review(r.order_id, r.restaurant_id, r.customer_id, r.rating, r.text, created,
                  food_rating=r.food_rating)  # fmt: skip


#: How a reviewer is shown: the platform keeps no customer names to show instead.
REVIEW_AUTHOR = "Customer"


def review_to_pb(r: Review, *, with_ids: bool = True) -> pb.Review:
    """A review; without ``with_ids`` its customer and order are left out (public lists)."""
    out = pb.Review(
        order_id=r.order_id if with_ids else "",
        restaurant_id=r.restaurant_id,
        customer_id=r.customer_id if with_ids else "",
        rating=r.rating,
        text=r.text,
        author_name=REVIEW_AUTHOR,
        food_rating=r.food_rating,
    )
    out.create_time.FromDatetime(r.create_time)
    return out
