"""No driver found, and a driver lost after pickup: escalation and alerts.

- **No driver** (the design: "timeout 30 s, escalate if no match"): an order waiting
  in the pool ``no_driver_after_s`` (30 s) after it reached Dispatch (or after its
  planned release, when it was held for its kitchen with a driver planned), with no driver
  holding it, is escalated: its search radius grows to the escalated radius, drivers
  are offered the escalation bonus (``OfferRules.escalation_bonus`` over the usual
  pay), ops see a ``dispatch.v1.escalated`` event (the dashboard counts them) and
  ``foodmesh_dispatch_no_driver_total``, and the Order service is told
  (``FlagOrder`` NO_DRIVER: the customer's tracking says so, and from
  ``free_cancel_after_s`` (10 min) after the order reached Dispatch its customer may
  cancel free of charge). The driver who takes it ends the alert (Order clears it on
  the assignment).
- **Driver lost after pickup**: Location's presence says the driver carrying the food
  went silent. The order is flagged DRIVER_LOST with the last known position (ops
  alerted: ``foodmesh_dispatch_driver_lost_total`` and the order's event; the customer
  told); when the driver is back, the alert is cleared and the delivery continues.
  If they stay away, ops resolve it through Order's ``ResolveLostDelivery``: a refund,
  or ``orders.v1.lost_reassigned``, on which the order goes back to the front of the
  pool here, for another driver.

Every change commits with what Order must be told (``fleet.order_flags``), sent by
:meth:`Escalation.send_flags` until Order took it, so nothing is lost to a crash.
The engine calls the hooks: :meth:`Escalation.run` beside its loops,
:meth:`on_presence` for every presence event, :meth:`on_order` for order events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.events import EVENT_LOST_REASSIGNED
from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from foodmesh.core.settings import env_float
from foodmesh.v1 import common_pb2, location_pb2, order_pb2
from servers.dispatch.model import Assignment
from servers.dispatch.offers import OfferRules
from servers.dispatch.store._sql import ASSIGNMENT, ASSIGNMENTS, Announce, all_, emit, ts

__all__ = [
    "DRIVER_LOST",
    "NO_DRIVER",
    "Escalation",
    "EscalationRules",
    "FlagPort",
    "bonus_minor",
    "waited_too_long",
]

_log = logging.getLogger("foodmesh.dispatch.escalation")

NO_DRIVER = Counter(
    "foodmesh_dispatch_no_driver_total",
    "Orders escalated because no driver took them in time (ops are alerted).",
)
DRIVER_LOST = Counter(
    "foodmesh_dispatch_driver_lost_total",
    "Deliveries whose driver went silent after pickup (ops are alerted).",
)


class FlagPort(Protocol):
    """Order's FlagOrder (``clients.OrderClient`` fits)."""

    async def flag_order(
        self, request: order_pb2.FlagOrderRequest, *, deadline_s: float | None = ...
    ) -> order_pb2.FlagOrderResponse: ...


@dataclass(frozen=True, slots=True)
class EscalationRules:
    """When an order is escalated and its customer may cancel free (``FOODMESH_DISPATCH_*``)."""

    no_driver_after_s: float = 30.0
    free_cancel_after_s: float = 600.0
    every_s: float = 1.0

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> EscalationRules:
        p = "FOODMESH_DISPATCH_"
        return cls(
            no_driver_after_s=env_float(extra, p + "NO_DRIVER_AFTER_S", 30.0, lo=0.1),
            free_cancel_after_s=env_float(extra, p + "FREE_CANCEL_AFTER_S", 600.0, lo=0.0),
            every_s=env_float(extra, p + "ESCALATION_EVERY_S", 1.0, lo=0.05),
        )


def waited_too_long(created_at: dt.datetime, now: dt.datetime, rules: EscalationRules) -> bool:
    """True when an order in the pool since ``created_at`` is due for escalation."""
    return (now - created_at).total_seconds() >= rules.no_driver_after_s


def bonus_minor(a: Assignment, offer_rules: OfferRules) -> int:
    """What an escalated order pays a driver over the usual (the trip's pay times the bonus)."""
    miles = haversine_m(a.pickup_lat, a.pickup_lon, a.dropoff_lat, a.dropoff_lon) / METERS_PER_MILE
    return offer_rules.earnings_minor(miles, escalated=True) - offer_rules.earnings_minor(
        miles, escalated=False
    )


