"""The route last sent to each driver, so that a replica taking over resends the same one."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from servers.dispatch.store._sql import ROWS, one

__all__ = ["RouteLog"]


class RouteLog:
    """``fleet.routes``: one route per driver, replaced by the next."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def save(self, driver_id: str, order_id: str, leg: int, route: bytes) -> None:
        """Records the route last sent to the driver (replacing the one before)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO fleet.routes (driver_id, order_id, leg, route)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (driver_id) DO UPDATE
                SET order_id = EXCLUDED.order_id, leg = EXCLUDED.leg,
                    route = EXCLUDED.route, updated_at = now()
                """,
                (driver_id, order_id, leg, route),
            )

    async def load(self, driver_id: str) -> tuple[str, int, bytes] | None:
        """(order_id, leg, route) last sent to the driver, if any."""
        async with self.pool.connection() as conn:
            row = await one(
                conn,
                ROWS,
                "SELECT order_id, leg, route FROM fleet.routes WHERE driver_id = %s",
                (driver_id,),
            )
        return (row["order_id"], row["leg"], bytes(row["route"])) if row else None
