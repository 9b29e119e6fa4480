"""Wakes WatchOrder streams when their order changes: PostgreSQL LISTEN/NOTIFY.

Every committed change of an order (after its placement: nobody can watch an order
before it exists) runs ``pg_notify(channel, order_id)`` in its transaction, so the
notification exists only if the change does, and reaches every replica (they share
the database). One listening connection per process fans out to the streams watching
that order. A notification only says "look
again": streams read the timeline from PostgreSQL, so nothing is missed when a
notification is (a reconnect wakes everyone, and streams also re-read every
``poll_s``), and a slow stream costs one flag, never a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import psycopg
from psycopg import sql

from foodmesh.core.tasks import stop_tasks

__all__ = ["ChangeFeed"]

_log = logging.getLogger("foodmesh.order.watch")


class ChangeFeed:
    def __init__(self, postgres_url: str, channel: str) -> None:
        self.url = postgres_url
        self.channel = channel
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def watch(self, order_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``order_id`` may have changed (subscribe before reading)."""
        ev = asyncio.Event()
        self._watchers.setdefault(order_id, set()).add(ev)
        try:
            yield ev
        finally:
            group = self._watchers.get(order_id)
            if group is not None:
                group.discard(ev)
                if not group:
                    del self._watchers[order_id]

    def _wake(self, order_id: str | None) -> None:
        groups = (
            self._watchers.values() if order_id is None else [self._watchers.get(order_id, set())]
        )
        for group in groups:
            for ev in group:
                ev.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=2,
                    application_name="foodmesh-order-watch",
                ) as conn:  # fmt: skip
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    failures = 0
                    self._wake(None)  # anything committed while we were not listening
                    async for n in conn.notifies():
                        self._wake(n.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("order change feed lost (%d in a row): %s", failures, exc)
                self._wake(None)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="order-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
