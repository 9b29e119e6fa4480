"""Nothing left waiting: the sweeps that end what nobody else will (I/O; the rules are in
``confirm.py`` and ``transitions.py``).

- **confirmation deadlines**: each placed order's row in ``orders.confirm_deadlines``
  (written with the order). When it is due the order is confirmed for the restaurant
  (auto-confirm) or cancelled with a full refund (the restaurant did not confirm in
  time). Each row is taken with ``FOR UPDATE SKIP LOCKED`` in the transaction of the
  order's change, so any number of replicas, restarted at any moment, act on each
  deadline once.
- **card holds of placements that never committed**: a placement killed after the card
  hold leaves its idempotency claim pending. Once the claim has lapsed by a grace period
  with no order written, the hold is voided (keyed by the payment: once, however often
  a sweep repeats) and the claim forgotten, under the claim's row lock: a retry of that
  request waits for the sweep, then meets the voided hold and is refused
  (``PAYMENT_AUTHORIZATION_VOIDED``: place it again with a new key).

The SQL of both lives here, beside the store's, as it runs in the same transactions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.events import CANCEL_CONFIRM_TIMEOUT
from servers.order.confirm import ConfirmSettings, timeout_reason
from servers.order.feed import prune_feed
from servers.order.model import Change, Entry, Order
from servers.order.notices import NoticeOf, warn_due
from servers.order.payments import HoldLookup
from servers.order.store import OrderStore
from servers.order.transitions import Status
from servers.runtime.outbox import OutboxEvent

__all__ = [
    "AUTO_CONFIRMED",
    "CONFIRM_TIMEOUTS",
    "HOLDS_VOIDED",
    "Sweeper",
    "get_settings",
    "put_settings",
]

_log = logging.getLogger("foodmesh.order.deadlines")

AUTO_CONFIRMED = Counter(
    "foodmesh_order_auto_confirmed_total", "Orders confirmed by their restaurant's auto-confirm."
)
CONFIRM_TIMEOUTS = Counter(
    "foodmesh_order_confirm_timeouts_total",
    "Orders cancelled (full refund) because their restaurant did not confirm in time.",
)
HOLDS_VOIDED = Counter(
    "foodmesh_order_orphan_holds_voided_total",
    "Card holds voided because the placement that made them never committed an order.",
)

EventOf = Callable[[Order, Entry, str], OutboxEvent]


async def get_settings(pool: AsyncConnectionPool, restaurant_id: str) -> ConfirmSettings:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT auto_confirm, auto_confirm_hours, confirm_timeout_s"
            " FROM orders.restaurant_settings WHERE restaurant_id = %s",
            (restaurant_id,),
        )
        row = await cur.fetchone()
    if row is None:
        return ConfirmSettings(restaurant_id)
    hours = tuple((int(a), int(b)) for a, b in (row[1] or []))
    return ConfirmSettings(restaurant_id, bool(row[0]), hours, int(row[2]))


async def put_settings(pool: AsyncConnectionPool, s: ConfirmSettings) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO orders.restaurant_settings (restaurant_id, auto_confirm,"
            " auto_confirm_hours, confirm_timeout_s) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (restaurant_id) DO UPDATE SET auto_confirm = excluded.auto_confirm,"
            " auto_confirm_hours = excluded.auto_confirm_hours,"
            " confirm_timeout_s = excluded.confirm_timeout_s, updated_at = now()",
            (s.restaurant_id, s.auto_confirm, Jsonb([list(h) for h in s.hours]), s.timeout_s),
        )


@dataclass(frozen=True, slots=True)
class Swept:
    """What one pass did: orders confirmed, cancelled, holds voided."""

    confirmed: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()
    voided: tuple[str, ...] = ()


class Sweeper:
    """The deadline and orphan-hold sweeps of one Order process."""

    def __init__(
        self,
        store: OrderStore,
        *,
        event: EventOf,
        holds: HoldLookup | None,
        hold_grace_s: float = 300.0,
        batch: int = 50,
        notice: NoticeOf | None = None,
    ) -> None:
        self.store = store
        self.notice = notice
        self.pool = store.pool
        self.event = event
        self.holds = holds
        self.hold_grace_s = hold_grace_s
        self.batch = batch

    async def _due(self) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id FROM orders.confirm_deadlines WHERE due_at <= now()"
                " ORDER BY due_at LIMIT %s",
                (self.batch,),
            )
            return [r[0] for r in await cur.fetchall()]

    async def confirm_deadlines(self) -> Swept:
        """One pass over due confirmation deadlines; returns the orders confirmed / cancelled."""
        confirmed: list[str] = []
        cancelled: list[str] = []
        for order_id in await self._due():
            outcome = await self._one_deadline(order_id)
            if outcome == "confirmed":
                confirmed.append(order_id)
            elif outcome == "cancelled":
                cancelled.append(order_id)
        return Swept(tuple(confirmed), tuple(cancelled))

    async def warn_confirm_due(self) -> list[str]:
        """One pass warning restaurants whose confirmation deadline is near (``notices.py``)."""
        if self.notice is None:
            return []
        async with self.pool.connection() as conn, conn.transaction():
            now = dt.datetime.now(dt.UTC)
            return await warn_due(conn, lambda c, oid: self.store._load(c, oid, lock=False),
                                  self.notice, now=now, batch=self.batch)  # fmt: skip

    async def _one_deadline(self, order_id: str) -> str:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT auto, timeout_s FROM orders.confirm_deadlines"
                " WHERE order_id = %s AND due_at <= now() FOR UPDATE SKIP LOCKED",
                (order_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return ""  # another replica has it, or it went meanwhile
            auto, timeout_s = bool(row[0]), int(row[1])
            outcome = ""

            def decide(o: Order) -> Change | None:
                nonlocal outcome
                if not o.released and o.status is Status.PLACED:
                    outcome = "not_yet"  # a scheduled order not yet in the kitchen
                    return None
                if o.status is not Status.PLACED:
                    return None  # confirmed or cancelled in time: nothing to do
                if auto:
                    outcome = "confirmed"
                    why = "confirmed automatically (the restaurant's auto-confirm)"
                    return Change(status=Status.CONFIRMED, actor="auto-confirm", reason=why)
                outcome = "cancelled"
                why = timeout_reason(timeout_s)
                return Change(
                    status=Status.CANCELLED,
                    actor="order-service",
                    reason=f"{why} (full refund)",
                    cancellation_reason=f"{CANCEL_CONFIRM_TIMEOUT}: {why}",
                    payment_pending={"op": "refund", "amount": o.total_minor, "kept": 0,
                                     "key": f"cancel:{o.order_id}"},
                )  # fmt: skip

            await self.store.apply_in(conn, order_id, decide, self.event)
            if outcome == "not_yet":
                return ""
            await conn.execute(
                "DELETE FROM orders.confirm_deadlines WHERE order_id = %s", (order_id,)
            )
        if outcome == "confirmed":
            AUTO_CONFIRMED.inc()
        elif outcome == "cancelled":
            CONFIRM_TIMEOUTS.inc()
            _log.info("order %s cancelled: its restaurant did not confirm in time", order_id)
        return outcome

    async def orphan_holds(self) -> Swept:
        """One pass over lapsed placements that left a card hold and no order."""
        if self.holds is None:
            return Swept()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT customer_id, key FROM orders.idempotency_keys WHERE state = 'pending'"
                " AND coalesce(expires_at, claimed_at + interval '60 seconds')"
                "     < now() - make_interval(secs => %s) LIMIT %s",
                (self.hold_grace_s, self.batch),
            )
            claims = [(r[0], r[1]) for r in await cur.fetchall()]
        voided: list[str] = []
        for customer_id, key in claims:
            voided += await self._one_claim(customer_id, key)
        return Swept(voided=tuple(voided))

    async def _one_claim(self, customer_id: str, key: str) -> list[str]:
        assert self.holds is not None
        voided: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT order_id FROM orders.idempotency_keys WHERE customer_id = %s AND key = %s"
                " AND state = 'pending' AND coalesce(expires_at, claimed_at"
                " + interval '60 seconds') < now() - make_interval(secs => %s)"
                " FOR UPDATE SKIP LOCKED",
                (customer_id, key, self.hold_grace_s),
            )
            row = await cur.fetchone()
            if row is None:
                return []  # taken over by a retry, done, or another replica's
            order_id = str(row[0])
            cur = await conn.execute("SELECT 1 FROM orders.orders WHERE order_id = %s", (order_id,))
            if await cur.fetchone() is not None:
                return []  # pragma: no cover - a committed order marks its claim done
            # Under the claim's lock: a retry of this request waits until we are done.
            for hold in await self.holds.holds_for(reference=order_id):
                if hold.status == "authorized":
                    await self.holds.void(key=f"void-orphan:{hold.payment_id}",
                                          payment_id=hold.payment_id,
                                          amount_minor=hold.amount_minor)  # fmt: skip
                    voided.append(hold.payment_id)
            await conn.execute(
                "DELETE FROM orders.idempotency_keys WHERE customer_id = %s AND key = %s",
                (customer_id, key),
            )
        for pid in voided:
            HOLDS_VOIDED.inc()
            _log.warning("voided card hold %s: its placement (order %s) never committed",
                         pid, order_id)  # fmt: skip
        return voided

    async def prune(self, *, keep_s: float) -> None:
        """Forgets the restaurants' feed positions older than ``keep_s``."""
        await prune_feed(self.pool, keep_s=keep_s)