async def _flag(
    conn: AsyncConnection[Any],
    order_id: str,
    kind: str,
    reason: str,
    *,
    driver_id: str = "",
    lat: float | None = None,
    lon: float | None = None,
    bonus: int = 0,
    currency: str = "USD",
    free_cancel_after: dt.datetime | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO fleet.order_flags (order_id, kind, reason, driver_id, lat, lon, bonus_minor,"
        " currency, free_cancel_after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (order_id, kind, reason, driver_id, lat, lon, bonus, currency, free_cancel_after),
    )


_KINDS = {
    "no_driver": order_pb2.ORDER_ALERT_KIND_NO_DRIVER,
    "driver_lost": order_pb2.ORDER_ALERT_KIND_DRIVER_LOST,
    "": order_pb2.ORDER_ALERT_KIND_UNSPECIFIED,
}


class Escalation:
    """The escalation of one Dispatch process (every replica runs it; rows are locked)."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        announce: Announce,
        orders: FlagPort,
        rules: EscalationRules,
        offer_rules: OfferRules,
        escalated_radius_miles: float,
        clock: Callable[[], float],
    ) -> None:
        self.pool = pool
        self.announce = announce
        self.orders = orders
        self.rules = rules
        self.offer_rules = offer_rules
        self.escalated_radius = escalated_radius_miles
        self.clock = clock
        self._wake = asyncio.Event()

    # -- no driver -----------------------------------------------------------------

    async def escalate_due(self) -> list[str]:
        """Escalates the orders waiting past the limit; returns their ids."""
        now = ts(self.clock())
        cutoff = now - dt.timedelta(seconds=self.rules.no_driver_after_s)
        async with self.pool.connection() as conn, conn.transaction():
            escalated = await all_(
                conn,
                ASSIGNMENTS,
                "UPDATE fleet.assignments SET status = 'escalated', no_driver_at = %s,"
                " radius_miles = greatest(radius_miles, %s), updated_at = %s"
                " WHERE order_id IN (SELECT order_id FROM fleet.assignments"
                "   WHERE status IN ('pending', 'escalated') AND no_driver_at IS NULL"
                # held for its kitchen (a driver planned): waiting from its release
                "   AND greatest(created_at, held_until) <= %s ORDER BY created_at LIMIT 200"
                f"   FOR UPDATE SKIP LOCKED) RETURNING {ASSIGNMENT}",
                (now, self.escalated_radius, now, cutoff),
            )
            for a in escalated:
                bonus = bonus_minor(a, self.offer_rules)
                free = a.created_at + dt.timedelta(seconds=self.rules.free_cancel_after_s)
                why = (
                    f"no driver took the order in {self.rules.no_driver_after_s:g} s: looking"
                    f" up to {self.escalated_radius:g} mi, with a bonus for the driver"
                )
                await emit(conn, self.announce, "escalated", a, None, why)
                await _flag(conn, a.order_id, "no_driver", why, bonus=bonus,
                            currency=a.currency, free_cancel_after=free)  # fmt: skip
        for a in escalated:
            NO_DRIVER.inc()
            _log.warning("order %s escalated: no driver in %g s", a.order_id,
                         self.rules.no_driver_after_s)  # fmt: skip
        if escalated:
            self._wake.set()
        return [a.order_id for a in escalated]

    # -- driver lost after pickup ----------------------------------------------------

    async def on_presence(self, ev: location_pb2.DriverPresenceEvent) -> str | None:
        """A driver went silent or came back: flags the order they carry; its id, if any."""
        now = ts(self.clock())
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            if not ev.online:
                await cur.execute(
                    "UPDATE fleet.assignments SET driver_lost_at = %s, updated_at = %s"
                    " WHERE driver_id = %s AND status IN ('picked_up', 'at_customer')"
                    " AND driver_lost_at IS NULL RETURNING order_id",
                    (now, now, ev.driver_id),
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                p = ev.last_position
                has_fix = bool(p.lat or p.lon)
                where = f" at {p.lat:.5f}, {p.lon:.5f}" if has_fix else ""
                await _flag(conn, row["order_id"], "driver_lost",
                            f"we lost contact with your driver (last seen{where}): we are on it",
                            driver_id=ev.driver_id, lat=p.lat if has_fix else None,
                            lon=p.lon if has_fix else None)  # fmt: skip
                DRIVER_LOST.inc()
                _log.warning("driver %s lost with order %s%s", ev.driver_id, row["order_id"],
                             where)  # fmt: skip
            else:
                await cur.execute(
                    "UPDATE fleet.assignments SET driver_lost_at = NULL, updated_at = %s"
                    " WHERE driver_id = %s AND driver_lost_at IS NOT NULL"
                    " AND status IN ('picked_up', 'at_customer') RETURNING order_id",
                    (now, ev.driver_id),
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                await _flag(conn, row["order_id"], "",
                            "your driver is back: the delivery continues")  # fmt: skip
        self._wake.set()
        return str(row["order_id"])

    async def on_order(self, kind: str, o: order_pb2.Order) -> bool:
        """Ops took a lost delivery from its driver: back to the front of the pool."""
        if kind != EVENT_LOST_REASSIGNED:
            return False
        now = ts(self.clock())
        async with self.pool.connection() as conn, conn.transaction():
            moved = await all_(
                conn,
                ASSIGNMENTS,
                "UPDATE fleet.assignments SET status = 'pending', driver_id = '', front = true,"
                " excluded = array_append(excluded, driver_id), driver_lost_at = NULL,"
                " updated_at = %s WHERE order_id = %s AND status IN ('picked_up', 'at_customer')"
                f" RETURNING {ASSIGNMENT}",
                (now, o.order_id),
            )
            for a in moved:
                why = "the driver was lost after pickup: ops reassigned the order"
                await conn.execute(
                    "UPDATE fleet.offers SET status = 'revoked', reason = %s"
                    " WHERE order_id = %s AND status = 'accepted'",
                    (why, a.order_id),
                )
                await emit(conn, self.announce, "unassigned", a, None, why)
        return bool(moved)

    # -- telling Order -------------------------------------------------------------

    async def send_flags(self) -> int:
        """Sends the alerts owed to the Order service, oldest first per order; how many."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT DISTINCT ON (order_id) * FROM fleet.order_flags WHERE done_at IS NULL"
                " ORDER BY order_id, id LIMIT 100"
            )
            due = await cur.fetchall()
        sent = 0
        for f in due:
            req = order_pb2.FlagOrderRequest(
                order_id=f["order_id"], reason=f["reason"], driver_id=f["driver_id"],
                kind=_KINDS.get(f["kind"], order_pb2.ORDER_ALERT_KIND_UNSPECIFIED),
            )  # fmt: skip
            if f["lat"] is not None and f["lon"] is not None:
                req.last_known_location.CopyFrom(common_pb2.LatLng(lat=f["lat"], lon=f["lon"]))
            if f["bonus_minor"]:
                req.driver_bonus.CopyFrom(
                    common_pb2.Money(amount_minor=f["bonus_minor"], currency_code=f["currency"])
                )
            if f["free_cancel_after"] is not None:
                req.free_cancel_after.FromDatetime(f["free_cancel_after"])
            error = ""
            try:
                await self.orders.flag_order(req, deadline_s=2.0)
                sent += 1
            except Exception as exc:
                code = getattr(exc, "code", lambda: None)()
                if code is None or code.name not in ("FAILED_PRECONDITION", "NOT_FOUND",
                                                     "INVALID_ARGUMENT"):  # fmt: skip
                    error = str(exc)  # Order away: next pass
            async with self.pool.connection() as conn:
                if error:
                    await conn.execute(
                        "UPDATE fleet.order_flags SET attempts = attempts + 1, last_error = %s"
                        " WHERE id = %s",
                        (error[:500], f["id"]),
                    )
                else:  # told, or the order ended meanwhile: nothing left to tell
                    await conn.execute(
                        "UPDATE fleet.order_flags SET done_at = now() WHERE id = %s", (f["id"],)
                    )
        return sent

    async def run(self) -> None:
        """Escalates and tells Order, every ``rules.every_s`` (or at once when woken)."""
        failures = 0
        while True:
            try:
                await self.escalate_due()
                await self.send_flags()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: try again
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("escalation pass failed (%d in a row): %s", failures, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rules.every_s * (1 + min(failures, 5))):
                    await self._wake.wait()
            self._wake.clear()
