"""Calls owed to the Order service, recorded with the changes that owe them."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from servers.dispatch.model import OrderCall
from servers.dispatch.store._sql import ORDER_CALLS, all_

__all__ = ["OrderCalls"]


class OrderCalls:
    """``fleet.order_calls``: what Order must be told, oldest first per order."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def due(self, limit: int = 100) -> list[OrderCall]:
        """Calls owed to the Order service, the oldest of each order only (order matters)."""
        async with self.pool.connection() as conn:
            return await all_(
                conn,
                ORDER_CALLS,
                "SELECT DISTINCT ON (order_id) id, order_id, driver_id, reason, est_delivery_at,"
                " attempts FROM fleet.order_calls WHERE done_at IS NULL"
                " ORDER BY order_id, id LIMIT %s",
                (limit,),
            )

    async def done(self, call_id: int, *, error: str = "") -> None:
        async with self.pool.connection() as conn:
            if error:
                await conn.execute(
                    "UPDATE fleet.order_calls SET attempts = attempts + 1, last_error = %s"
                    " WHERE id = %s",
                    (error[:500], call_id),
                )
            else:
                await conn.execute(
                    "UPDATE fleet.order_calls SET done_at = now() WHERE id = %s", (call_id,)
                )
