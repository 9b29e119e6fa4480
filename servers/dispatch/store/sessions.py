"""Drivers' sessions: which stream owns a driver, and the availability it asks for."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import FailedPrecondition
from servers.dispatch.model import Assignment, Driver, OfferRow
from servers.dispatch.offers import HELD, OfferRules
from servers.dispatch.store._sql import (
    ASSIGNMENT,
    ASSIGNMENTS,
    DRIVER_SELECT,
    DRIVERS,
    OFFER,
    OFFERS,
    ROWS,
    Announce,
    all_,
    one,
    ts,
)
from servers.dispatch.store.offers import fail_offer

__all__ = ["SessionStore"]


class SessionStore:
    """The session columns of ``fleet.drivers``; a session ending withdraws its offer."""

    def __init__(self, pool: AsyncConnectionPool, announce: Announce) -> None:
        self.pool = pool
        self.announce = announce

    async def open(self, driver_id: str, session_id: str, *, now: float) -> None:
        """Makes ``session_id`` the driver's session; a driver holding nothing is available."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO fleet.drivers (driver_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (driver_id,),
            )
            await conn.execute(
                "INSERT INTO fleet.stats (driver_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (driver_id,),
            )
            await conn.execute(
                "UPDATE fleet.drivers SET session_id = %s, updated_at = %s,"
                " status = CASE WHEN status IN ('offered', 'on_delivery') THEN status"
                " ELSE 'available' END WHERE driver_id = %s",
                (session_id, ts(now), driver_id),
            )

    async def close(
        self,
        driver_id: str,
        session_id: str,
        *,
        now: float,
        rules: OfferRules,
        wide: float,
        escalated_radius: float,
    ) -> list[tuple[Assignment, OfferRow]]:
        """The session ended: the driver goes offline unless a newer session took over.

        A driver on a delivery keeps it (the app reconnects and gets it back); an
        offer held is withdrawn at once rather than left to lapse.
        """
        async with self.pool.connection() as conn, conn.transaction():
            row = await one(
                conn,
                ROWS,
                "UPDATE fleet.drivers SET session_id = '', updated_at = %s,"
                " status = CASE WHEN status = 'on_delivery' THEN status ELSE 'offline' END"
                " WHERE driver_id = %s AND session_id = %s RETURNING status",
                (ts(now), driver_id, session_id),
            )
            if row is None:
                return []
            offers = await all_(
                conn,
                OFFERS,
                f"SELECT {OFFER} FROM fleet.offers WHERE driver_id = %s AND status = 'open'"
                " FOR UPDATE",
                (driver_id,),
            )
            out = []
            for o in offers:
                done = await fail_offer(
                    conn,
                    self.announce,
                    o,
                    "withdrawn",
                    "the driver's session ended",
                    now=now,
                    rules=rules,
                    wide=wide,
                    escalated_radius=escalated_radius,
                    driver_to="offline",
                )
                if done is not None:
                    out.append(done)
            return out

    async def set_availability(
        self, driver_id: str, session_id: str, status: str, *, now: float
    ) -> str:
        """Available, paused or offline, as the driver asks; returns the status after it."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await one(
                conn,
                ROWS,
                "SELECT status, session_id FROM fleet.drivers WHERE driver_id = %s FOR UPDATE",
                (driver_id,),
            )
            if row is None or row["session_id"] != session_id:
                raise FailedPrecondition("this session was replaced", reason="SESSION_REPLACED")
            current = str(row["status"])
            if current in ("offered", "on_delivery"):
                what = "an offer" if current == "offered" else "a delivery"
                raise FailedPrecondition(
                    f"cannot go {status} while holding {what}: answer or finish it first",
                    reason="BUSY",
                )
            await conn.execute(
                "UPDATE fleet.drivers SET status = %s, updated_at = %s WHERE driver_id = %s",
                (status, ts(now), driver_id),
            )
            return status

    async def state(
        self, driver_id: str
    ) -> tuple[Driver | None, OfferRow | None, Assignment | None]:
        """The driver, their open offer and the delivery they hold (what a session resumes)."""
        async with self.pool.connection() as conn:
            d = await one(conn, DRIVERS, DRIVER_SELECT + " WHERE d.driver_id = %s", (driver_id,))
            o = await one(
                conn,
                OFFERS,
                f"SELECT {OFFER} FROM fleet.offers WHERE driver_id = %s AND status = 'open'",
                (driver_id,),
            )
            a = await one(
                conn,
                ASSIGNMENTS,
                # On a trip of several orders: the one worked on next (those still to pick
                # up first, then the drop-offs in their promised order).
                f"SELECT {ASSIGNMENT} FROM fleet.assignments"
                " WHERE driver_id = %s AND status = ANY(%s)"
                " ORDER BY status IN ('assigned', 'at_restaurant') DESC,"
                " est_delivery_at NULLS LAST, order_id LIMIT 1",
                (driver_id, [s.value for s in HELD]),
            )
        return d, o, a
