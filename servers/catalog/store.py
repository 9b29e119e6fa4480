"""The Catalog's PostgreSQL (schema ``catalog``): the only module here that runs SQL.

Every write is one transaction: a restaurant with its zones, a whole menu, a review
with the rating it moves. Ratings move incrementally (``rating_sum + r``,
``review_count + 1``), never by rescanning the reviews.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import Aborted
from foodmesh.core.geo import geohash_encode
from servers.catalog.hours import Span
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
from servers.catalog.popularity import WINDOW, add_order
from servers.catalog.zones import Polygon

__all__ = ["CatalogStore", "PlacedOrder", "ReviewOutcome"]

_COLUMNS = """
    r.restaurant_id, r.name, r.cuisines, r.address, r.lat, r.lon, r.time_zone, r.hours,
    r.closures, r.price_level, r.currency, r.minimum_order_minor, r.avg_prep_time_min,
    r.image_url, r.paused, r.max_delivery_miles, r.owner_id, r.rating_sum, r.review_count,
    r.order_count, r.version, r.updated_at,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(z.zone_id, z.vertices_e7,
                                                 z.delivery_fee_minor, z.minimum_order_minor)
                               ORDER BY z.position), '[]'::jsonb)
       FROM catalog.delivery_zones z WHERE z.restaurant_id = r.restaurant_id) AS zones,
    r.food_rating_sum, r.food_rating_count,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(i.name, i.description) ORDER BY i.position),
                     '[]'::jsonb)
       FROM catalog.menu_items i
      WHERE i.restaurant_id = r.restaurant_id AND i.available) AS dishes,
    r.popularity
"""


def _restaurant(row: Sequence[Any]) -> Restaurant:
    (rid, name, cuisines, address, lat, lon, tz, hours, closures, price, currency, minimum,
     prep, image, paused, max_miles, owner, rating_sum, reviews, orders, version, updated,
     zones, food_sum, food_count, dishes, popularity) = row  # fmt: skip
    return Restaurant(
        restaurant_id=rid,
        name=name,
        cuisines=tuple(cuisines),
        address=Address(lat=lat, lon=lon, **address),
        time_zone=tz,
        hours=tuple(Span(*h) for h in hours),
        closures=tuple(Closure(d, why) for d, why in closures),
        price_level=price,
        currency=currency,
        minimum_order_minor=minimum,
        avg_prep_time_min=prep,
        image_url=image,
        paused=paused,
        zones=tuple(Zone(z[0], Polygon.from_flat_e7(z[1]), z[2], z[3]) for z in zones),
        max_delivery_miles=max_miles,
        owner_id=owner,
        rating_sum=rating_sum,
        review_count=reviews,
        food_rating_sum=food_sum,
        food_rating_count=food_count,
        order_count=orders,
        version=version,
        update_time=updated,
        dishes=tuple((d[0], d[1]) for d in dishes),
        popularity=popularity,
    )


def _address_json(a: Address) -> dict[str, str]:
    return {
        "street": a.street,
        "unit": a.unit,
        "city": a.city,
        "state": a.state,
        "zip": a.zip,
        "country": a.country,
        "instructions": a.instructions,
    }


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order placed at a restaurant, as its ``placed`` event says."""

    event_id: str
    restaurant_id: str
    order_id: str
    at: dt.datetime


class ReviewOutcome(enum.Enum):
    ADDED = "added"
    #: The same review of the same order again (a retry): nothing changed.
    REPEATED = "repeated"
    #: A different review of an order that already has one.
    CONFLICT = "conflict"
    NO_RESTAURANT = "no_restaurant"


