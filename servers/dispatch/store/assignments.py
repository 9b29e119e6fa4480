"""Assignments: an order from its arrival in the pool to the door (or its cancellation)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import FailedPrecondition
from servers.dispatch.model import Assignment, OfferRow
from servers.dispatch.offers import HELD, POOL, Action, AssignmentStatus, step
from servers.dispatch.store._sql import (
    ASSIGNMENT,
    ASSIGNMENTS,
    OFFER,
    OFFERS,
    ROWS,
    SCHEMA,
    Announce,
    all_,
    call_order,
    emit,
    one,
    ts,
)
from servers.dispatch.store.stats import count_delivery
from servers.runtime.outbox import first_delivery

__all__ = ["AssignmentStore", "NewOrder"]

S = AssignmentStatus


@dataclasses.dataclass(frozen=True, slots=True)
class NewOrder:
    """An order to match, from its ``orders.v1.confirmed`` event (or MatchOrder)."""

    order_id: str
    region: str
    pickup_lat: float
    pickup_lon: float
    pickup_label: str
    dropoff_lat: float
    dropoff_lon: float
    dropoff_label: str
    ready_at: float
    tip_minor: int = 0
    currency: str = "USD"


class AssignmentStore:
    """``fleet.assignments``: the pool of orders to match and the deliveries on the road."""

    def __init__(self, pool: AsyncConnectionPool, announce: Announce) -> None:
        self.pool = pool
        self.announce = announce

    # -- orders in and out -----------------------------------------------------------

    async def add_order(
        self, order: NewOrder, *, now: float, consumer: str = "", event_id: str = ""
    ) -> Assignment | None:
        """Puts a confirmed order in its region's pool, once (None if seen before)."""
        async with self.pool.connection() as conn, conn.transaction():
            if event_id and not await first_delivery(conn, SCHEMA, consumer, event_id):
                return None
            return await one(
                conn,
                ASSIGNMENTS,
                "INSERT INTO fleet.assignments (order_id, region, status, pickup_lat, pickup_lon,"
                " pickup_label, dropoff_lat, dropoff_lon, dropoff_label, ready_at, tip_minor,"
                " currency, created_at, updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING"
                f" RETURNING {ASSIGNMENT}",
                (
                    order.order_id,
                    order.region,
                    order.pickup_lat,
                    order.pickup_lon,
                    order.pickup_label,
                    order.dropoff_lat,
                    order.dropoff_lon,
                    order.dropoff_label,
                    ts(order.ready_at),
                    order.tip_minor,
                    order.currency,
                    ts(now),
                    ts(now),
                ),
            )

    async def cancel_order(
        self, order_id: str, *, now: float, reason: str, consumer: str = "", event_id: str = ""
    ) -> tuple[Assignment | None, OfferRow | None]:
        """The order was cancelled: the assignment ends, an open offer is withdrawn.

        Returns the assignment before (to tell its driver) and the withdrawn offer.
        """
        async with self.pool.connection() as conn, conn.transaction():
            if event_id and not await first_delivery(conn, SCHEMA, consumer, event_id):
                return None, None
            before = await one(
                conn,
                ASSIGNMENTS,
                f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE order_id = %s FOR UPDATE",
                (order_id,),
            )
            if before is None or before.status in (S.DELIVERED, S.CANCELLED):
                return None, None
            o = await one(
                conn,
                OFFERS,
                "UPDATE fleet.offers SET status = 'withdrawn', reason = 'order cancelled',"
                " answered_at = %s WHERE order_id = %s AND status = 'open'"
                f" RETURNING {OFFER}",
                (ts(now), order_id),
            )
            await conn.execute(
                "UPDATE fleet.assignments SET status = 'cancelled', updated_at = %s"
                " WHERE order_id = %s",
                (ts(now), order_id),
            )
            busy = o.driver_id if o else (before.driver_id if before.status in HELD else "")
            if busy:
                await conn.execute(
                    "UPDATE fleet.drivers SET status = 'available', updated_at = %s"
                    " WHERE driver_id = %s AND status IN ('offered', 'on_delivery')"
                    " AND session_id <> ''",
                    (ts(now), busy),
                )
        return before, o

    # -- the pool --------------------------------------------------------------------

    async def regions_with_work(self) -> list[str]:
        async with self.pool.connection() as conn:
            rows = await all_(
                conn,
                ROWS,
                "SELECT DISTINCT region FROM fleet.assignments WHERE status = ANY(%s)",
                ([s.value for s in POOL],),
            )
        return sorted(r["region"] for r in rows)

    async def pool_of(self, regions: Sequence[str], *, limit: int = 5000) -> list[Assignment]:
        """Orders waiting for a driver in ``regions``: the front of the pool, then oldest."""
        async with self.pool.connection() as conn:
            return await all_(
                conn,
                ASSIGNMENTS,
                f"SELECT {ASSIGNMENT} FROM fleet.assignments"
                " WHERE status = ANY(%s) AND region = ANY(%s)"
                " ORDER BY front DESC, status = 'escalated' DESC, created_at LIMIT %s",
                ([s.value for s in POOL], list(regions), limit),
            )

    async def widen(self, order_ids: Sequence[str], radius_miles: float) -> None:
        """Orders that found nobody search ``radius_miles`` from now on."""
        if not order_ids:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE fleet.assignments SET radius_miles = greatest(radius_miles, %s)"
                " WHERE order_id = ANY(%s) AND status = ANY(%s)",
                (radius_miles, list(order_ids), [s.value for s in POOL]),
            )

    async def hold(self, release_at: Mapping[str, float], *, now: float) -> None:
        """Pooled orders held for their kitchen, a driver planned: each one's planned release."""
        if not release_at:
            return
        ids = sorted(release_at)
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE fleet.assignments a SET held_until = h.at FROM"
                " unnest(%s::text[], %s::timestamptz[]) AS h(order_id, at)"
                " WHERE a.order_id = h.order_id AND a.status = ANY(%s)",
                (ids, [ts(max(now, release_at[i])) for i in ids], [s.value for s in POOL]),
            )

    async def food_ready(self, order_id: str, *, at: float) -> None:
        """The kitchen marked the food ready at ``at`` (the first mark stands: redelivered
        events change nothing).

        Ready sooner than estimated, the readiness the planner times offers to becomes
        the mark: an order still waiting for its release is released at once, rather
        than at the estimate while its food waits.
        """
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE fleet.assignments SET food_ready_at = coalesce(food_ready_at, %s),"
                " ready_at = least(ready_at, coalesce(food_ready_at, %s))"
                " WHERE order_id = %s",
                (ts(at), ts(at), order_id),
            )

    async def food_ready_at(self, order_id: str) -> float | None:
        """When the kitchen marked the food ready, if it did."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT food_ready_at FROM fleet.assignments WHERE order_id = %s", (order_id,)
            )
            row = await cur.fetchone()
        return row[0].timestamp() if row is not None and row[0] is not None else None

    # -- the road --------------------------------------------------------------------

    async def progress(
        self, order_id: str, driver_id: str, action: Action, *, now: float
    ) -> tuple[Assignment, bool]:
        """The driver's step on their delivery; returns it and whether it changed anything."""
        async with self.pool.connection() as conn, conn.transaction():
            a = await one(
                conn,
                ASSIGNMENTS,
                f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE order_id = %s FOR UPDATE",
                (order_id,),
            )
            if (
                a is None
                or a.driver_id != driver_id
                or a.status not in [*(s.value for s in HELD), S.DELIVERED.value]
            ):
                raise FailedPrecondition(
                    f"order {order_id!r} is not your delivery", reason="NOT_YOUR_ORDER"
                )
            to = step(a.status, action)
            if to is None:
                return a, False
            after = await one(
                conn,
                ASSIGNMENTS,
                "UPDATE fleet.assignments SET status = %s, updated_at = %s WHERE order_id = %s"
                f" RETURNING {ASSIGNMENT}",
                (to.value, ts(now), order_id),
            )
            assert after is not None
            if to is S.DELIVERED:
                # Free once the trip's last order is at its door.
                await conn.execute(
                    "UPDATE fleet.drivers SET status = CASE WHEN session_id <> '' THEN"
                    " 'available' ELSE 'offline' END, updated_at = %s WHERE driver_id = %s"
                    " AND NOT EXISTS (SELECT 1 FROM fleet.assignments WHERE driver_id = %s"
                    " AND status = ANY(%s))",
                    (ts(now), driver_id, driver_id, [s.value for s in HELD]),
                )
                await count_delivery(conn, driver_id)
            return after, True

    async def arriving(
        self, order_id: str, driver_id: str, reason: str, *, now: float
    ) -> Assignment | None:
        """The driver carrying ``order_id`` is nearly at its door: ``dispatch.v1.arriving``,
        once per order (the flag commits with the event); None when already said or moot."""
        async with self.pool.connection() as conn, conn.transaction():
            a = await one(
                conn,
                ASSIGNMENTS,
                "UPDATE fleet.assignments SET arriving_at = %s WHERE order_id = %s"
                " AND driver_id = %s AND status = %s AND arriving_at IS NULL"
                f" RETURNING {ASSIGNMENT}",
                (ts(now), order_id, driver_id, S.PICKED_UP.value),
            )
            if a is not None:
                await emit(conn, self.announce, "arriving", a, None, reason)
            return a

    async def lose_driver(self, driver_id: str, reason: str, *, now: float) -> Assignment | None:
        """The driver went offline before pickup: their orders go back, to the pool's front.

        Returns the first of them (a trip may hold several; all go back).
        """
        async with self.pool.connection() as conn, conn.transaction():
            held = await all_(
                conn,
                ROWS,
                "SELECT order_id FROM fleet.assignments WHERE driver_id = %s"
                " AND status IN ('assigned', 'at_restaurant') ORDER BY order_id FOR UPDATE",
                (driver_id,),
            )
            await conn.execute(
                "UPDATE fleet.drivers SET status = 'offline', session_id = '', updated_at = %s"
                " WHERE driver_id = %s",
                (ts(now), driver_id),
            )
            first: Assignment | None = None
            for h in held:
                await conn.execute(
                    "UPDATE fleet.offers SET status = 'revoked', reason = %s"
                    " WHERE order_id = %s AND status = 'accepted'",
                    (reason, h["order_id"]),
                )
                a = await one(
                    conn,
                    ASSIGNMENTS,
                    "UPDATE fleet.assignments SET status = 'pending', driver_id = '', front = true,"
                    " trip_id = '', excluded = array_append(excluded, %s), updated_at = %s"
                    f" WHERE order_id = %s RETURNING {ASSIGNMENT}",
                    (driver_id, ts(now), h["order_id"]),
                )
                assert a is not None
                await call_order(conn, a.order_id, "", reason)
                await emit(conn, self.announce, "unassigned", a, None, reason)
                first = first or a
            return first

    async def held(self, *, driver_id: str = "", regions: Sequence[str] = ()) -> list[Assignment]:
        """The orders drivers carry now: one driver's, or every driver's in these regions."""
        q = f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE status = ANY(%s)"
        params: list[Any] = [[s.value for s in HELD]]
        if driver_id:
            q += " AND driver_id = %s"
            params.append(driver_id)
        else:
            q += " AND region = ANY(%s)"
            params.append(list(regions))
        async with self.pool.connection() as conn:
            return await all_(conn, ASSIGNMENTS, q + " ORDER BY driver_id, order_id", params)

    async def on_trips(self, regions: Sequence[str]) -> list[Assignment]:
        """The orders drivers hold, and those offered (with the driver offered), here."""
        async with self.pool.connection() as conn:
            held = await all_(
                conn,
                ASSIGNMENTS,
                f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE status = ANY(%s)"
                " AND region = ANY(%s) ORDER BY driver_id, order_id",
                ([s.value for s in HELD | {AssignmentStatus.OFFERED}], list(regions)),
            )
            offered = [a.order_id for a in held if a.status == AssignmentStatus.OFFERED]
            to: dict[str, str] = {}
            if offered:
                cur = await conn.execute(
                    "SELECT order_id, driver_id FROM fleet.offers"
                    " WHERE status = 'open' AND order_id = ANY(%s)",
                    (offered,),
                )
                to = {str(r[0]): str(r[1]) for r in await cur.fetchall()}
        return [
            dataclasses.replace(a, driver_id=to.get(a.order_id, ""))
            if a.status == AssignmentStatus.OFFERED
            else a
            for a in held
        ]

    async def set_max_orders(self, k: int) -> None:
        """K, the orders a driver may carry at once, as the data store enforces it."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("UPDATE fleet.trip_limits SET max_orders = %s", (k,))

    # -- reading ---------------------------------------------------------------------

    async def get(self, order_id: str) -> Assignment | None:
        async with self.pool.connection() as conn:
            return await one(
                conn,
                ASSIGNMENTS,
                f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE order_id = %s",
                (order_id,),
            )

    async def page(
        self,
        statuses: Sequence[str],
        region: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[Assignment]:
        q = f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE status = ANY(%s)"
        params: list[Any] = [list(statuses)]
        if region:
            q += " AND region LIKE %s"
            params.append(region.replace("%", "") + "%")
        if after is not None:
            q += " AND (created_at, order_id) > (%s, %s)"
            params.extend(after)
        q += " ORDER BY created_at, order_id LIMIT %s"
        params.append(limit)
        async with self.pool.connection() as conn:
            return await all_(conn, ASSIGNMENTS, q, params)
