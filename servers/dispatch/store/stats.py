"""Drivers' figures: ratings (once per order) and deliveries completed."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import FailedPrecondition, NotFound
from servers.dispatch.store._sql import ROWS, one

__all__ = ["StatsStore", "count_delivery"]


class StatsStore:
    """``fleet.stats`` and ``fleet.ratings``; answers to offers are counted by the offers."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def rate(self, order_id: str, driver_id: str, rating: int) -> tuple[float, int]:
        """Counts the rating once per order; returns the driver's mean and count after it."""
        async with self.pool.connection() as conn, conn.transaction():
            known = await one(
                conn, ROWS, "SELECT 1 FROM fleet.drivers WHERE driver_id = %s", (driver_id,)
            )
            if known is None:
                raise NotFound(f"no driver {driver_id!r}", reason="DRIVER_NOT_FOUND")
            # ON CONFLICT: two deliveries of the same rating may race; one counts.
            fresh = await one(
                conn,
                ROWS,
                "INSERT INTO fleet.ratings (order_id, driver_id, rating) VALUES (%s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                (order_id, driver_id, rating),
            )
            if fresh is not None:
                await conn.execute(
                    "INSERT INTO fleet.stats (driver_id, rating_sum, rating_count)"
                    " VALUES (%s, %s, 1) ON CONFLICT (driver_id) DO UPDATE SET"
                    " rating_sum = fleet.stats.rating_sum + %s,"
                    " rating_count = fleet.stats.rating_count + 1",
                    (driver_id, rating, rating),
                )
            else:
                prior = await one(
                    conn,
                    ROWS,
                    "SELECT driver_id FROM fleet.ratings WHERE order_id = %s",
                    (order_id,),
                )
                if prior is not None and prior["driver_id"] != driver_id:
                    raise FailedPrecondition(
                        f"order {order_id} was rated for driver {prior['driver_id']}",
                        reason="ALREADY_RATED",
                    )
            row = await one(
                conn,
                ROWS,
                "SELECT rating_sum, rating_count FROM fleet.stats WHERE driver_id = %s",
                (driver_id,),
            )
        assert row is not None
        return row["rating_sum"] / max(1, row["rating_count"]), int(row["rating_count"])


async def count_delivery(conn: AsyncConnection[Any], driver_id: str) -> None:
    """One more delivery completed by the driver, in the delivery's transaction."""
    await conn.execute(
        "UPDATE fleet.stats SET completed = completed + 1 WHERE driver_id = %s", (driver_id,)
    )
