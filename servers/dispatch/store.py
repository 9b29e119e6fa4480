"""The Dispatch service's PostgreSQL (schema ``fleet``): the only module here that runs SQL.

Every change is one transaction that moves the rows it must (offer, assignment,
driver, stats), records what the Order service must be told (``order_calls``)
and the event announcing it (``outbox``) together. Each step is a conditional
``UPDATE ... WHERE status = <expected>``: a step that lost a race changes
nothing and is reported as such, and the partial unique indexes of the
migration (one open offer per driver and per order, one active order per
driver) turn any double offer or double assignment into a constraint error
that rolls the whole step back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import FailedPrecondition, NotFound
from servers.dispatch.matching import Proposal
from servers.dispatch.model import Assignment, Driver, OfferRow, OrderCall
from servers.dispatch.offers import HELD, POOL, Action, AssignmentStatus, OfferRules, step
from servers.runtime.outbox import OutboxEvent, enqueue_event, first_delivery

__all__ = ["Announce", "FleetStore", "NewOrder", "ts"]

S = AssignmentStatus
_SCHEMA = "fleet"
_RECENT = 20

#: Builds the outbox event of a change: (kind, assignment after it, offer, reason).
Announce = Callable[[str, Assignment, OfferRow | None, str], OutboxEvent]

_DRIVER_SELECT = """
SELECT d.driver_id, d.name, d.vehicle_type, d.vehicle, d.photo_url, d.status, d.region,
       d.session_id,
       CASE WHEN s.rating_count > 0 THEN s.rating_sum::float8 / s.rating_count ELSE 5.0 END
           AS rating,
       coalesce(s.rating_count, 0) AS rating_count, coalesce(s.completed, 0) AS completed,
       coalesce((SELECT avg(x::int)::float8 FROM unnest(s.recent_offers) x), 1.0) AS acceptance
