"""Transactional outbox and consumer inbox: events are never lost and never applied twice.

A service writes its state change and the event announcing it in ONE PostgreSQL
transaction (:func:`enqueue`). :class:`OutboxRelay` publishes pending rows to
NATS JetStream with ``Nats-Msg-Id`` set to the event's id, so the stream drops a
duplicate published twice (e.g. a relay killed between publish and mark), and
marks them published. Several relays (replicas) share the table through
``FOR UPDATE SKIP LOCKED``. Consumers record each event id in their own
transaction with :func:`first_delivery`, so a redelivered event is acknowledged
without being applied again.

This module is the outbox's one home: the event (:class:`OutboxEvent`), the row
(:func:`enqueue`, :func:`insert_sql`), the tables (:func:`outbox_ddl`) and the
relay's start-up (:class:`RelayStart`, through ``Resources.start_relay``).

The tables live in the owning service's schema. Order's and Fleet's were created by
their first migrations (``0001_orders.sql``, ``0001_fleet.sql``) before this DDL was
shared; those files stay as they are, because an applied migration never changes
(the runner refuses a file whose checksum moved) and a new one would be a no-op on
every database that has them. :func:`outbox_ddl` is the one source for a new
outbox; ``tests/integration/test_outbox.py`` checks that the tables both migrations
made are the ones it makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.nats import ensure_stream
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.telemetry import inject_headers
from servers.runtime.retry import retry

__all__ = [
    "OutboxEvent",
    "OutboxRelay",
    "RelayStart",
    "enqueue",
    "enqueue_event",
    "first_delivery",
    "insert_sql",
    "outbox_ddl",
    "row_values",
]

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


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event to publish: its id (the stream's dedupe key), subject and encoded payload."""

    event_id: str
    subject: str
    payload: bytes


def insert_sql(schema: str) -> str:
    """The INSERT of one outbox row, named parameters (see :func:`row_values`).

    For a service that writes its event inside a larger single statement (a
    data-modifying CTE), where :func:`enqueue` cannot join.
    """
    _schema(schema)
    return (
        f"INSERT INTO {schema}.outbox (event_id, subject, payload, headers)"
        " VALUES (%(event_id)s, %(subject)s, %(payload)s, %(headers)s)"
        " ON CONFLICT (event_id) DO NOTHING"
    )


def row_values(event: OutboxEvent, headers: Mapping[str, str] | None = None) -> dict[str, object]:
    """The parameters of :func:`insert_sql` for ``event``, with the current trace context."""
    return {
        "event_id": event.event_id,
        "subject": event.subject,
        "payload": event.payload,
        "headers": json.dumps(inject_headers(dict(headers or {}))),
    }


async def enqueue_event(conn: psycopg.AsyncConnection, schema: str, event: OutboxEvent) -> bool:
    """:func:`enqueue` of an :class:`OutboxEvent`."""
    return await enqueue(
        conn, schema, subject=event.subject, payload=event.payload, event_id=event.event_id
    )


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
    event = OutboxEvent(event_id=event_id, subject=subject, payload=payload)
    cur = await conn.execute(insert_sql(schema).encode(), row_values(event, headers))
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


#: Makes a service's relay once its stream is there: ``(pool, js, schema) -> relay``.
RelayFactory = Callable[[AsyncConnectionPool, JetStreamContext, str], OutboxRelay]


class RelayStart:
    """Declares the stream a service's outbox feeds, once NATS answers, then starts its relay.

    NATS is connected by the health checks, maybe after the service starts: until
    then each attempt fails and is tried again. ``make`` None declares the stream
    only (a service whose relay is switched off).
    """

    def __init__(
        self,
        *,
        js: Callable[[], JetStreamContext],
        pool: Callable[[], AsyncConnectionPool],
        stream: StreamConfig,
        schema: str,
        make: RelayFactory | None = OutboxRelay,
        on_start: Callable[[OutboxRelay], None] | None = None,
        retry_s: float = 0.1,
    ) -> None:
        self._js = js
        self._pool = pool
        self.stream = stream
        self.schema = schema
        self._make = make
        self._on_start = on_start
        self.retry_s = retry_s
        self.relay: OutboxRelay | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-start-{self.schema}")

    async def _declare(self) -> JetStreamContext:
        js = self._js()
        await ensure_stream(js, self.stream)
        return js

    async def _run(self) -> None:
        js = await retry(f"declaring stream {self.stream.name} for the {self.schema} outbox",
                         self._declare, first_s=self.retry_s, max_s=1.0, quiet_s=5.0,
                         log=_log)  # fmt: skip
        if self._make is not None:
            relay = self.relay = self._make(self._pool(), js, self.schema)
            if self._on_start is not None:
                self._on_start(relay)
            relay.start()

    async def stop(self) -> None:
        """Stops the start-up if it is still waiting, then the relay if it runs."""
        await stop_tasks([self._task])
        self._task = None
        if self.relay is not None:
            await self.relay.stop()