class CatalogStore:
    """Reads and writes of schema ``catalog`` through a pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def _get(
        self, conn: AsyncConnection[Any], rid: str, *, lock: bool = False
    ) -> Restaurant | None:
        sql = f"SELECT {_COLUMNS} FROM catalog.restaurants r WHERE r.restaurant_id = %s"
        cur = await conn.execute(sql + (" FOR UPDATE" if lock else ""), (rid,))
        row = await cur.fetchone()
        return None if row is None else _restaurant(row)

    async def get_restaurant(self, rid: str) -> Restaurant | None:
        async with self._pool.connection() as conn:
            return await self._get(conn, rid)

    async def upsert_restaurant(self, r: Restaurant) -> tuple[Restaurant, Restaurant | None]:
        """Creates or replaces ``r`` with its zones; returns it as stored and as it was before.

        Rating, review and order counts are the store's, never the caller's.
        """
        async with self._pool.connection() as conn, conn.transaction():
            before = await self._get(conn, r.restaurant_id, lock=True)
            a = r.address
            await conn.execute(
                """
                INSERT INTO catalog.restaurants AS t (
                    restaurant_id, name, cuisines, address, lat, lon, geohash, time_zone, hours,
                    closures, price_level, currency, minimum_order_minor, avg_prep_time_min,
                    image_url, paused, max_delivery_miles, owner_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (restaurant_id) DO UPDATE SET
                    name = EXCLUDED.name, cuisines = EXCLUDED.cuisines,
                    address = EXCLUDED.address, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                    geohash = EXCLUDED.geohash, time_zone = EXCLUDED.time_zone,
                    hours = EXCLUDED.hours, closures = EXCLUDED.closures,
                    price_level = EXCLUDED.price_level, currency = EXCLUDED.currency,
                    minimum_order_minor = EXCLUDED.minimum_order_minor,
                    avg_prep_time_min = EXCLUDED.avg_prep_time_min,
                    image_url = EXCLUDED.image_url, paused = EXCLUDED.paused,
                    max_delivery_miles = EXCLUDED.max_delivery_miles,
                    owner_id = EXCLUDED.owner_id,
                    version = t.version + 1, updated_at = now()
                """,
                (
                    r.restaurant_id, r.name, list(r.cuisines), Jsonb(_address_json(a)), a.lat,
                    a.lon, geohash_encode(a.lat, a.lon, 9), r.time_zone,
                    Jsonb([[s.weekday, s.open_minute, s.close_minute] for s in r.hours]),
                    Jsonb([[c.date, c.reason] for c in r.closures]), r.price_level, r.currency,
                    r.minimum_order_minor, r.avg_prep_time_min, r.image_url, r.paused,
                    r.max_delivery_miles, r.owner_id,
                ),
            )  # fmt: skip
            await conn.execute(
                "DELETE FROM catalog.delivery_zones WHERE restaurant_id = %s", (r.restaurant_id,)
            )
            if r.zones:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO catalog.delivery_zones (restaurant_id, zone_id, position,"
                        " vertices_e7, delivery_fee_minor, minimum_order_minor)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        [
                            (r.restaurant_id, z.zone_id, i, z.polygon.flat_e7(),
                             z.delivery_fee_minor, z.minimum_order_minor)
                            for i, z in enumerate(r.zones)
                        ],
                    )  # fmt: skip
            stored = await self._get(conn, r.restaurant_id)
            assert stored is not None
            return stored, before

    async def set_paused(self, rid: str, paused: bool) -> Restaurant | None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE catalog.restaurants SET paused = %s, version = version + 1,"
                " updated_at = now() WHERE restaurant_id = %s",
                (paused, rid),
            )
            if cur.rowcount == 0:
                return None
            return await self._get(conn, rid)

    async def all_restaurants(self, *, batch: int = 1000) -> AsyncIterator[list[Restaurant]]:
        """Every restaurant, in batches by id (for rebuilding the search index)."""
        after = ""
        while True:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    f"SELECT {_COLUMNS} FROM catalog.restaurants r WHERE r.restaurant_id > %s"
                    " ORDER BY r.restaurant_id LIMIT %s",
                    (after, batch),
                )
                rows = [_restaurant(row) for row in await cur.fetchall()]
            if not rows:
                return
            yield rows
            after = rows[-1].restaurant_id

    # --- menus -----------------------------------------------------------------------------

    async def _menu(self, conn: AsyncConnection[Any], rid: str) -> Menu | None:
        cur = await conn.execute(
            "SELECT currency, menu_updated_at FROM catalog.restaurants WHERE restaurant_id = %s",
            (rid,),
        )
        head = await cur.fetchone()
        if head is None:
            return None
        currency, updated = head
        cur = await conn.execute(
            "SELECT category_id, name FROM catalog.menu_categories WHERE restaurant_id = %s"
            " ORDER BY position",
            (rid,),
        )
        cats = await cur.fetchall()
        cur = await conn.execute(
            "SELECT category_id, item_id, name, description, price_minor, available, image_url,"
            " customizations FROM catalog.menu_items WHERE restaurant_id = %s ORDER BY position",
            (rid,),
        )
        items: dict[str, list[Item]] = {}
        for cid, iid, name, desc, price, available, image, custom in await cur.fetchall():
            groups = tuple(
                CustomizationGroup(
                    g["id"],
                    g["name"],
                    g["min"],
                    g["max"],
                    tuple(
                        Option(o["id"], o["name"], o["delta"], o["available"]) for o in g["options"]
                    ),
                )  # fmt: skip
                for g in custom
            )
            items.setdefault(cid, []).append(Item(iid, name, desc, price, available, image, groups))
        return Menu(
            rid,
            currency,
            tuple(Category(cid, name, tuple(items.get(cid, ()))) for cid, name in cats),
            updated,
        )

    async def get_menu(self, rid: str) -> Menu | None:
        """The menu (empty if never set), or None when the restaurant does not exist."""
        async with self._pool.connection() as conn:
            return await self._menu(conn, rid)

    async def currency_of(self, rid: str) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT currency FROM catalog.restaurants WHERE restaurant_id = %s", (rid,)
            )
            row = await cur.fetchone()
            return None if row is None else str(row[0])

    async def replace_menu(self, menu: Menu) -> tuple[Menu, Restaurant] | None:
        """Replaces the whole menu in one transaction; the menu and the restaurant as stored
        (its version moved: its search document changed), or None when it does not exist."""
        rid = menu.restaurant_id
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT currency FROM catalog.restaurants WHERE restaurant_id = %s FOR UPDATE",
                (rid,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            if row[0] != menu.currency:
                raise Aborted("the restaurant's currency changed meanwhile: retry", reason="RACE")
            await conn.execute(
                "UPDATE catalog.restaurants SET menu_updated_at = now(), version = version + 1"
                " WHERE restaurant_id = %s",
                (rid,),
            )
            await conn.execute(
                "DELETE FROM catalog.menu_categories WHERE restaurant_id = %s", (rid,)
            )
            async with conn.cursor() as c:
                if menu.categories:
                    await c.executemany(
                        "INSERT INTO catalog.menu_categories (restaurant_id, category_id,"
                        " position, name) VALUES (%s, %s, %s, %s)",
                        [
                            (rid, cat.category_id, i, cat.name)
                            for i, cat in enumerate(menu.categories)
                        ],
                    )
                rows = []
                pos = 0
                for cat in menu.categories:
                    for it in cat.items:
                        custom = [
                            {"id": g.group_id, "name": g.name, "min": g.min_choices,
                             "max": g.max_choices,
                             "options": [{"id": o.option_id, "name": o.name,
                                          "delta": o.price_delta_minor, "available": o.available}
                                         for o in g.options]}
                            for g in it.customizations
                        ]  # fmt: skip
                        rows.append(
                            (rid, it.item_id, cat.category_id, pos, it.name, it.description,
                             it.price_minor, it.available, it.image_url, Jsonb(custom))
                        )  # fmt: skip
                        pos += 1
                if rows:
                    await c.executemany(
                        "INSERT INTO catalog.menu_items (restaurant_id, item_id, category_id,"
                        " position, name, description, price_minor, available, image_url,"
                        " customizations) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        rows,
                    )
            stored = await self._menu(conn, rid)
            restaurant = await self._get(conn, rid)
            assert stored is not None and restaurant is not None
            return stored, restaurant

    # --- popularity ------------------------------------------------------------------------

    async def record_orders(self, orders: Sequence[PlacedOrder]) -> tuple[list[Restaurant], int]:
        """Counts each order once (by event id) into its restaurant's popularity and 30-day
        order count, in one transaction. Returns every restaurant the batch names as it now
        stands (also those whose events were counted before: a redelivery rewrites their
        search documents) and how many orders were new."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO catalog.order_events (event_id, restaurant_id, order_id, placed_at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
                " ON CONFLICT (event_id) DO NOTHING RETURNING restaurant_id, placed_at",
                ([o.event_id for o in orders], [o.restaurant_id for o in orders],
                 [o.order_id for o in orders], [o.at for o in orders]),
            )  # fmt: skip
            new: dict[str, list[dt.datetime]] = {}
            for rid, at in await cur.fetchall():
                new.setdefault(rid, []).append(at)
            for rid in sorted(new):  # one lock order for concurrent batches
                cur = await conn.execute(
                    "SELECT popularity FROM catalog.restaurants WHERE restaurant_id = %s"
                    " FOR UPDATE",
                    (rid,),
                )
                row = await cur.fetchone()
                if row is None:  # an order of a restaurant this catalog does not hold
                    continue
                popularity = float(row[0])
                for at in sorted(new[rid]):
                    popularity = add_order(popularity, at)
                await conn.execute(
                    "UPDATE catalog.restaurants SET popularity = %s, order_count = (SELECT"
                    " count(*) FROM catalog.order_events WHERE restaurant_id = %s AND"
                    " placed_at > now() - %s), version = version + 1 WHERE restaurant_id = %s",
                    (popularity, rid, WINDOW, rid),
                )
            out = []
            for rid in sorted({o.restaurant_id for o in orders}):
                r = await self._get(conn, rid)
                if r is not None:
                    out.append(r)
            return out, sum(len(v) for v in new.values())

    async def trim_order_events(self) -> list[Restaurant]:
        """Forgets order events older than the 30-day window and recounts the restaurants
        they were of; returns those restaurants as they now stand (to re-index)."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM catalog.order_events WHERE placed_at < now() - %s"
                " RETURNING restaurant_id",
                (WINDOW,),
            )
            out = []
            for rid in sorted({str(row[0]) for row in await cur.fetchall()}):
                await conn.execute(
                    "UPDATE catalog.restaurants SET order_count = (SELECT count(*) FROM"
                    " catalog.order_events WHERE restaurant_id = %s AND placed_at > now() - %s),"
                    " version = version + 1 WHERE restaurant_id = %s",
                    (rid, WINDOW, rid),
                )
                r = await self._get(conn, rid)
                if r is not None:
                    out.append(r)
            return out

    # --- reviews ---------------------------------------------------------------------------

    async def add_review(self, review: Review) -> tuple[ReviewOutcome, Restaurant | None]:
        """Records ``review`` once per order and moves the restaurant's rating by it.

        Returns the outcome and the restaurant as it now stands (None if it does not exist).
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO catalog.reviews (order_id, restaurant_id, customer_id, rating, text,"
                " create_time, food_rating) SELECT %s, %s, %s, %s, %s, %s, %s WHERE EXISTS"
                " (SELECT 1 FROM catalog.restaurants WHERE restaurant_id = %s)"
                " ON CONFLICT (order_id) DO NOTHING",
                (review.order_id, review.restaurant_id, review.customer_id, review.rating,
                 review.text, review.create_time, review.food_rating, review.restaurant_id),
            )  # fmt: skip
            if cur.rowcount == 1:
                # The food rating moves its own sum and count (0: the food was not rated).
                await conn.execute(
                    "UPDATE catalog.restaurants SET rating_sum = rating_sum + %s,"
                    " review_count = review_count + 1,"
                    " food_rating_sum = food_rating_sum + %s,"
                    " food_rating_count = food_rating_count + (%s > 0)::int,"
                    " version = version + 1 WHERE restaurant_id = %s",
                    (review.rating, review.food_rating, review.food_rating,
                     review.restaurant_id),
                )  # fmt: skip
                return ReviewOutcome.ADDED, await self._get(conn, review.restaurant_id)
            cur = await conn.execute(
                "SELECT restaurant_id, customer_id, rating, text, food_rating FROM catalog.reviews"
                " WHERE order_id = %s",
                (review.order_id,),
            )
            existing = await cur.fetchone()
            if existing is None:
                return ReviewOutcome.NO_RESTAURANT, None
            same = tuple(existing) == (
                review.restaurant_id, review.customer_id, review.rating, review.text,
                review.food_rating,
            )  # fmt: skip
            restaurant = await self._get(conn, str(existing[0]))
            return (ReviewOutcome.REPEATED if same else ReviewOutcome.CONFLICT), restaurant

    async def list_reviews(
        self, rid: str, *, after: tuple[dt.datetime, str] | None, limit: int
    ) -> list[Review] | None:
        """Up to ``limit`` reviews newest first, after the cursor; None for no such restaurant.

        The cursor is ``(create_time, md5(order_id))`` of the last review seen.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM catalog.restaurants WHERE restaurant_id = %s", (rid,)
            )
            if await cur.fetchone() is None:
                return None
            # Ties on create_time break by md5(order_id): the page cursor carries that
            # digest, never the order id (reviews are public, their orders are not).
            if after is None:
                cur = await conn.execute(
                    "SELECT order_id, restaurant_id, customer_id, rating, text, create_time,"
                    " food_rating"
                    " FROM catalog.reviews WHERE restaurant_id = %s"
                    " ORDER BY create_time DESC, md5(order_id) DESC LIMIT %s",
                    (rid, limit),
                )
            else:
                cur = await conn.execute(
                    "SELECT order_id, restaurant_id, customer_id, rating, text, create_time,"
                    " food_rating"
                    " FROM catalog.reviews WHERE restaurant_id = %s"
                    " AND (create_time, md5(order_id)) < (%s, %s)"
                    " ORDER BY create_time DESC, md5(order_id) DESC LIMIT %s",
                    (rid, after[0], after[1], limit),
                )
            return [Review(*row) for row in await cur.fetchall()]