FROM fleet.drivers d LEFT JOIN fleet.stats s USING (driver_id)
"""
_A_COLS = [f.name for f in dataclasses.fields(Assignment)]
_O_COLS = [f.name for f in dataclasses.fields(OfferRow)]


def ts(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


def _assignment(row: dict[str, Any]) -> Assignment:
    values = {c: row[c] for c in _A_COLS}
    values["status"] = S(values["status"])
    values["excluded"] = list(values["excluded"])
    return Assignment(**values)


def _offer(row: dict[str, Any]) -> OfferRow:
    return OfferRow(**{c: row[c] for c in _O_COLS})


def _driver(row: dict[str, Any]) -> Driver:
    return Driver(**{f.name: row[f.name] for f in dataclasses.fields(Driver)})


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


class FleetStore:
    """Drivers, assignments and offers in PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool, announce: Announce) -> None:
        self.pool = pool
        self.announce = announce

    # -- helpers -------------------------------------------------------------------

    async def _emit(
        self,
        conn: AsyncConnection[Any],
        kind: str,
        a: Assignment,
        offer: OfferRow | None = None,
        reason: str = "",
    ) -> None:
        ev = self.announce(kind, a, offer, reason)
        await enqueue_event(conn, _SCHEMA, ev)

    @staticmethod
    async def _one(
        conn: AsyncConnection[Any], query: str, params: Sequence[Any] | dict[str, Any]
    ) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        return await cur.fetchone()

    @staticmethod
    async def _all(
        conn: AsyncConnection[Any], query: str, params: Sequence[Any] | dict[str, Any]
    ) -> list[dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        return await cur.fetchall()

    async def _record_answer(self, conn: AsyncConnection[Any], driver_id: str, ok: bool) -> None:
        await conn.execute(
            "INSERT INTO fleet.stats (driver_id, recent_offers) VALUES (%s, ARRAY[%s::boolean])"
            " ON CONFLICT (driver_id) DO UPDATE SET recent_offers ="
            " (fleet.stats.recent_offers || %s::boolean)"
            "[greatest(1, cardinality(fleet.stats.recent_offers) - %s):]",
            (driver_id, ok, ok, _RECENT - 2),
        )

    async def _call_order(
        self,
        conn: AsyncConnection[Any],
        order_id: str,
        driver_id: str,
        reason: str,
        eta: dt.datetime | None = None,
    ) -> None:
        await conn.execute(
            "INSERT INTO fleet.order_calls (order_id, driver_id, reason, est_delivery_at)"
            " VALUES (%s, %s, %s, %s)",
            (order_id, driver_id, reason, eta),
        )

    # -- drivers -------------------------------------------------------------------

    async def upsert_driver(self, d: Driver) -> Driver:
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
            row = await self._one(conn, _DRIVER_SELECT + " WHERE d.driver_id = %s", (d.driver_id,))
        assert row is not None
        return _driver(row)

    async def get_driver(self, driver_id: str) -> Driver | None:
        async with self.pool.connection() as conn:
            row = await self._one(conn, _DRIVER_SELECT + " WHERE d.driver_id = %s", (driver_id,))
        return _driver(row) if row else None

    async def available(self, driver_ids: Iterable[str]) -> dict[str, Driver]:
        """Of these drivers, the ones online, available and holding nothing."""
        ids = list(driver_ids)
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            rows = await self._all(
                conn,
                _DRIVER_SELECT + " WHERE d.driver_id = ANY(%s) AND d.status = 'available'"
                " AND d.session_id <> ''",
                (ids,),
            )
        return {r["driver_id"]: _driver(r) for r in rows}

    async def rate(self, order_id: str, driver_id: str, rating: int) -> tuple[float, int]:
        """Counts the rating once per order; returns the driver's mean and count after it."""
        async with self.pool.connection() as conn, conn.transaction():
            known = await self._one(
                conn, "SELECT 1 FROM fleet.drivers WHERE driver_id = %s", (driver_id,)
            )
            if known is None:
                raise NotFound(f"no driver {driver_id!r}", reason="DRIVER_NOT_FOUND")
            # ON CONFLICT: two deliveries of the same rating may race; one counts.
            fresh = await self._one(
                conn,
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
                prior = await self._one(
                    conn, "SELECT driver_id FROM fleet.ratings WHERE order_id = %s", (order_id,)
                )
                if prior is not None and prior["driver_id"] != driver_id:
                    raise FailedPrecondition(
                        f"order {order_id} was rated for driver {prior['driver_id']}",
                        reason="ALREADY_RATED",
                    )
            row = await self._one(
                conn,
                "SELECT rating_sum, rating_count FROM fleet.stats WHERE driver_id = %s",
                (driver_id,),
            )
        assert row is not None
        return row["rating_sum"] / max(1, row["rating_count"]), int(row["rating_count"])

    # -- sessions ------------------------------------------------------------------

    async def open_session(self, driver_id: str, session_id: str, *, now: float) -> None:
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

    async def close_session(
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
            row = await self._one(
                conn,
                "UPDATE fleet.drivers SET session_id = '', updated_at = %s,"
                " status = CASE WHEN status = 'on_delivery' THEN status ELSE 'offline' END"
                " WHERE driver_id = %s AND session_id = %s RETURNING status",
                (ts(now), driver_id, session_id),
            )
            if row is None:
                return []
            offers = await self._all(
                conn,
                "SELECT * FROM fleet.offers WHERE driver_id = %s AND status = 'open' FOR UPDATE",
                (driver_id,),
            )
            out = []
            for o in offers:
                done = await self._fail(
                    conn,
                    _offer(o),
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
            row = await self._one(
                conn,
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

    async def session_state(
        self, driver_id: str
    ) -> tuple[Driver | None, OfferRow | None, Assignment | None]:
        async with self.pool.connection() as conn:
            d = await self._one(conn, _DRIVER_SELECT + " WHERE d.driver_id = %s", (driver_id,))
            o = await self._one(
                conn,
                "SELECT * FROM fleet.offers WHERE driver_id = %s AND status = 'open'",
                (driver_id,),
            )
            a = await self._one(
                conn,
                "SELECT * FROM fleet.assignments WHERE driver_id = %s AND status = ANY(%s)",
                (driver_id, [s.value for s in HELD]),
            )
        return (
            _driver(d) if d else None,
            _offer(o) if o else None,
            _assignment(a) if a else None,
        )

    # -- orders in -----------------------------------------------------------------

    async def add_order(
        self, order: NewOrder, *, now: float, consumer: str = "", event_id: str = ""
    ) -> Assignment | None:
        """Puts a confirmed order in its region's pool, once (None if seen before)."""
        async with self.pool.connection() as conn, conn.transaction():
            if event_id and not await first_delivery(conn, _SCHEMA, consumer, event_id):
                return None
            row = await self._one(
                conn,
                "INSERT INTO fleet.assignments (order_id, region, status, pickup_lat, pickup_lon,"
                " pickup_label, dropoff_lat, dropoff_lon, dropoff_label, ready_at, tip_minor,"
                " currency, created_at, updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING RETURNING *",
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
        return _assignment(row) if row else None

    async def cancel_order(
        self, order_id: str, *, now: float, reason: str, consumer: str = "", event_id: str = ""
    ) -> tuple[Assignment | None, OfferRow | None]:
        """The order was cancelled: the assignment ends, an open offer is withdrawn.

        Returns the assignment before (to tell its driver) and the withdrawn offer.
        """
        async with self.pool.connection() as conn, conn.transaction():
            if event_id and not await first_delivery(conn, _SCHEMA, consumer, event_id):
                return None, None
            row = await self._one(
                conn, "SELECT * FROM fleet.assignments WHERE order_id = %s FOR UPDATE", (order_id,)
            )
            if row is None:
                return None, None
            before = _assignment(row)
            if before.status in (S.DELIVERED, S.CANCELLED):
                return None, None
            o = await self._one(
                conn,
                "UPDATE fleet.offers SET status = 'withdrawn', reason = 'order cancelled',"
                " answered_at = %s WHERE order_id = %s AND status = 'open' RETURNING *",
                (ts(now), order_id),
            )
            await conn.execute(
                "UPDATE fleet.assignments SET status = 'cancelled', updated_at = %s"
                " WHERE order_id = %s",
                (ts(now), order_id),
            )
            busy = o["driver_id"] if o else (before.driver_id if before.status in HELD else "")
            if busy:
                await conn.execute(
                    "UPDATE fleet.drivers SET status = 'available', updated_at = %s"
                    " WHERE driver_id = %s AND status IN ('offered', 'on_delivery')"
                    " AND session_id <> ''",
                    (ts(now), busy),
                )
        return before, (_offer(o) if o else None)

    # -- matching ------------------------------------------------------------------

    async def regions_with_work(self) -> list[str]:
        async with self.pool.connection() as conn:
            rows = await self._all(
                conn,
                "SELECT DISTINCT region FROM fleet.assignments WHERE status = ANY(%s)",
                ([s.value for s in POOL],),
            )
        return sorted(r["region"] for r in rows)

    async def pool_of(self, regions: Sequence[str], *, limit: int = 5000) -> list[Assignment]:
        """Orders waiting for a driver in ``regions``: the front of the pool, then oldest."""
        async with self.pool.connection() as conn:
            rows = await self._all(
                conn,
                "SELECT * FROM fleet.assignments WHERE status = ANY(%s) AND region = ANY(%s)"
                " ORDER BY front DESC, status = 'escalated' DESC, created_at LIMIT %s",
                ([s.value for s in POOL], list(regions), limit),
            )
        return [_assignment(r) for r in rows]

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

    async def make_offer(
        self, p: Proposal, *, offer_id: str, now: float, rules: OfferRules
    ) -> tuple[Assignment, OfferRow] | None:
        """Offers the order to the driver, if both are still free; None if either was taken."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await self._one(
                    conn,
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
                row = await self._one(
                    conn,
                    "UPDATE fleet.assignments SET status = 'offered',"
                    " offers_made = offers_made + 1, est_pickup_at = %s, est_delivery_at = %s,"
                    " updated_at = %s"
                    " WHERE order_id = %s RETURNING *",
                    (ts(p.pickup_at), ts(p.delivery_at), ts(now), p.order_id),
                )
                assert row is not None
                taken = await self._one(
                    conn,
                    "UPDATE fleet.drivers SET status = 'offered', updated_at = %s"
                    " WHERE driver_id = %s AND status = 'available' AND session_id <> ''"
                    " RETURNING driver_id",
                    (ts(now), p.driver_id),
                )
                if taken is None:
                    raise _Lost()
                a = _assignment(row)
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
                )
                await conn.execute(
                    "INSERT INTO fleet.offers ("
                    + ", ".join(_O_COLS)
                    + ") VALUES ("
                    + ", ".join(["%s"] * len(_O_COLS))
                    + ")",
                    [getattr(offer, c) for c in _O_COLS],
                )
                await self._emit(conn, "offered", a, offer)
                return a, offer
        except (_Lost, psycopg.errors.UniqueViolation):
            return None

    async def accept(self, offer_id: str, driver_id: str, *, now: float) -> Assignment:
        async with self.pool.connection() as conn, conn.transaction():
            o = await self._one(
                conn, "SELECT * FROM fleet.offers WHERE offer_id = %s FOR UPDATE", (offer_id,)
            )
            if o is None or o["driver_id"] != driver_id:
                raise FailedPrecondition(
                    f"offer {offer_id!r} is not yours", reason="NOT_YOUR_OFFER"
                )
            if o["status"] != "open":
                raise FailedPrecondition(
                    f"offer {offer_id} is {o['status']}", reason=f"OFFER_{o['status'].upper()}"
                )
            if o["expire_at"] <= ts(now):
                raise FailedPrecondition(
                    f"offer {offer_id} expired at {o['expire_at']:%H:%M:%S}", reason="OFFER_EXPIRED"
                )
            await conn.execute(
                "UPDATE fleet.offers SET status = 'accepted', answered_at = %s WHERE offer_id = %s",
                (ts(now), offer_id),
            )
            row = await self._one(
                conn,
                "UPDATE fleet.assignments SET status = 'assigned', driver_id = %s, front = false,"
                " updated_at = %s WHERE order_id = %s AND status = 'offered' RETURNING *",
                (driver_id, ts(now), o["order_id"]),
            )
            if row is None:  # cannot happen while the offer was open; kept as a guard
                raise FailedPrecondition("the order is no longer on offer", reason="OFFER_CLOSED")
            await conn.execute(
                "UPDATE fleet.drivers SET status = 'on_delivery', updated_at = %s"
                " WHERE driver_id = %s",
                (ts(now), driver_id),
            )
            await self._record_answer(conn, driver_id, True)
            a = _assignment(row)
            await self._call_order(
                conn, a.order_id, driver_id, f"driver {driver_id} accepted", a.est_delivery_at
            )
            await self._emit(conn, "assigned", a, _offer(o))
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
            o = await self._one(
                conn, "SELECT * FROM fleet.offers WHERE offer_id = %s FOR UPDATE", (offer_id,)
            )
            if o is None or o["driver_id"] != driver_id:
                raise FailedPrecondition(
                    f"offer {offer_id!r} is not yours", reason="NOT_YOUR_OFFER"
                )
            if o["status"] != "open":
                raise FailedPrecondition(
                    f"offer {offer_id} is {o['status']}", reason=f"OFFER_{o['status'].upper()}"
                )
            done = await self._fail(
                conn,
                _offer(o),
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
            rows = await self._all(
                conn,
                "SELECT offer_id FROM fleet.offers WHERE status = 'open' AND expire_at <= %s"
                " ORDER BY expire_at LIMIT %s",
                (ts(now), limit),
            )
        for r in rows:
            async with self.pool.connection() as conn, conn.transaction():
                o = await self._one(
                    conn,
                    "SELECT * FROM fleet.offers WHERE offer_id = %s AND status = 'open'"
                    " FOR UPDATE SKIP LOCKED",
                    (r["offer_id"],),
                )
                if o is None:
                    continue
                done = await self._fail(
                    conn,
                    _offer(o),
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

    async def _fail(
        self,
        conn: AsyncConnection[Any],
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
        """The offer failed: the order goes back to the pool without this driver."""
        row = await self._one(
            conn,
            "UPDATE fleet.offers SET status = %s, reason = %s, answered_at = %s"
            " WHERE offer_id = %s AND status = 'open' RETURNING *",
            (status, reason, ts(now), o.offer_id),
        )
        if row is None:
            return None
        offer = _offer(row)
        arow = await self._one(
            conn, "SELECT * FROM fleet.assignments WHERE order_id = %s FOR UPDATE", (o.order_id,)
        )
        assert arow is not None
        a = _assignment(arow)
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
            arow = await self._one(
                conn,
                "UPDATE fleet.assignments SET status = %s, radius_miles = %s,"
                " excluded = array_append(excluded, %s), updated_at = %s"
                " WHERE order_id = %s RETURNING *",
                (f.status.value, f.radius_miles, o.driver_id, ts(now), o.order_id),
            )
            assert arow is not None
            a = _assignment(arow)
            if f.escalated_now:
                await self._emit(
                    conn, "escalated", a, offer, f"{a.offers_made} offers failed; last: {reason}"
                )
        await conn.execute(
            "UPDATE fleet.drivers SET status = %s, updated_at = %s"
            " WHERE driver_id = %s AND status = 'offered'",
            (driver_to, ts(now), o.driver_id),
        )
        if status != "withdrawn" or driver_to == "offline":
            await self._record_answer(conn, o.driver_id, False)
        return a, offer

    # -- the road ------------------------------------------------------------------

    async def progress(
        self, order_id: str, driver_id: str, action: Action, *, now: float
    ) -> tuple[Assignment, bool]:
        """The driver's step on their delivery; returns it and whether it changed anything."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await self._one(
                conn, "SELECT * FROM fleet.assignments WHERE order_id = %s FOR UPDATE", (order_id,)
            )
            if (
                row is None
                or row["driver_id"] != driver_id
                or row["status"] not in [*(s.value for s in HELD), S.DELIVERED.value]
            ):
                raise FailedPrecondition(
                    f"order {order_id!r} is not your delivery", reason="NOT_YOUR_ORDER"
                )
            a = _assignment(row)
            to = step(a.status, action)
            if to is None:
                return a, False
            row = await self._one(
                conn,
                "UPDATE fleet.assignments SET status = %s, updated_at = %s WHERE order_id = %s"
                " RETURNING *",
                (to.value, ts(now), order_id),
            )
            assert row is not None
            if to is S.DELIVERED:
                await conn.execute(
                    "UPDATE fleet.drivers SET status = CASE WHEN session_id <> '' THEN"
                    " 'available' ELSE 'offline' END, updated_at = %s WHERE driver_id = %s",
                    (ts(now), driver_id),
                )
                await conn.execute(
                    "UPDATE fleet.stats SET completed = completed + 1 WHERE driver_id = %s",
                    (driver_id,),
                )
            return _assignment(row), True

    async def lose_driver(self, driver_id: str, reason: str, *, now: float) -> Assignment | None:
        """The driver went offline before pickup: their order goes back, to the pool's front."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await self._one(
                conn,
                "SELECT * FROM fleet.assignments WHERE driver_id = %s"
                " AND status IN ('assigned', 'at_restaurant') FOR UPDATE",
                (driver_id,),
            )
            await conn.execute(
                "UPDATE fleet.drivers SET status = 'offline', session_id = '', updated_at = %s"
                " WHERE driver_id = %s",
                (ts(now), driver_id),
            )
            if row is None:
                return None
            await conn.execute(
                "UPDATE fleet.offers SET status = 'revoked', reason = %s"
                " WHERE order_id = %s AND status = 'accepted'",
                (reason, row["order_id"]),
            )
            arow = await self._one(
                conn,
                "UPDATE fleet.assignments SET status = 'pending', driver_id = '', front = true,"
                " excluded = array_append(excluded, %s), updated_at = %s WHERE order_id = %s"
                " RETURNING *",
                (driver_id, ts(now), row["order_id"]),
            )
            assert arow is not None
            a = _assignment(arow)
            await self._call_order(conn, a.order_id, "", reason)
            await self._emit(conn, "unassigned", a, None, reason)
            return a

    # -- reading -------------------------------------------------------------------

    async def get_assignment(self, order_id: str) -> Assignment | None:
        async with self.pool.connection() as conn:
            row = await self._one(
                conn, "SELECT * FROM fleet.assignments WHERE order_id = %s", (order_id,)
            )
        return _assignment(row) if row else None

    async def save_route(self, driver_id: str, order_id: str, leg: int, route: bytes) -> None:
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

    async def load_route(self, driver_id: str) -> tuple[str, int, bytes] | None:
        """(order_id, leg, route) last sent to the driver, if any."""
        async with self.pool.connection() as conn:
            row = await self._one(
                conn,
                "SELECT order_id, leg, route FROM fleet.routes WHERE driver_id = %s",
                (driver_id,),
            )
        return (row["order_id"], row["leg"], bytes(row["route"])) if row else None

    async def list_assignments(
        self,
        statuses: Sequence[str],
        region: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[Assignment]:
        q = "SELECT * FROM fleet.assignments WHERE status = ANY(%s)"
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
            rows = await self._all(conn, q, params)
        return [_assignment(r) for r in rows]

    # -- telling the Order service -------------------------------------------------

    async def due_calls(self, limit: int = 100) -> list[OrderCall]:
        """Calls owed to the Order service, the oldest of each order only (order matters)."""
        async with self.pool.connection() as conn:
            rows = await self._all(
                conn,
                "SELECT DISTINCT ON (order_id) id, order_id, driver_id, reason, est_delivery_at,"
                " attempts FROM fleet.order_calls WHERE done_at IS NULL"
                " ORDER BY order_id, id LIMIT %s",
                (limit,),
            )
        return [OrderCall(**r) for r in rows]

    async def call_done(self, call_id: int, *, error: str = "") -> None:
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


class _Lost(Exception):
    """A conditional step found its row taken by someone else: roll back, no harm done."""
