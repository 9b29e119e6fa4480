"""The transactional outbox and inbox against real PostgreSQL and NATS JetStream."""

from __future__ import annotations

import nats
import nats.errors
import psycopg
import pytest
from nats.js.api import StreamConfig
from opentelemetry import trace
from psycopg_pool import AsyncConnectionPool

from foodmesh.core import telemetry
from foodmesh.core.nats import Subjects, ensure_stream
from servers.runtime.outbox import OutboxRelay, enqueue, first_delivery, outbox_ddl


@pytest.fixture
async def pool(pg_url: str) -> AsyncConnectionPool:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA orders;" + outbox_ddl("orders"))
    p = AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


async def test_only_committed_events_are_published_once_each(
    pool: AsyncConnectionPool, nats_url: str, namespace: str
) -> None:
    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        stream = subjects.stream("ORDERS")
        await ensure_stream(
            js, StreamConfig(name=stream, subjects=[subjects.subject("orders.v1.>")])
        )
        for i in range(20):
            async with pool.connection() as conn, conn.transaction():
                await enqueue(
                    conn,
                    "orders",
                    subject=subjects.subject("orders.v1.placed"),
                    payload=f"order-{i}".encode(),
                    event_id=f"evt-{i}",
                )
        with pytest.raises(RuntimeError):
            async with pool.connection() as conn, conn.transaction():
                await enqueue(
                    conn,
                    "orders",
                    subject=subjects.subject("orders.v1.placed"),
                    payload=b"rolled back",
                    event_id="evt-rb",
                )
                raise RuntimeError("the order write failed, so the event must not exist")
        async with pool.connection() as conn, conn.transaction():
            again = await enqueue(
                conn,
                "orders",
                subject=subjects.subject("orders.v1.placed"),
                payload=b"order-0",
                event_id="evt-0",
            )
        assert again is False  # a retried write enqueues nothing new

        relay = OutboxRelay(pool, js, "orders", batch=7)
        while await relay.relay_once():
            pass
        assert relay.published == 20
        # A relay that died after publishing but before marking publishes again:
        # JetStream's Nats-Msg-Id dedupe keeps the stream at one copy each.
        async with pool.connection() as conn:
            await conn.execute("UPDATE orders.outbox SET published_at = NULL WHERE id % 2 = 0")
        while await relay.relay_once():
            pass
        info = await js.stream_info(stream)
        assert info.state.messages == 20

        sub = await js.pull_subscribe(
            subjects.subject("orders.v1.placed"), durable=None, stream=stream
        )
        msgs = await sub.fetch(20, timeout=2)
        assert sorted(m.data for m in msgs) == sorted(f"order-{i}".encode() for i in range(20))
        assert {m.headers["Nats-Msg-Id"] for m in msgs if m.headers} == {
            f"evt-{i}" for i in range(20)
        }
    finally:
        await nc.close()


async def test_relay_keeps_events_while_nats_is_unreachable(
    pool: AsyncConnectionPool, nats_url: str, namespace: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    async with pool.connection() as conn, conn.transaction():
        await enqueue(
            conn, "orders", subject=f"{namespace}.nostream.x", payload=b"x", event_id="e1"
        )
    relay = OutboxRelay(pool, js, "orders", publish_timeout_s=0.3)
    with pytest.raises(nats.errors.Error):  # no stream takes that subject: publish is not acked
        await relay.relay_once()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM orders.outbox WHERE published_at IS NULL")
        assert await cur.fetchone() == (1,)
    await nc.close()


async def test_a_redelivered_event_is_processed_once(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn, conn.transaction():
        assert await first_delivery(conn, "orders", "dispatch", "evt-1") is True
    async with pool.connection() as conn, conn.transaction():
        assert await first_delivery(conn, "orders", "dispatch", "evt-1") is False
        assert await first_delivery(conn, "orders", "pricing", "evt-1") is True


def test_outbox_ddl_refuses_a_bad_schema_name() -> None:
    with pytest.raises(ValueError):
        outbox_ddl("orders; DROP TABLE x")
    assert "orders.outbox" in outbox_ddl("orders")


async def test_enqueue_carries_the_trace_context_to_consumers(pool: AsyncConnectionPool) -> None:
    telemetry.setup_tracing("test", exporter="memory")
    with trace.get_tracer("test").start_as_current_span("place-order") as span:
        async with pool.connection() as conn, conn.transaction():
            await enqueue(conn, "orders", subject="s", payload=b"p", event_id="traced")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT headers FROM orders.outbox WHERE event_id = 'traced'")
        row = await cur.fetchone()
    assert row is not None
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert trace_id in row[0]["traceparent"]


async def _shape(conn: psycopg.AsyncConnection, schema: str) -> dict[str, object]:
    """The outbox and inbox of ``schema`` as PostgreSQL describes them, schema name left out."""
    cols = await conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name IN ('outbox', 'inbox') ORDER BY table_name, ordinal_position",
        (schema,),
    )
    idx = await conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
        " AND tablename IN ('outbox', 'inbox') ORDER BY indexname",
        (schema,),
    )
    unqualified = lambda v: v.replace(f"{schema}.", "") if isinstance(v, str) else v  # noqa: E731
    return {
        "columns": [tuple(unqualified(v) for v in r) for r in await cols.fetchall()],
        "indexes": [tuple(unqualified(v) for v in r) for r in await idx.fetchall()],
    }


async def test_the_migrated_outboxes_are_the_ones_outbox_ddl_makes(pg_url: str) -> None:
    from servers import dispatch, order
    from servers.runtime.migrate import load_migrations, migrate

    for spec in (order.SPEC, dispatch.SPEC):
        assert spec.migrations is not None
        await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA shared;" + outbox_ddl("shared"))
        shared = await _shape(conn, "shared")
        assert len(shared["columns"]) == 10 and len(shared["indexes"]) == 4  # type: ignore[arg-type]
        assert await _shape(conn, "orders") == shared
        assert await _shape(conn, "fleet") == shared
