"""The Order service's PostgreSQL (schema ``orders``): the only module here that runs SQL
(besides the sandbox processor's own ledger in ``sandbox.py``).

Each write is one transaction: the order row, its lines, its next timeline entry
and the outbox event announcing it commit together, with a ``NOTIFY`` that wakes
WatchOrder streams (delivered only on commit). A change locks the order's row
(``FOR UPDATE``) so two steps of one order never interleave.

PlaceOrder's writes are on its hot path, so each is one statement on an autocommit
connection (one round trip, no BEGIN/COMMIT): the idempotency claim, and the new
order with everything that comes with it (data-modifying CTEs, ``_INSERT_PLACED``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hmac
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from servers.order import metrics
from servers.order._pg import autocommit
from servers.order.confirm import ConfirmPlan
from servers.order.feed import FEED_PLACED_SQL, feed_append
from servers.order.model import Change, Entry, Line, Order
from servers.order.transitions import Status
from servers.runtime.outbox import OutboxEvent, enqueue_event, insert_sql, row_values

if TYPE_CHECKING:
    from servers.order.eta_stages import StageEstimates

__all__ = [
    "MAX_PIN_ATTEMPTS",
    "NOTIFY_CHANNEL",
    "Claim",
    "ClaimKind",
    "ListFilter",
    "OrderStore",
    "PinCheck",
]

NOTIFY_CHANNEL = "foodmesh_order_changed"
_SCHEMA = "orders"
_STALE_CLAIM = dt.timedelta(seconds=60)
#: Wrong delivery PINs an order takes before its PIN is locked (then only ops deliver it).
MAX_PIN_ATTEMPTS = 5

_ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order) if f.name not in ("items", "timeline")]
_SELECT = "SELECT " + ", ".join(_ORDER_COLUMNS) + " FROM orders.orders"
_INSERT_ORDER = (
    "INSERT INTO orders.orders (" + ", ".join(_ORDER_COLUMNS) + ") VALUES ("
    + ", ".join(f"%({c})s" for c in _ORDER_COLUMNS) + ")"
)  # fmt: skip
# A new order in one statement: the order row, its lines and timeline (from JSON),
# its idempotency key marked done, and its outbox event (``servers.runtime.outbox``'s
# row: ``enqueue`` cannot join a single statement).
_INSERT_PLACED = (
    "WITH placed AS (INSERT INTO orders.orders (" + ", ".join(_ORDER_COLUMNS) + ") VALUES ("
    + ", ".join(f"%({c})s" for c in _ORDER_COLUMNS) + ")),"
    " lines AS (INSERT INTO orders.order_items (order_id, position, item_id, name, quantity,"
    " unit_price_minor, line_total_minor, customizations, special_instructions)"
    " SELECT %(order_id)s, x.position, x.item_id, x.name, x.quantity, x.unit_price_minor,"
    " x.line_total_minor, x.customizations, x.special_instructions"
    " FROM jsonb_to_recordset(%(items)s) AS x(position smallint, item_id text, name text,"
    " quantity smallint, unit_price_minor bigint, line_total_minor bigint,"
    " customizations text[], special_instructions text)),"
    " entries AS (INSERT INTO orders.timeline (order_id, seq, status, actor, reason, at)"
    " SELECT %(order_id)s, x.seq, x.status, x.actor, x.reason, x.at"
    " FROM jsonb_to_recordset(%(timeline)s) AS x(seq integer, status text, actor text,"
    " reason text, at timestamptz)),"
    + FEED_PLACED_SQL
    + " deadline AS (INSERT INTO orders.confirm_deadlines (order_id, restaurant_id, due_at,"
    " auto, timeout_s) VALUES (%(order_id)s, %(restaurant_id)s, %(confirm_due_at)s,"
    " %(confirm_auto)s, %(confirm_timeout_s)s)),"
    " done AS (UPDATE orders.idempotency_keys SET state = 'done', order_id = %(order_id)s"
    " WHERE customer_id = %(customer_id)s AND key = %(idempotency_key)s) "
    + insert_sql(_SCHEMA)
)  # fmt: skip


class ClaimKind(enum.Enum):
    NEW = "new"  # this request owns the key: place the order
    DONE = "done"  # the key already made order_id with the same body
    PENDING = "pending"  # another request with this key is in flight
    CONFLICT = "conflict"  # the key was used with a different body


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    kind: ClaimKind
    order_id: str


class PinCheck(enum.Enum):
    OK = "ok"  # the customer's PIN
    WRONG = "wrong"  # counted as a wrong try
    LOCKED = "locked"  # too many wrong tries: not compared any more
    NO_PIN = "no_pin"  # an order placed before PINs were issued
    NOT_DUE = "not_due"  # no such order, or it is not in transit (nothing counted)


@dataclasses.dataclass(frozen=True, slots=True)
class ListFilter:
    customer_id: str = ""
    restaurant_id: str = ""
    driver_id: str = ""
    statuses: tuple[Status, ...] = ()


def _order(row: dict[str, Any], items: Sequence[Line], timeline: Sequence[Entry]) -> Order:
    values = dict(row)
    values["status"] = Status(values["status"])
    return Order(**values, items=tuple(items), timeline=tuple(timeline))


class OrderStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        #: Told of each committed change (the ETA's re-estimates per stage), when set.
        self.stages: StageEstimates | None = None

    # -- idempotency keys ------------------------------------------------------------

    async def claim_key(
        self, customer_id: str, key: str, request_hash: str, order_id: str, *, hold_s: float
    ) -> Claim:
        """Claims ``key`` for a new order ``order_id``, or says what the key already did.

        The claim is held ``hold_s`` (the request's deadline and a margin); a pending
        claim past that (its request died, or gave the key back with :meth:`expire_key`)
        is taken over by a request with the same body, *with the same order id*: the
        order and its card authorization (keyed by request, not by attempt) are then
        the ones the first attempt may already have made, never a second of each.
        """
        async with autocommit(self.pool) as conn:
            # The usual case, a fresh key, is this one statement (one round trip).
            cur = await conn.execute(
                "INSERT INTO orders.idempotency_keys (customer_id, key, request_hash,"
                " order_id, state, expires_at) VALUES (%s, %s, %s, %s, 'pending',"
                " now() + make_interval(secs => %s)) ON CONFLICT DO NOTHING",
                (customer_id, key, request_hash, order_id, hold_s),
            )
            if cur.rowcount == 1:
                return Claim(ClaimKind.NEW, order_id)
            return await self._existing_claim(conn, customer_id, key, request_hash, hold_s)

    async def _existing_claim(
        self,
        conn: AsyncConnection[Any],
        customer_id: str,
        key: str,
        request_hash: str,
        hold_s: float,
    ) -> Claim:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT request_hash, order_id, state,"
                " now() > coalesce(expires_at, claimed_at + %s) FROM orders.idempotency_keys"
                " WHERE customer_id = %s AND key = %s FOR UPDATE",
                (_STALE_CLAIM, customer_id, key),
            )
            row = await cur.fetchone()
            if row is None:  # released between our insert and select: try once more
                return Claim(ClaimKind.PENDING, "")
            stored_hash, stored_id, state, stale = row
            if stored_hash != request_hash:
                return Claim(ClaimKind.CONFLICT, stored_id)
            if state == "done":
                return Claim(ClaimKind.DONE, stored_id)
            if stale:
                await conn.execute(
                    "UPDATE orders.idempotency_keys SET claimed_at = now(),"
                    " expires_at = now() + make_interval(secs => %s)"
                    " WHERE customer_id = %s AND key = %s",
                    (hold_s, customer_id, key),
                )
                return Claim(ClaimKind.NEW, stored_id)
            return Claim(ClaimKind.PENDING, stored_id)

    async def release_key(self, customer_id: str, key: str) -> None:
        """Forgets a pending claim whose request created nothing (declined, failed)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM orders.idempotency_keys"
                " WHERE customer_id = %s AND key = %s AND state = 'pending'",
                (customer_id, key),
            )

    async def expire_key(self, customer_id: str, key: str) -> None:
        """Lets a retry of the same request take a pending claim over at once (same order id).

        For a request that may have left something behind (a card hold, an order whose
        commit was not confirmed): the retry finishes that attempt instead of a new one.
        """
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE orders.idempotency_keys SET expires_at = now()"
                " WHERE customer_id = %s AND key = %s AND state = 'pending'",
                (customer_id, key),
            )

    # -- writes ------------------------------------------------------------------------

    async def insert_order(
        self, o: Order, event: OutboxEvent, *, idempotency_key: str, confirm: ConfirmPlan
    ) -> None:
        """Writes a new order, its lines, its first timeline entry and its event, at once.

        One statement (data-modifying CTEs) in autocommit: one round trip, one
        transaction; if any part fails nothing is written. No NOTIFY: nobody can watch
        an order before it exists (WatchOrder answers NOT_FOUND), and a notifying
        commit takes PostgreSQL's global notification-queue lock.
        """
        values: dict[str, Any] = {c: getattr(o, c) for c in _ORDER_COLUMNS}
        values["status"] = o.status.value
        values["delivery_address"] = Jsonb(o.delivery_address)
        values["payment_pending"] = None
        values["items"] = Jsonb([
            {"position": i, "item_id": ln.item_id, "name": ln.name, "quantity": ln.quantity,
             "unit_price_minor": ln.unit_price_minor, "line_total_minor": ln.line_total_minor,
             "customizations": list(ln.customizations),
             "special_instructions": ln.special_instructions}
            for i, ln in enumerate(o.items)
        ])  # fmt: skip
        values["timeline"] = Jsonb([
            {"seq": e.seq, "status": e.status.value, "actor": e.actor, "reason": e.reason,
             "at": e.at.isoformat()}
            for e in o.timeline
        ])  # fmt: skip
        values["idempotency_key"] = idempotency_key
        values["alert"] = None
        values["feed_event"] = "placed" if o.released else "scheduled"
        values["confirm_due_at"] = confirm.due_at
        values["confirm_auto"] = confirm.auto
        values["confirm_timeout_s"] = confirm.timeout_s
        values.update(row_values(event))
        async with autocommit(self.pool) as conn:
            await conn.execute(_INSERT_PLACED, values)

    async def check_pin(self, order_id: str, pin: str) -> tuple[PinCheck, int]:
        """Compares ``pin`` with the PIN of an order in transit, counting a wrong one.

        Returns the outcome and the tries left. The row lock makes concurrent tries
        count one by one, so no more than ``MAX_PIN_ATTEMPTS`` are ever compared.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT delivery_pin, pin_attempts FROM orders.orders"
                " WHERE order_id = %s AND status = 'in_transit' FOR UPDATE",
                (order_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return PinCheck.NOT_DUE, 0
            stored, attempts = str(row[0]), int(row[1])
            if not stored:
                return PinCheck.NO_PIN, 0
            if attempts >= MAX_PIN_ATTEMPTS:
                return PinCheck.LOCKED, 0
            if hmac.compare_digest(stored.encode(), pin.encode()):
                return PinCheck.OK, MAX_PIN_ATTEMPTS - attempts
            await conn.execute(
                "UPDATE orders.orders SET pin_attempts = pin_attempts + 1 WHERE order_id = %s",
                (order_id,),
            )
            return PinCheck.WRONG, MAX_PIN_ATTEMPTS - attempts - 1

    async def _add_entry(self, conn: AsyncConnection[Any], order_id: str, e: Entry) -> None:
        await conn.execute(
            "INSERT INTO orders.timeline (order_id, seq, status, actor, reason, at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (order_id, e.seq, e.status.value, e.actor, e.reason, e.at),
        )

    async def _announce(self, conn: AsyncConnection[Any], order_id: str, ev: OutboxEvent) -> None:
        await enqueue_event(conn, _SCHEMA, ev)
        await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, order_id))

    async def apply(
        self,
        order_id: str,
        decide: Callable[[Order], Change | None],
        event_for: Callable[[Order, Entry, str], OutboxEvent],
    ) -> tuple[Order, bool] | None:
        """Locks the order, asks ``decide`` for a change and commits it with its event.

        Returns ``(order after, changed)``, or None if there is no such order.
        ``decide`` may raise to refuse (nothing is written) or return None when the
        change is already made (an idempotent repeat).
        """
        async with self.pool.connection() as conn, conn.transaction():
            return await self.apply_in(conn, order_id, decide, event_for)

    async def apply_in(
        self,
        conn: AsyncConnection[Any],
        order_id: str,
        decide: Callable[[Order], Change | None],
        event_for: Callable[[Order, Entry, str], OutboxEvent],
    ) -> tuple[Order, bool] | None:
        """:meth:`apply` inside the caller's transaction (a sweeper's, holding its lock)."""
        current = await self._load(conn, order_id, lock=True)
        if current is None:
            return None
        change = decide(current)
        if change is None:
            return current, False
        now = dt.datetime.now(dt.UTC)
        entry = Entry(current.last_seq + 1, change.status, now, change.actor, change.reason)
        after = dataclasses.replace(
            current,
            status=change.status,
            driver_id=current.driver_id if change.driver_id is None else change.driver_id,
            cancellation_reason=(
                current.cancellation_reason
                if change.cancellation_reason is None
                else change.cancellation_reason
            ),
            payment_pending=change.payment_pending or current.payment_pending,
            estimated_delivery_time=(
                change.estimated_delivery_time or current.estimated_delivery_time
            ),
            last_seq=entry.seq,
            updated_at=now,
            timeline=(*current.timeline, entry),
            alert=change.alert if change.set_alert else current.alert,
            free_cancel_after=(
                change.free_cancel_after if change.set_alert else current.free_cancel_after
            ),
        )
        await conn.execute(
            "UPDATE orders.orders SET status = %s, driver_id = %s, cancellation_reason = %s,"
            " payment_pending = %s, estimated_delivery_time = %s, last_seq = %s,"
            " updated_at = %s, alert = %s, free_cancel_after = %s WHERE order_id = %s",
            (after.status.value, after.driver_id, after.cancellation_reason,
             Jsonb(after.payment_pending) if after.payment_pending else None,
             after.estimated_delivery_time, after.last_seq, now,
             Jsonb(after.alert) if after.alert else None, after.free_cancel_after,
             order_id),
        )  # fmt: skip
        await self._add_entry(conn, order_id, entry)
        event = change.event or after.status.value
        await self._announce(conn, order_id, event_for(after, entry, change.event or ""))
        await feed_append(conn, after.restaurant_id, order_id, entry.seq, event)
        metrics.committed(current, after, at=now)
        if self.stages is not None:
            self.stages.committed(current, after, at=now)
        return after, True

    async def settle_payment(
        self, order_id: str, *, op_key: str, payment_status: str, refunded_minor: int
    ) -> Order | None:
        """Records what the provider confirmed, clearing the pending operation ``op_key``."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE orders.orders SET payment_status = %s, refunded_minor = %s,"
                " payment_pending = NULL, updated_at = now()"
                " WHERE order_id = %s AND payment_pending->>'key' = %s",
                (payment_status, refunded_minor, order_id, op_key),
            )
            return await self._load(conn, order_id, lock=False)

    async def release_due(
        self, now: dt.datetime, event_for: Callable[[Order], OutboxEvent], *, limit: int = 100
    ) -> list[str]:
        """Releases scheduled orders whose time has come, each exactly once.

        Row locks (``SKIP LOCKED``) and the ``released`` flag, committed with the
        event, make any number of replicas release each order once.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT order_id FROM orders.orders WHERE NOT released AND release_at <= %s"
                " ORDER BY release_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit),
            )
            ids = [r[0] for r in await cur.fetchall()]
            released = []
            for order_id in ids:
                await conn.execute(
                    "UPDATE orders.orders SET released = true WHERE order_id = %s", (order_id,)
                )
                o = await self._load(conn, order_id, lock=False)
                if o is not None and o.status is Status.PLACED:  # not if cancelled meanwhile
                    await self._announce(conn, order_id, event_for(o))
                    await feed_append(conn, o.restaurant_id, order_id, o.last_seq, "released")
                    released.append(order_id)
        return released

    async def pending_payments(self, limit: int = 100) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id FROM orders.orders WHERE payment_pending IS NOT NULL"
                " ORDER BY order_id LIMIT %s",
                (limit,),
            )
            return [r[0] for r in await cur.fetchall()]

    # -- reads -------------------------------------------------------------------------

    async def _load(self, conn: AsyncConnection[Any], order_id: str, *, lock: bool) -> Order | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SELECT + " WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
                              (order_id,))  # fmt: skip
            row = await cur.fetchone()
        if row is None:
            return None
        items, timeline = await self._children(conn, [order_id])
        return _order(row, items.get(order_id, []), timeline.get(order_id, []))

    async def _children(
        self, conn: AsyncConnection[Any], ids: list[str]
    ) -> tuple[dict[str, list[Line]], dict[str, list[Entry]]]:
        items: dict[str, list[Line]] = {i: [] for i in ids}
        timeline: dict[str, list[Entry]] = {i: [] for i in ids}
        cur = await conn.execute(
            "SELECT order_id, item_id, name, quantity, unit_price_minor, line_total_minor,"
            " customizations, special_instructions FROM orders.order_items"
            " WHERE order_id = ANY(%s) ORDER BY order_id, position",
            (ids,),
        )
        for oid, *rest in await cur.fetchall():
            rest[5] = tuple(rest[5])
            items[oid].append(Line(*rest))
        cur = await conn.execute(
            "SELECT order_id, seq, status, at, actor, reason FROM orders.timeline"
            " WHERE order_id = ANY(%s) ORDER BY order_id, seq",
            (ids,),
        )
        for oid, seq, status, at, actor, reason in await cur.fetchall():
            timeline[oid].append(Entry(seq, Status(status), at, actor, reason))
        return items, timeline

    async def exists(self, order_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM orders.orders WHERE order_id = %s", (order_id,))
            return await cur.fetchone() is not None

    async def get(self, order_id: str) -> Order | None:
        async with self.pool.connection() as conn:
            return await self._load(conn, order_id, lock=False)

    async def list_orders(self, f: ListFilter, *, before_id: str, limit: int) -> list[Order]:
        """Orders matching ``f``, newest first (ids sort by time), older than ``before_id``."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("customer_id", f.customer_id), ("restaurant_id", f.restaurant_id),
                              ("driver_id", f.driver_id)):  # fmt: skip
            if value:
                where.append(f"{column} = %s")
                args.append(value)
        if f.statuses:
            where.append("status = ANY(%s)")
            args.append([s.value for s in f.statuses])
        if before_id:
            where.append("order_id < %s")
            args.append(before_id)
        query = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY order_id DESC LIMIT %s"
        args.append(limit)
        async with self.pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, args)
                rows = await cur.fetchall()
            ids = [r["order_id"] for r in rows]
            items, timeline = await self._children(conn, ids)
        return [_order(r, items[r["order_id"]], timeline[r["order_id"]]) for r in rows]

    # -- ratings -----------------------------------------------------------------------

    async def add_rating(
        self, o: Order, *, restaurant_rating: int, review: str, driver_rating: int,
        food_rating: int = 0,
    ) -> bool:  # fmt: skip
        """Stores a rating of ``o``; False if the order was already rated."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO orders.ratings (order_id, customer_id, restaurant_id,"
                " restaurant_rating, restaurant_review, driver_id, driver_rating, food_rating)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (o.order_id, o.customer_id, o.restaurant_id, restaurant_rating, review,
                 o.driver_id, driver_rating, food_rating),
            )  # fmt: skip
            return cur.rowcount == 1

    async def get_rating(self, order_id: str) -> tuple[int, str, int, int] | None:
        """``(restaurant_rating, review, driver_rating, food_rating)`` of a rated order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT restaurant_rating, restaurant_review, driver_rating, food_rating"
                " FROM orders.ratings WHERE order_id = %s",
                (order_id,),
            )
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    async def unforwarded_restaurant_ratings(
        self, *, older_than_s: float = 10.0, limit: int = 100
    ) -> list[tuple[str, str, str, int, str, int, dt.datetime]]:
        """Ratings the Catalog has not confirmed taking, given ``older_than_s`` to their
        RateOrder: ``(order_id, customer_id, restaurant_id, rating, review, food_rating,
        created_at)``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id, customer_id, restaurant_id, restaurant_rating,"
                " restaurant_review, food_rating, created_at FROM orders.ratings"
                " WHERE NOT restaurant_forwarded"
                " AND created_at < now() - make_interval(secs => %s)"
                " ORDER BY created_at LIMIT %s",
                (older_than_s, limit),
            )
            return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in await cur.fetchall()]

    async def unforwarded_driver_ratings(self, limit: int = 100) -> list[tuple[str, str, int]]:
        """``(order_id, driver_id, rating)`` of driver ratings not yet taken by Dispatch."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id, driver_id, driver_rating FROM orders.ratings"
                " WHERE driver_rating > 0 AND NOT driver_forwarded AND driver_id <> ''"
                " ORDER BY order_id LIMIT %s",
                (limit,),
            )
            return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def mark_forwarded(self, order_id: str, *, restaurant: bool, driver: bool) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE orders.ratings SET restaurant_forwarded = restaurant_forwarded OR %s,"
                " driver_forwarded = driver_forwarded OR %s WHERE order_id = %s",
                (restaurant, driver, order_id),
            )
