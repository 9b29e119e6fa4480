"""Drivers' profiles: who they are, how they rate, whether they can take an offer."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg_pool import AsyncConnectionPool

from servers.dispatch.model import Driver
from servers.dispatch.store._sql import DRIVER_SELECT, DRIVERS, all_, one

__all__ = ["DriverStore"]


class DriverStore:
    """The drivers' profiles in ``fleet.drivers``, with their figures from ``fleet.stats``."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def upsert(self, d: Driver) -> Driver:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO fleet.drivers (driver_id, name, vehicle_type, vehicle, photo_url)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (driver_id) DO UPDATE SET"
                " name = excluded.name, vehicle_type = excluded.vehicle_type,"
                " vehicle = excluded.vehicle, photo_url = excluded.photo_url, updated_at = now()",
                (d.driver_id, d.name, d.vehicle_type, d.vehicle, d.photo_url),
            )
            await conn.execute(
                "INSERT INTO fleet.stats (driver_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (d.driver_id,),
            )
            stored = await one(
                conn, DRIVERS, DRIVER_SELECT + " WHERE d.driver_id = %s", (d.driver_id,)
            )
        assert stored is not None
        return stored

    async def get(self, driver_id: str) -> Driver | None:
        async with self.pool.connection() as conn:
            return await one(conn, DRIVERS, DRIVER_SELECT + " WHERE d.driver_id = %s", (driver_id,))

    async def vehicles(self, driver_ids: Iterable[str]) -> dict[str, int]:
        """The vehicle type (``common.VehicleType``) of each of these drivers."""
        ids = list(driver_ids)
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT driver_id, vehicle_type FROM fleet.drivers WHERE driver_id = ANY(%s)",
                (ids,),
            )
            return {str(r[0]): int(r[1]) for r in await cur.fetchall()}

    async def available(self, driver_ids: Iterable[str]) -> dict[str, Driver]:
        """Of these drivers, the ones online, available and holding nothing."""
        ids = list(driver_ids)
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            drivers = await all_(
                conn,
                DRIVERS,
                DRIVER_SELECT + " WHERE d.driver_id = ANY(%s) AND d.status = 'available'"
                " AND d.session_id <> ''",
                (ids,),
            )
        return {d.driver_id: d for d in drivers}
