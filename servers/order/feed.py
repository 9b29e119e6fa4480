"""A restaurant's live order feed: every change of its orders, numbered without gaps.

Each committed change of an order (placement included) appends a row to
``orders.restaurant_feed`` in its own transaction, numbered by the restaurant's row in
``orders.restaurant_feeds`` (``last_seq + 1`` under that row's lock): positions of one
restaurant commit in order, so a tablet resuming after position N (SSE
``Last-Event-ID``) gets exactly what followed. The SQL of the feed lives here, beside
the store's, because it joins the store's transactions.

:class:`FeedWaker` wakes the streams of a process: one query every ``poll_s`` reads
the head position of every restaurant watched here (whichever replica committed the
change), and sets the event of each whose head moved. Placement, on its hot path,
takes no ``NOTIFY`` (see ``store.insert_order``); one indexed read per replica per
poll costs less than a notification per order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.tasks import stop_tasks

__all__ = [
    "FEED_PLACED_SQL",
    "FeedEntry",
    "FeedWaker",
    "feed_append",
    "feed_head",
    "feed_oldest",
    "feed_since",
    "prune_feed",
]

_log = logging.getLogger("foodmesh.order.feed")

#: CTEs that append a new order's first feed row inside ``_INSERT_PLACED`` (parameters
#: ``restaurant_id``, ``order_id``, ``feed_event``).
FEED_PLACED_SQL = (
    " feedpos AS (INSERT INTO orders.restaurant_feeds AS f (restaurant_id, last_seq)"
    " VALUES (%(restaurant_id)s, 1) ON CONFLICT (restaurant_id)"
    " DO UPDATE SET last_seq = f.last_seq + 1 RETURNING last_seq),"
    " feedrow AS (INSERT INTO orders.restaurant_feed (restaurant_id, seq, order_id, order_seq,"
    " event) SELECT %(restaurant_id)s, last_seq, %(order_id)s, 1, %(feed_event)s"
    " FROM feedpos),"
)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One position of a restaurant's feed: which order's which timeline entry."""

    seq: int
    order_id: str
    order_seq: int
    event: str


async def feed_append(
    conn: AsyncConnection[Any], restaurant_id: str, order_id: str, order_seq: int, event: str
) -> int:
    """Appends one change to the restaurant's feed in the caller's transaction; its position."""
    cur = await conn.execute(
        "WITH pos AS (INSERT INTO orders.restaurant_feeds AS f (restaurant_id, last_seq)"
        " VALUES (%s, 1) ON CONFLICT (restaurant_id) DO UPDATE SET last_seq = f.last_seq + 1"
        " RETURNING last_seq)"
        " INSERT INTO orders.restaurant_feed (restaurant_id, seq, order_id, order_seq, event)"
        " SELECT %s, last_seq, %s, %s, %s FROM pos RETURNING seq",
        (restaurant_id, restaurant_id, order_id, order_seq, event),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def feed_head(pool: AsyncConnectionPool, restaurant_id: str) -> int:
    """The restaurant's last feed position (0 before its first order)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT last_seq FROM orders.restaurant_feeds WHERE restaurant_id = %s",
            (restaurant_id,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def feed_since(
    pool: AsyncConnectionPool, restaurant_id: str, after: int, *, limit: int = 200
) -> list[FeedEntry]:
    """The restaurant's feed after position ``after``, oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, order_id, order_seq, event FROM orders.restaurant_feed"
            " WHERE restaurant_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (restaurant_id, after, limit),
        )
        return [FeedEntry(int(r[0]), r[1], int(r[2]), r[3]) for r in await cur.fetchall()]


async def feed_oldest(pool: AsyncConnectionPool, restaurant_id: str) -> int:
    """The oldest position still kept (0: none); older ones were pruned."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT min(seq) FROM orders.restaurant_feed WHERE restaurant_id = %s",
            (restaurant_id,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def prune_feed(pool: AsyncConnectionPool, *, keep_s: float) -> int:
    """Forgets feed rows older than ``keep_s`` (a tablet away longer starts afresh)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM orders.restaurant_feed WHERE at < now() - make_interval(secs => %s)",
            (keep_s,),
        )
        return cur.rowcount


class FeedWaker:
    """Wakes this process's feed streams when their restaurant's head position moves."""

    def __init__(self, pool: AsyncConnectionPool, *, poll_s: float = 0.25) -> None:
        self.pool = pool
        self.poll_s = poll_s
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._heads: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, restaurant_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the restaurant's feed may have moved (subscribe, then read)."""
        ev = asyncio.Event()
        self._watchers.setdefault(restaurant_id, set()).add(ev)
        try:
            yield ev
        finally:
            group = self._watchers.get(restaurant_id)
            if group is not None:
                group.discard(ev)
                if not group:
                    del self._watchers[restaurant_id]
                    self._heads.pop(restaurant_id, None)

    async def poll_once(self) -> None:
        ids = list(self._watchers)
        if not ids:
            return
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT restaurant_id, last_seq FROM orders.restaurant_feeds"
                " WHERE restaurant_id = ANY(%s)",
                (ids,),
            )
            rows = await cur.fetchall()
        for rid, head in rows:
            if self._heads.get(rid) != head:
                self._heads[rid] = int(head)
                for ev in self._watchers.get(rid, ()):
                    ev.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: streams also re-read on their own
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("restaurant feed poll failed (%d in a row): %s", failures, exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="order-restaurant-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
