"""CatalogServicer: decode the request, call the store, the index and the domain, encode. Thin."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
from typing import Any

import grpc

from foodmesh.core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import catalog_pb2_grpc as pb_grpc
from foodmesh.v1 import common_pb2
from servers.catalog import convert
from servers.catalog.cells import CellCache
from servers.catalog.hours import is_open
from servers.catalog.index import SearchIndex
from servers.catalog.model import Restaurant
from servers.catalog.search import BadCursor, Query, paginate
from servers.catalog.store import CatalogStore, ReviewOutcome
from servers.catalog.suggest import suggest
from servers.catalog.table import Ranked, search_table
from servers.catalog.zones import to_e7
from servers.runtime.auth import current_principal
from servers.runtime.context import time_left

__all__ = ["CatalogServicer"]

_log = logging.getLogger("foodmesh.catalog")
Ctx = grpc.aio.ServicerContext[Any, Any]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _require_id(value: str, path: str) -> None:
    v = Violations()
    convert.check_id(v, value, path)
    v.raise_if_any()


def _may_edit(restaurant_id: str) -> None:
    """Owners (a restaurant token for this id), ops and internal services may write."""
    p = current_principal()
    if p is None:
        raise PermissionDenied("writing a restaurant needs a bearer token", reason="NO_TOKEN")
    if p.role in ("ops", "service") or p.is_("restaurant", restaurant_id):
        return
    raise PermissionDenied(
        f"only restaurant {restaurant_id!r} itself or ops may change it", reason="NOT_OWNER"
    )


def _open_now(r: Restaurant) -> bool:
    return is_open(_now(), r.time_zone, r.hours, [c.date for c in r.closures], paused=r.paused)


def _not_found(rid: str) -> NotFound:
    return NotFound(f"no restaurant {rid!r}", reason="RESTAURANT_NOT_FOUND")


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(
        self, store: CatalogStore, index: SearchIndex, cells: CellCache | None = None
    ) -> None:
        self.store = store
        self.index = index
        self.cells = cells if cells is not None else CellCache()

    async def reindex(self, r: Restaurant) -> None:
        """Writes ``r``'s search document (after an order moved its popularity)."""
        await self._index(r)

    async def _index(self, r: Restaurant, before: Restaurant | None = None) -> None:
        try:
            await self.index.put(r, before=before)
        except Exception as exc:
            # Committed in PostgreSQL but not in the index: have it rebuilt, and tell the
            # caller to retry (every write here is idempotent), which rewrites the index.
            _log.warning("search index write for %s failed: %s", r.restaurant_id, exc)
            try:
                await self.index.mark_unbuilt()
            except Exception:  # Redis is down: the rebuild check at start notices
                pass
            raise Unavailable("saved, but the search index did not take it: retry") from None

    async def _search(self, q: Query) -> Ranked:
        if not self.index.ready.is_set():
            try:
                await asyncio.wait_for(self.index.ready.wait(), timeout=time_left())
            except TimeoutError:
                raise Unavailable("the search index is being built: retry shortly") from None
        table, parts = await self.index.view(q)
        rows, zones = self.cells.rows(table, q, parts)
        return search_table(table, q, _now(), parts=parts, rows=rows, zones=zones)

    async def SearchRestaurants(  # noqa: N802
        self, request: pb.SearchRestaurantsRequest, context: Ctx
    ) -> pb.SearchRestaurantsResponse:
        q = convert.query_from_pb(request)
        hits = await self._search(q)
        token = request.page_token or request.cursor
        try:
            page = paginate(hits, q, token)
        except BadCursor as exc:
            field = "page_token" if request.page_token else "cursor"
            raise InvalidArgument.field(field, str(exc)) from None
        return pb.SearchRestaurantsResponse(
            restaurants=[convert.summary_to_pb(h, q.text) for h in page.hits],
            next_page_token=page.next_token,
            total_count=page.total,
            total=page.total,
            cursor=page.next_token,
        )

    async def AutocompleteRestaurants(  # noqa: N802
        self, request: pb.AutocompleteRestaurantsRequest, context: Ctx
    ) -> pb.AutocompleteRestaurantsResponse:
        q, limit = convert.autocomplete_from_pb(request)
        if q.text is None:  # nothing but separators typed
            return pb.AutocompleteRestaurantsResponse()
        hits = await self._search(q)
        return pb.AutocompleteRestaurantsResponse(
            suggestions=[convert.suggestion_to_pb(s) for s in suggest(hits, q.text, limit=limit)]
        )

    async def GetRestaurant(  # noqa: N802
        self, request: pb.GetRestaurantRequest, context: Ctx
    ) -> pb.GetRestaurantResponse:
        _require_id(request.restaurant_id, "restaurant_id")
        r = await self.store.get_restaurant(request.restaurant_id)
        if r is None:
            raise _not_found(request.restaurant_id)
        return pb.GetRestaurantResponse(
            restaurant=convert.restaurant_to_pb(r, is_open=_open_now(r))
        )

    async def GetMenu(self, request: pb.GetMenuRequest, context: Ctx) -> pb.GetMenuResponse:  # noqa: N802
        _require_id(request.restaurant_id, "restaurant_id")
        menu = await self.store.get_menu(request.restaurant_id)
        if menu is None:
            raise _not_found(request.restaurant_id)
        return pb.GetMenuResponse(menu=convert.menu_to_pb(menu))

    async def UpsertRestaurant(  # noqa: N802
        self, request: pb.UpsertRestaurantRequest, context: Ctx
    ) -> pb.UpsertRestaurantResponse:
        r = convert.restaurant_from_pb(request.restaurant, present=request.HasField("restaurant"))
        _may_edit(r.restaurant_id)
        stored, before = await self.store.upsert_restaurant(r)
        await self._index(stored, before)
        return pb.UpsertRestaurantResponse(
            restaurant=convert.restaurant_to_pb(stored, is_open=_open_now(stored))
        )

    async def UpsertMenu(  # noqa: N802
        self, request: pb.UpsertMenuRequest, context: Ctx
    ) -> pb.UpsertMenuResponse:
        _require_id(request.restaurant_id, "restaurant_id")
        _may_edit(request.restaurant_id)
        currency = await self.store.currency_of(request.restaurant_id)
        if currency is None:
            raise _not_found(request.restaurant_id)
        menu = convert.menu_from_pb(request, currency)
        replaced = await self.store.replace_menu(menu)
        if replaced is None:
            raise _not_found(request.restaurant_id)
        stored, restaurant = replaced
        # Its dishes are in its search document: every replica's next search sees them.
        await self._index(restaurant)
        return pb.UpsertMenuResponse(menu=convert.menu_to_pb(stored))

    async def SetRestaurantPaused(  # noqa: N802
        self, request: pb.SetRestaurantPausedRequest, context: Ctx
    ) -> pb.SetRestaurantPausedResponse:
        _require_id(request.restaurant_id, "restaurant_id")
        _may_edit(request.restaurant_id)
        r = await self.store.set_paused(request.restaurant_id, request.paused)
        if r is None:
            raise _not_found(request.restaurant_id)
        await self._index(r)
        return pb.SetRestaurantPausedResponse(
            restaurant=convert.restaurant_to_pb(r, is_open=_open_now(r))
        )

    async def CheckDelivery(  # noqa: N802
        self, request: pb.CheckDeliveryRequest, context: Ctx
    ) -> pb.CheckDeliveryResponse:
        v = Violations()
        convert.check_id(v, request.restaurant_id, "restaurant_id")
        if not request.HasField("location"):
            v.add("location", "is required")
        else:
            lat, lon = request.location.lat, request.location.lon
            v.check(-90 <= lat <= 90, "location.lat", "must be within [-90, 90]")
            v.check(-180 <= lon <= 180, "location.lon", "must be within [-180, 180]")
        v.raise_if_any()
        r = await self.store.get_restaurant(request.restaurant_id)
        if r is None:
            raise _not_found(request.restaurant_id)
        lat, lon = request.location.lat, request.location.lon
        miles = haversine_m(r.address.lat, r.address.lon, lat, lon) / METERS_PER_MILE
        out = pb.CheckDeliveryResponse(distance_miles=round(miles, 3))
        if miles > r.max_delivery_miles:
            out.reason = (
                f"{miles:.2f} miles away: beyond the restaurant's "
                f"{r.max_delivery_miles:g} mile maximum"
            )
            return out
        y, x = to_e7(lat), to_e7(lon)
        inside = [z for z in r.zones if z.polygon.contains_e7(y, x)]
        if not inside:
            out.reason = "outside every delivery zone of the restaurant"
            return out
        zone = min(inside, key=lambda z: z.delivery_fee_minor)  # first listed on a tie
        out.deliverable = True
        out.zone_id = zone.zone_id
        out.delivery_fee.CopyFrom(common_pb2.Money(amount_minor=zone.delivery_fee_minor,
                                                   currency_code=r.currency))  # fmt: skip
        out.minimum_order.CopyFrom(
            common_pb2.Money(
                amount_minor=max(zone.minimum_order_minor, r.minimum_order_minor),
                currency_code=r.currency,
            )
        )
        return out

    async def AddReview(self, request: pb.AddReviewRequest, context: Ctx) -> pb.AddReviewResponse:  # noqa: N802
        review = convert.review_from_pb(request, _now())
        outcome, r = await self.store.add_review(review)
        if outcome is ReviewOutcome.NO_RESTAURANT or r is None:
            raise _not_found(review.restaurant_id)
        if outcome is ReviewOutcome.CONFLICT:
            raise AlreadyExists(
                f"order {review.order_id!r} already has a different review",
                reason="REVIEW_EXISTS",
            )
        if outcome is ReviewOutcome.ADDED:
            await self._index(r)
        return pb.AddReviewResponse(rating=r.rating, review_count=r.review_count,
                                    food_rating=r.food_rating,
                                    food_rating_count=r.food_rating_count)  # fmt: skip

    async def ListReviews(  # noqa: N802
        self, request: pb.ListReviewsRequest, context: Ctx
    ) -> pb.ListReviewsResponse:
        v = Violations()
        convert.check_id(v, request.restaurant_id, "restaurant_id")
        size = convert.page_size(v, request.page_size)
        after: tuple[dt.datetime, str] | None = None
        if request.page_token:
            after = _review_cursor(request.page_token, request.restaurant_id)
            v.check(after is not None, "page_token", "malformed or for another restaurant")
        v.raise_if_any()
        reviews = await self.store.list_reviews(request.restaurant_id, after=after, limit=size + 1)
        if reviews is None:
            raise _not_found(request.restaurant_id)
        page, more = reviews[:size], len(reviews) > size
        token = ""
        if more:
            last = page[-1]
            digest = hashlib.md5(last.order_id.encode(), usedforsecurity=False).hexdigest()
            raw = json.dumps([request.restaurant_id, last.create_time.isoformat(), digest])
            token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        # Who wrote a review and about which order is for ops and services only: anyone
        # else sees a display name (the platform keeps no customer names).
        p = current_principal()
        ids = p is not None and p.role in ("ops", "service")
        return pb.ListReviewsResponse(
            reviews=[convert.review_to_pb(r, with_ids=ids) for r in page], next_page_token=token
        )


def _review_cursor(token: str, restaurant_id: str) -> tuple[dt.datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        rid, when, order_id = json.loads(raw)
        if rid != restaurant_id or not isinstance(order_id, str):
            return None
        return dt.datetime.fromisoformat(when), order_id
    except (ValueError, TypeError):
        return None
