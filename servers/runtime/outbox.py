"""Transactional outbox and consumer inbox: events are never lost and never applied twice.

A service writes its state change and the event announcing it in ONE PostgreSQL
transaction (:func:`enqueue`). :class:`OutboxRelay` publishes pending rows to
NATS JetStream with ``Nats-Msg-Id`` set to the event's id, so the stream drops a
duplicate published twice (e.g. a relay killed between publish and mark), and
marks them published. Several relays (replicas) share the table through
``FOR UPDATE SKIP LOCKED``. Consumers record each event id in their own
transaction with :func:`first_delivery`, so a redelivered event is acknowledged
without being applied again.

The tables live in the owning service's schema; its first migration includes
:func:`outbox_ddl` output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping

import psycopg
from nats.js import JetStreamContext
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.tasks import stop_tasks
from foodmesh.core.telemetry import inject_headers

__all__ = ["OutboxRelay", "enqueue", "first_delivery", "outbox_ddl"]

_log = logging.getLogger("foodmesh.outbox")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _schema(schema: str) -> sql.Identifier:
    if not _IDENT.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    return sql.Identifier(schema)


def outbox_ddl(schema: str) -> str:
    """The DDL of the outbox and inbox tables in ``schema`` (put it in a migration)."""
    _schema(schema)
    return f"""
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     text        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{{}}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON {schema}.outbox (id) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS {schema}.inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""


async def enqueue(
    conn: psycopg.AsyncConnection,
    schema: str,
    *,
    subject: str,
    payload: bytes,
    event_id: str,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Adds an event to the outbox inside the caller's transaction.

    Carries the current trace context in the headers, so the consumer's span
    continues this trace. Returns False if ``event_id`` was already enqueued
    (a retried write), which is not an error.
    """
    carried = inject_headers(dict(headers or {}))
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {}.outbox (event_id, subject, payload, headers) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING"
        ).format(_schema(schema)),
        (event_id, subject, payload, json.dumps(carried)),
    )
    return cur.rowcount == 1


async def first_delivery(
    conn: psycopg.AsyncConnection, schema: str, consumer: str, event_id: str
) -> bool:
    """Records ``event_id`` as processed by ``consumer`` in the caller's transaction.

    True the first time; False for a redelivery, whose effects were already
    committed with the first — the caller then skips the work and acks.
    """
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {}.inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        ).format(_schema(schema)),
        (consumer, event_id),
    )
    return cur.rowcount == 1


class OutboxRelay:
    """Publishes pending outbox rows to JetStream, oldest first, until stopped."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        js: JetStreamContext,
        schema: str,
        *,
        batch: int = 200,
        idle_poll_s: float = 0.05,
        publish_timeout_s: float = 2.0,
    ) -> None:
        self.pool = pool
        self.js = js
        self.schema = schema
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.publish_timeout_s = publish_timeout_s
        self.published = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._select = sql.SQL(
            "SELECT id, event_id, subject, payload, headers FROM {}.outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        ).format(_schema(schema))
        self._mark = sql.SQL("UPDATE {}.outbox SET published_at = now() WHERE id = ANY(%s)").format(
            _schema(schema)
        )

    def poke(self) -> None:
        """Asks for a pass now (call after committing an enqueue, to cut latency)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publishes one batch; returns how many rows it published."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(self._select, (self.batch,))
            rows = await cur.fetchall()
            if not rows:
                return 0
            acks = [
                self.js.publish(
                    subject,
                    bytes(payload),
                    timeout=self.publish_timeout_s,
                    headers={**headers, "Nats-Msg-Id": event_id},
                )
                for _id, event_id, subject, payload, headers in rows
            ]
            # Publish the batch concurrently; a failure aborts the transaction so
            # the rows stay pending and JetStream's dedupe absorbs any that got through.
            await asyncio.gather(*acks)
            await conn.execute(self._mark, ([r[0] for r in rows],))
        self.published += len(rows)
        return len(rows)

    async def _run(self) -> None:
        failures = 0
        last_report = time.monotonic()
        while True:
            try:
                n = await self.relay_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or PostgreSQL away: keep the rows, back off
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning(
                        "outbox %s: publish failed (%d in a row): %s", self.schema, failures, exc
                    )
                n = 0
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
            if n == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_poll_s):
                        await self._wake.wait()
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                _log.info("outbox %s: %d events published so far", self.schema, self.published)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")

    async def stop(self) -> None:
        """Stops after the batch in progress (its transaction either commits or rolls back)."""
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
