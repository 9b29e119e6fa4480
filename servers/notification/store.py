"""The only module that runs SQL for Notification (schema ``notify``).

An event's notices and deliveries are written in one transaction, each keyed
(``ON CONFLICT DO NOTHING``): a redelivered event writes nothing new. Senders claim
due deliveries with ``FOR UPDATE SKIP LOCKED`` and a lease, so replicas share the work
and a delivery whose sender died mid-send is taken again once its lease lapses.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from servers.notification.plan import Planned, Prefs, PushTarget
from servers.notification.rules import Notice
from servers.notification.templates import Rendered

__all__ = [
    "Claimed",
    "DeliveryRow",
    "InboxRow",
    "NotificationStore",
    "Recorded",
]


@dataclass(frozen=True, slots=True)
class InboxRow:
    notification_id: str
    recipient: str
    event_type: str
    order_id: str
    title: str
    body: str
    created_at: dt.datetime
    read_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event written: the new inbox rows and how many deliveries wait to be sent."""

    inbox: list[InboxRow]
    queued: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a sender holds: what to send, where, and the how-manieth attempt."""

    delivery_id: str
    notification_id: str
    recipient: str
    channel: str
    destination: str
    message: dict[str, Any]
    attempts: int
    #: It was being sent when its sender stopped: it may have gone out already.
    in_doubt: bool


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    notification_id: str
    recipient: str
    event_type: str
    channel: str
    state: str
    destination: str
    attempts: int
    reason: str
    updated_at: dt.datetime


_DELIVERY = (
    "delivery_id, notification_id, recipient, event_type, channel, state, destination,"
    " attempts, reason, updated_at"
)
_INBOX = "notification_id, recipient, event_type, order_id, title, body, created_at, read_at"


class NotificationStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # -- what orders concern whom ------------------------------------------------------

    async def remember_order(
        self, order_id: str, *, customer_id: str = "", restaurant_id: str = "", driver_id: str = ""
    ) -> None:
        """Keeps who an order concerns; an empty value leaves what is known."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO notify.orders AS o (order_id, customer_id, restaurant_id, driver_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (order_id) DO UPDATE SET"
                " customer_id = COALESCE(NULLIF(EXCLUDED.customer_id, ''), o.customer_id),"
                " restaurant_id = COALESCE(NULLIF(EXCLUDED.restaurant_id, ''), o.restaurant_id),"
                " driver_id = COALESCE(NULLIF(EXCLUDED.driver_id, ''), o.driver_id),"
                " updated_at = now()",
                (order_id, customer_id, restaurant_id, driver_id),
            )  # fmt: skip

    async def remember_orders(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """:meth:`remember_order` for many ``(order, customer, restaurant, driver)`` at once."""
        if not rows:
            return
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO notify.orders AS o (order_id, customer_id, restaurant_id, driver_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (order_id) DO UPDATE SET"
                " customer_id = COALESCE(NULLIF(EXCLUDED.customer_id, ''), o.customer_id),"
                " restaurant_id = COALESCE(NULLIF(EXCLUDED.restaurant_id, ''), o.restaurant_id),"
                " driver_id = COALESCE(NULLIF(EXCLUDED.driver_id, ''), o.driver_id),"
                " updated_at = now()",
                list(rows),
            )

    async def order_people(self, order_id: str) -> tuple[str, str, str] | None:
        """(customer, restaurant, last driver) of an order, if its events were seen."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT customer_id, restaurant_id, driver_id FROM notify.orders"
                " WHERE order_id = %s",
                (order_id,),
            )
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], row[2])

    # -- preferences and subscriptions -------------------------------------------------

    async def prefs(self, recipients: Iterable[str]) -> dict[str, Prefs]:
        """Stored preferences of those that have them."""
        ids = sorted(set(recipients))
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                "SELECT * FROM notify.preferences WHERE recipient = ANY(%s)", (ids,)
            )
            rows = await cur.fetchall()
        return {r["recipient"]: _prefs(r) for r in rows}

    async def set_prefs(self, recipient: str, p: Prefs) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO notify.preferences (recipient, email, phone, locale, events,"
                " quiet_start_minute, quiet_end_minute, utc_offset_minutes)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (recipient) DO UPDATE SET"
                " email = EXCLUDED.email, phone = EXCLUDED.phone, locale = EXCLUDED.locale,"
                " events = EXCLUDED.events, quiet_start_minute = EXCLUDED.quiet_start_minute,"
                " quiet_end_minute = EXCLUDED.quiet_end_minute,"
                " utc_offset_minutes = EXCLUDED.utc_offset_minutes, updated_at = now()",
                (recipient, p.email, p.phone, p.locale,
                 Jsonb({k: list(v) for k, v in p.events.items()}),
                 p.quiet_start_minute, p.quiet_end_minute, p.utc_offset_minutes),
            )  # fmt: skip

    async def pushes(self, recipients: Iterable[str]) -> dict[str, list[PushTarget]]:
        """The live push subscriptions of each recipient."""
        ids = sorted(set(recipients))
        out: dict[str, list[PushTarget]] = {}
        if not ids:
            return out
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT recipient, subscription_id, endpoint, p256dh, auth"
                " FROM notify.push_subscriptions WHERE recipient = ANY(%s) AND gone_at IS NULL"
                " ORDER BY created_at",
                (ids,),
            )
            for r in await cur.fetchall():
                out.setdefault(r[0], []).append(PushTarget(r[1], r[2], r[3], r[4]))
        return out

    async def add_push(self, recipient: str, endpoint: str, p256dh: str, auth: str) -> str:
        """Registers (or moves to ``recipient``, with new keys) a subscription; its id."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO notify.push_subscriptions"
                " (subscription_id, recipient, endpoint, p256dh, auth) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (endpoint) DO UPDATE SET recipient = EXCLUDED.recipient,"
                " p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth, gone_at = NULL"
                " RETURNING subscription_id",
                ("ps_" + uuid.uuid4().hex[:20], recipient, endpoint, p256dh, auth),
            )
            row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    async def push_gone(self, subscription_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notify.push_subscriptions SET gone_at = now() WHERE subscription_id = %s",
                (subscription_id,),
            )

    # -- recording an event ------------------------------------------------------------

    async def record(self, items: Sequence[tuple[Notice, Rendered, list[Planned]]]) -> Recorded:
        """Writes the notices and their deliveries in one transaction; repeats write nothing."""
        if not items:
            return Recorded([], 0)
        inbox: list[InboxRow] = []
        queued = 0
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO notify.notifications (notification_id, event_id, recipient,"
                " dedupe_key, event_type, order_id, title, body)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                f" RETURNING {_INBOX}",
                [(n.notification_id, n.event_id, n.recipient, n.dedupe_key, n.event_type,
                  n.order_id, w.title, w.text) for n, w, _ in items],
                returning=True,
            )  # fmt: skip
            made: set[str] = set()
            while True:
                row = await cur.fetchone()
                if row is not None:  # else this event, or this notice of another, was kept
                    inbox.append(InboxRow(*row))
                    made.add(row[0])
                if not cur.nextset():
                    break
            deliveries = [
                (p.delivery_id, n.notification_id, n.recipient, n.event_type, p.channel,
                 p.state, p.destination, Jsonb(dict(p.message)), p.next_at, p.reason)
                for n, _, planned in items if n.notification_id in made for p in planned
            ]  # fmt: skip
            if deliveries:
                await cur.executemany(
                    "INSERT INTO notify.deliveries (delivery_id, notification_id, recipient,"
                    " event_type, channel, state, destination, message, next_at, reason)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    deliveries,
                )
            queued = sum(1 for d in deliveries if d[5] == "queued")
        return Recorded(inbox, queued)

    # -- sending -----------------------------------------------------------------------

    async def claim(self, limit: int, *, lease_s: float) -> list[Claimed]:
        """Takes up to ``limit`` due deliveries (and any whose sender's lease lapsed)."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE notify.deliveries d SET state = 'sending', attempts = d.attempts + 1,"
                " lease_until = now() + make_interval(secs => %s), updated_at = now()"
                " FROM (SELECT delivery_id, state AS was FROM notify.deliveries"
                "       WHERE state IN ('queued', 'sending') AND next_at <= now()"
                "         AND (state = 'queued' OR lease_until < now())"
                "       ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED) due"
                " WHERE d.delivery_id = due.delivery_id"
                " RETURNING d.delivery_id, d.notification_id, d.recipient, d.channel,"
                " d.destination, d.message, d.attempts, due.was = 'sending'",
                (lease_s, limit),
            )
            rows = await cur.fetchall()
        return [
            Claimed(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5] if isinstance(r[5], dict) else json.loads(r[5]),
                r[6],
                bool(r[7]),
            )  # fmt: skip
            for r in rows
        ]

    async def extend(self, delivery_ids: Sequence[str], *, lease_s: float) -> None:
        """Renews the leases of deliveries still being sent (their sender is alive)."""
        if not delivery_ids:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notify.deliveries SET lease_until = now() + make_interval(secs => %s)"
                " WHERE delivery_id = ANY(%s) AND state = 'sending'",
                (lease_s, list(delivery_ids)),
            )

    async def next_due(self) -> dt.datetime | None:
        """When the next queued delivery is due (for the sender's sleep)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT min(CASE WHEN state = 'queued' THEN next_at ELSE lease_until END)"
                " FROM notify.deliveries WHERE state IN ('queued', 'sending')"
            )
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def settle(self, delivery_id: str, state: str, reason: str = "") -> None:
        """Records a delivery's outcome: sent, delivered, or failed for good (a dead letter)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notify.deliveries SET state = %s, reason = %s, lease_until = NULL,"
                " dead = %s, updated_at = now() WHERE delivery_id = %s",
                (state, reason, state == "failed", delivery_id),
            )

    async def settle_many(self, outcomes: Sequence[tuple[str, str, str]]) -> None:
        """:meth:`settle` of many ``(delivery, state, reason)`` in one transaction."""
        if not outcomes:
            return
        # One statement (arrays, not a row per outcome): one round trip, one commit.
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notify.deliveries d SET state = o.state, reason = o.reason,"
                " lease_until = NULL, dead = o.state = 'failed', updated_at = now()"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS o(delivery_id, state, reason)"
                " WHERE d.delivery_id = o.delivery_id",
                ([o[0] for o in outcomes], [o[1] for o in outcomes], [o[2] for o in outcomes]),
            )

    async def retry_at(self, delivery_id: str, when: dt.datetime, reason: str) -> None:
        """Puts a failed attempt back in the queue until ``when``."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE notify.deliveries SET state = 'queued', reason = %s, next_at = %s,"
                " lease_until = NULL, updated_at = now() WHERE delivery_id = %s",
                (reason, when, delivery_id),
            )

    # -- reading -----------------------------------------------------------------------

    async def inbox(
        self, recipient: str, *, unread_only: bool, limit: int, before: tuple[str, str] | None
    ) -> tuple[list[InboxRow], int]:
        """A page of the inbox, newest first, after the cursor; and the unread count."""
        where = "recipient = %s"
        args: list[Any] = [recipient]
        if unread_only:
            where += " AND read_at IS NULL"
        if before is not None:
            where += " AND (created_at, notification_id) < (%s::timestamptz, %s)"
            args += list(before)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_INBOX} FROM notify.notifications WHERE {where}"
                " ORDER BY created_at DESC, notification_id DESC LIMIT %s",
                (*args, limit),
            )
            rows = [InboxRow(*r) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT count(*) FROM notify.notifications WHERE recipient = %s"
                " AND read_at IS NULL",
                (recipient,),
            )
            unread = await cur.fetchone()
        return rows, int(unread[0]) if unread else 0

    async def mark_read(self, recipient: str, ids: Sequence[str], *, every: bool) -> int:
        async with self.pool.connection() as conn:
            if every:
                cur = await conn.execute(
                    "UPDATE notify.notifications SET read_at = now()"
                    " WHERE recipient = %s AND read_at IS NULL",
                    (recipient,),
                )
            else:
                cur = await conn.execute(
                    "UPDATE notify.notifications SET read_at = now() WHERE recipient = %s"
                    " AND notification_id = ANY(%s) AND read_at IS NULL",
                    (recipient, list(ids)),
                )
            return cur.rowcount

    async def owner_of(self, notification_id: str) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT recipient FROM notify.notifications WHERE notification_id = %s",
                (notification_id,),
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def deliveries_of(self, notification_id: str) -> list[DeliveryRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_DELIVERY} FROM notify.deliveries WHERE notification_id = %s"
                " ORDER BY channel, delivery_id",
                (notification_id,),
            )
            return [DeliveryRow(*r) for r in await cur.fetchall()]

    async def dead_letters(self, limit: int) -> tuple[list[DeliveryRow], int]:
        # The page and the count in one statement (one snapshot): in two, a delivery that
        # died between them was counted but not listed.
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_DELIVERY}, count(*) OVER () FROM notify.deliveries WHERE dead"
                " ORDER BY updated_at DESC LIMIT %s",
                (limit,),
            )
            got = await cur.fetchall()
        return [DeliveryRow(*r[:-1]) for r in got], int(got[0][-1]) if got else 0

    async def counts(self) -> dict[tuple[str, str], int]:
        """Deliveries per (channel, state): what the metrics export."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT channel, state, count(*) FROM notify.deliveries GROUP BY 1, 2"
            )
            return {(r[0], r[1]): int(r[2]) for r in await cur.fetchall()}

    # -- keys --------------------------------------------------------------------------

    async def key(self, name: str, make: str) -> str:
        """The stored key ``name``; ``make`` is stored first if there is none (first wins)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO notify.keys (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, make),
            )
            cur = await conn.execute("SELECT value FROM notify.keys WHERE name = %s", (name,))
            row = await cur.fetchone()
        assert row is not None
        return str(row[0])


def _prefs(r: dict[str, Any]) -> Prefs:
    events = r["events"] if isinstance(r["events"], dict) else json.loads(r["events"])
    return Prefs(
        email=r["email"],
        phone=r["phone"],
        locale=r["locale"],
        events={k: tuple(v) for k, v in events.items()},
        quiet_start_minute=r["quiet_start_minute"],
        quiet_end_minute=r["quiet_end_minute"],
        utc_offset_minutes=r["utc_offset_minutes"],
    )
