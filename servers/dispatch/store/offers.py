"""Offers: made to one driver at a time, accepted, rejected, lapsed or withdrawn.

Every step is one transaction that moves the offer, its assignment and its driver
together, with the event announcing it; a step that lost a race changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import FailedPrecondition
from servers.dispatch.matching import Proposal
from servers.dispatch.model import Assignment, OfferRow
from servers.dispatch.offers import HELD, POOL, AssignmentStatus, OfferRules
from servers.dispatch.store._sql import (
    ASSIGNMENT,
    ASSIGNMENTS,
    OFFER,
    OFFERS,
    ROWS,
    Announce,
    all_,
    call_order,
    emit,
    one,
    record_answer,
    ts,
)

__all__ = ["OfferStore", "fail_offer"]

S = AssignmentStatus


class _Lost(Exception):
    """A conditional step found its row taken by someone else: roll back, no harm done."""


class OfferStore:
    """``fleet.offers`` and the moves of their assignments and drivers."""

    def __init__(self, pool: AsyncConnectionPool, announce: Announce) -> None:
        self.pool = pool
        self.announce = announce

    async def make(
        self, p: Proposal, *, offer_id: str, now: float, rules: OfferRules, stack: bool = False
    ) -> tuple[Assignment, OfferRow] | None:
        """Offers the order to the driver, if both are still free; None if either was taken.

        ``stack``: the driver is on a delivery and this order joins their trip (they stay
        ``on_delivery``); the data store refuses the acceptance that would make more
        than K (``fleet.trip_limits``).
        """
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await one(
                    conn,
                    ROWS,
                    "SELECT status, excluded FROM fleet.assignments WHERE order_id = %s FOR UPDATE",
                    (p.order_id,),
                )
                if (
                    cur is None
                    or cur["status"] not in [s.value for s in POOL]
                    or p.driver_id in cur["excluded"]
                ):
                    raise _Lost()
                escalated = cur["status"] == S.ESCALATED.value
                a = await one(
                    conn,
                    ASSIGNMENTS,
                    "UPDATE fleet.assignments SET status = 'offered',"
                    " offers_made = offers_made + 1, est_pickup_at = %s, est_delivery_at = %s,"
                    " updated_at = %s"
                    f" WHERE order_id = %s RETURNING {ASSIGNMENT}",
                    (ts(p.pickup_at), ts(p.delivery_at), ts(now), p.order_id),
                )
                assert a is not None
                taken = await one(
                    conn,
                    ROWS,
                    "UPDATE fleet.drivers SET status = %s, updated_at = %s"
                    " WHERE driver_id = %s AND status = %s AND session_id <> ''"
                    " RETURNING driver_id",
                    ("on_delivery", ts(now), p.driver_id, "on_delivery")
                    if stack
                    else ("offered", ts(now), p.driver_id, "available"),
                )
                if taken is None:
                    raise _Lost()
                miles = p.to_pickup_miles + p.to_dropoff_miles
                offer = OfferRow(
                    offer_id=offer_id,
                    order_id=p.order_id,
                    driver_id=p.driver_id,
                    attempt=a.offers_made,
                    status="open",
                    reason="",
                    earnings_minor=rules.earnings_minor(miles, escalated=escalated) + a.tip_minor,
                    currency=a.currency,
                    distance_miles=miles,
                    score=p.score,
                    created_at=ts(now),
                    expire_at=ts(now + rules.expiry_s),
                    why=json.dumps(p.why(), separators=(",", ":")),
                )
                columns = OFFER.split(", ")
                await conn.execute(
                    f"INSERT INTO fleet.offers ({OFFER}) VALUES ("
                    + ", ".join(["%s"] * len(columns))
                    + ")",
                    [getattr(offer, c) for c in columns],
                )
                await emit(conn, self.announce, "offered", a, offer)
                return a, offer
        except (_Lost, psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            # A deadlock with another replica's offer for the same driver is a race lost like
            # the others: PostgreSQL rolled this transaction back whole; the next round retries.
            return None

    async def take_trip(self, order_ids: list[str], driver_id: str, *, trip_id: str,
                        now: float) -> list[str]:  # fmt: skip
        """Gives the driver these pooled orders as one trip, in one transaction.

        Each order must still be in the pool; the data store counts the driver's load
        (at most K), so of two replicas racing to fill one driver, the one that would
        make it K + 1 fails whole. Returns the orders given ([] when the step lost).
        """
        try:
            async with self.pool.connection() as conn, conn.transaction():
                taken = await all_(
                    conn,
                    ASSIGNMENTS,
                    "UPDATE fleet.assignments SET status = 'assigned', driver_id = %s,"
                    " trip_id = %s, front = false, updated_at = %s"
                    " WHERE order_id = ANY(%s) AND status = ANY(%s) AND NOT (%s = ANY(excluded))"
                    f" RETURNING {ASSIGNMENT}",
                    (driver_id, trip_id, ts(now), order_ids, [x.value for x in POOL], driver_id),
                )
                if len(taken) != len(set(order_ids)):
                    raise _Lost()
                for a in taken:
                    reason = f"driver {driver_id} takes trip {trip_id}"
                    await call_order(conn, a.order_id, driver_id, reason, a.est_delivery_at)
                    await emit(conn, self.announce, "assigned", a, None, reason)
                await conn.execute(
                    "UPDATE fleet.drivers SET status = 'on_delivery', updated_at = %s"
                    " WHERE driver_id = %s",
                    (ts(now), driver_id),
                )
                return [a.order_id for a in taken]
        except (_Lost, psycopg.errors.CheckViolation, psycopg.errors.DeadlockDetected):
            return []

    async def _open_offer(
        self, conn: AsyncConnection[Any], offer_id: str, driver_id: str
    ) -> OfferRow:
        """The driver's open offer, locked; refuses another's offer or an answered one."""
        o = await one(
            conn, OFFERS, f"SELECT {OFFER} FROM fleet.offers WHERE offer_id = %s FOR UPDATE",
            (offer_id,),
        )  # fmt: skip
        if o is None or o.driver_id != driver_id:
            raise FailedPrecondition(f"offer {offer_id!r} is not yours", reason="NOT_YOUR_OFFER")
        if o.status != "open":
            raise FailedPrecondition(
                f"offer {offer_id} is {o.status}", reason=f"OFFER_{o.status.upper()}"
            )
        return o

    async def accept(self, offer_id: str, driver_id: str, *, now: float) -> Assignment:
        async with self.pool.connection() as conn, conn.transaction():
            o = await self._open_offer(conn, offer_id, driver_id)
            if o.expire_at <= ts(now):
                raise FailedPrecondition(
                    f"offer {offer_id} expired at {o.expire_at:%H:%M:%S}", reason="OFFER_EXPIRED"
                )
            await conn.execute(
                "UPDATE fleet.offers SET status = 'accepted', answered_at = %s WHERE offer_id = %s",
                (ts(now), offer_id),
            )
            a = await one(
                conn,
                ASSIGNMENTS,
                "UPDATE fleet.assignments SET status = 'assigned', driver_id = %s, front = false,"
                " updated_at = %s WHERE order_id = %s AND status = 'offered'"
                f" RETURNING {ASSIGNMENT}",
                (driver_id, ts(now), o.order_id),
            )
            if a is None:  # cannot happen while the offer was open; kept as a guard
                raise FailedPrecondition("the order is no longer on offer", reason="OFFER_CLOSED")
            await conn.execute(
                "UPDATE fleet.drivers SET status = 'on_delivery', updated_at = %s"
                " WHERE driver_id = %s",
                (ts(now), driver_id),
            )
            await record_answer(conn, driver_id, True)
            others = await one(
                conn,
                ROWS,
                "SELECT count(*) AS n FROM fleet.assignments WHERE driver_id = %s"
                " AND order_id <> %s AND status = ANY(%s)",
                (driver_id, a.order_id, [x.value for x in HELD]),
            )
            n = int(others["n"]) if others else 0
            why = f"driver {driver_id} accepted"
            if n:  # a stacked order: its drop-off comes after the trip's others
                why += f"; bundled with {n} other order(s): your driver has another drop-off first"
            await call_order(conn, a.order_id, driver_id, why, a.est_delivery_at)
            await emit(conn, self.announce, "assigned", a, o)
            return a

    async def reject(
        self,
        offer_id: str,
        driver_id: str,
        reason: str,
        *,
        now: float,
        rules: OfferRules,
        wide: float,
        escalated_radius: float,
    ) -> tuple[Assignment, OfferRow]:
        async with self.pool.connection() as conn, conn.transaction():
            o = await self._open_offer(conn, offer_id, driver_id)
            done = await fail_offer(
                conn,
                self.announce,
                o,
                "rejected",
                reason,
                now=now,
                rules=rules,
                wide=wide,
                escalated_radius=escalated_radius,
                driver_to="available",
            )
            assert done is not None
            return done

    async def expire_due(
        self,
        *,
        now: float,
        rules: OfferRules,
        wide: float,
        escalated_radius: float,
        limit: int = 500,
    ) -> list[tuple[Assignment, OfferRow]]:
        """Open offers past their expiry lapse (each exactly once, whichever replica runs it)."""
        out = []
        async with self.pool.connection() as conn:
            rows = await all_(
                conn,
                ROWS,
                "SELECT offer_id FROM fleet.offers WHERE status = 'open' AND expire_at <= %s"
                " ORDER BY expire_at LIMIT %s",
                (ts(now), limit),
            )
        for r in rows:
            async with self.pool.connection() as conn, conn.transaction():
                o = await one(
                    conn,
                    OFFERS,
                    f"SELECT {OFFER} FROM fleet.offers WHERE offer_id = %s AND status = 'open'"
                    " FOR UPDATE SKIP LOCKED",
                    (r["offer_id"],),
                )
                if o is None:
                    continue
                done = await fail_offer(
                    conn,
                    self.announce,
                    o,
                    "expired",
                    "no answer in time",
                    now=now,
                    rules=rules,
                    wide=wide,
                    escalated_radius=escalated_radius,
                    driver_to="available",
                )
                if done is not None:
                    out.append(done)
        return out


async def fail_offer(
    conn: AsyncConnection[Any],
    announce: Announce,
    o: OfferRow,
    status: str,
    reason: str,
    *,
    now: float,
    rules: OfferRules,
    wide: float,
    escalated_radius: float,
    driver_to: str,
) -> tuple[Assignment, OfferRow] | None:
    """The offer failed: the order goes back to the pool without this driver.

    Runs in the caller's transaction (an answer, a lapse, the driver's session ending).
    """
    offer = await one(
        conn,
        OFFERS,
        "UPDATE fleet.offers SET status = %s, reason = %s, answered_at = %s"
        f" WHERE offer_id = %s AND status = 'open' RETURNING {OFFER}",
        (status, reason, ts(now), o.offer_id),
    )
    if offer is None:
        return None
    a = await one(
        conn,
        ASSIGNMENTS,
        f"SELECT {ASSIGNMENT} FROM fleet.assignments WHERE order_id = %s FOR UPDATE",
        (o.order_id,),
    )
    assert a is not None
    if a.status is S.OFFERED:
        # The status before the offer: escalated orders stay escalated.
        prior = S.ESCALATED if a.offers_made > rules.max_attempts else S.PENDING
        f = rules.after_failure(
            offers_made=a.offers_made,
            status=prior,
            radius_miles=a.radius_miles,
            wide=wide,
            escalated_radius=escalated_radius,
        )
        a = await one(
            conn,
            ASSIGNMENTS,
            "UPDATE fleet.assignments SET status = %s, radius_miles = %s,"
            " excluded = array_append(excluded, %s), updated_at = %s"
            f" WHERE order_id = %s RETURNING {ASSIGNMENT}",
            (f.status.value, f.radius_miles, o.driver_id, ts(now), o.order_id),
        )
        assert a is not None
        if f.escalated_now:
            await emit(
                conn, announce, "escalated", a, offer,
                f"{a.offers_made} offers failed; last: {reason}",
            )  # fmt: skip
    await conn.execute(
        "UPDATE fleet.drivers SET status = %s, updated_at = %s"
        " WHERE driver_id = %s AND status = 'offered'",
        (driver_to, ts(now), o.driver_id),
    )
    if status != "withdrawn" or driver_to == "offline":
        await record_answer(conn, o.driver_id, False)
    return a, offer
