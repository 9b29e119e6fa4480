"""What Order knows of a kitchen right now, sent with each ETA request (live features).

The live twin of ``servers.eta.kitchen.kitchen_as_of`` (which computes the same for
training, over history, as of each order's placement): the restaurant's open
orders (placed, confirmed or preparing: its load) and the mean preparation time of
its latest ten ready orders (placement to ready for pickup) with how many that is.
Read-only, bounded by a short timeout: an estimate goes out without them rather
than late.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from servers.order._pg import autocommit

__all__ = ["KitchenFeatures", "KitchenNow"]

_log = logging.getLogger("foodmesh.order.eta")

#: Ready orders the recent prep time averages (``servers.eta.kitchen.RECENT_PREP_ORDERS``).
RECENT = 10

_QUERY = """
SELECT (SELECT count(*) FROM orders.orders
         WHERE restaurant_id = %(r)s AND released AND created_at < %(before)s
           AND status IN ('placed', 'confirmed', 'preparing')),
       avg(p), count(p)
  FROM (SELECT extract(epoch FROM t.at - o.created_at) / 60.0 AS p
          FROM orders.orders o JOIN orders.timeline t USING (order_id)
         WHERE o.restaurant_id = %(r)s AND t.status = 'ready_for_pickup'
         ORDER BY t.at DESC LIMIT %(n)s) recent
"""


@dataclass(frozen=True, slots=True)
class KitchenNow:
    open_orders: int
    recent_prep_min: float
    recent_orders: int


class KitchenFeatures:
    """Reads a restaurant's :class:`KitchenNow` from the Order database."""

    def __init__(self, pool: AsyncConnectionPool, *, timeout_s: float = 0.3) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def of(
        self, restaurant_id: str, *, placed_before: dt.datetime | None = None
    ) -> KitchenNow | None:
        """The kitchen now; None when the database does not answer in time.

        ``placed_before``: count only open orders placed before then (an order estimated
        again after its placement does not count itself, as at its placement).
        """
        before = placed_before or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        try:
            async with asyncio.timeout(self.timeout_s), autocommit(self.pool) as conn:
                cur = await conn.execute(_QUERY, {"r": restaurant_id, "n": RECENT,
                                                  "before": before})  # fmt: skip
                row = await cur.fetchone()
        except Exception as exc:  # an estimate without the kitchen beats none
            _log.debug("kitchen features of %s unavailable: %s", restaurant_id, exc)
            return None
        if row is None:
            return None
        return KitchenNow(int(row[0] or 0), float(row[1] or 0.0), int(row[2] or 0))
