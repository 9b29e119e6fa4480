"""Where quotes are kept, against a real Redis: each quote stored with its expiry, over the
lean pipelined connection and over redis-py alike, and failures that say so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from foodmesh.core.redis import Keys
from foodmesh.v1 import pricing_pb2 as ppb
from servers.pricing.quotes import QuoteBook
from servers.runtime.redis_wire import RedisWire
from tests.integration._pricing import pricing_mesh, quote_request

pytestmark = pytest.mark.integration


@pytest.fixture(params=["wire", "redis-py"])
async def book(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> AsyncIterator[QuoteBook]:
    wire = RedisWire(redis_url, connect_timeout=2.0) if request.param == "wire" else None
    b = QuoteBook(redis_client, Keys(namespace), wire=wire, timeout_s=2.0)
    try:
        yield b
    finally:
        await b.close()


async def test_concurrent_quotes_are_each_stored_with_their_expiry(
    book: QuoteBook, redis_client: aioredis.Redis, namespace: str
) -> None:
    # redis-py takes a pooled connection per command in flight (at most 100 by default).
    n = 300 if book.wire is not None else 60
    quotes = {f"q_{i:04d}": f"quote {i}".encode() * (1 + i % 7) for i in range(n)}
    await asyncio.gather(*(book.put(k, v, ttl_ms=60_000) for k, v in quotes.items()))
    assert book.key("q_0001") == f"{namespace}:quote:q_0001"
    got = await asyncio.gather(*(book.get(k) for k in quotes))
    assert dict(zip(quotes, got, strict=True)) == quotes
    ttl = await redis_client.pttl(book.key("q_0042"))
    assert 50_000 < ttl <= 60_000
    assert await redis_client.get(book.key("q_0042")) == quotes["q_0042"]
    assert await book.get("q_unknown") is None


async def test_a_quote_is_gone_once_its_time_to_live_has_passed(book: QuoteBook) -> None:
    await book.put("q_short", b"short-lived", ttl_ms=100)
    await book.put("q_long", b"long-lived", ttl_ms=60_000)
    await asyncio.sleep(0.3)
    assert await book.get("q_short") is None
    assert await book.get("q_long") == b"long-lived"


async def test_redis_away_or_silent_is_an_error_not_a_hang(redis_url: str) -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    wire = RedisWire("redis://127.0.0.1:1/0", connect_timeout=0.2)
    away = QuoteBook(client, Keys("x"), wire=wire, timeout_s=0.2)
    try:
        with pytest.raises(RedisError):
            await away.put("q_1", b"x", ttl_ms=1000)
        with pytest.raises(RedisError):
            await away.get("q_1")
    finally:
        await away.close()
        await client.aclose()

    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis.from_url(redis_url)
    wire = RedisWire(f"redis://127.0.0.1:{port}/0", connect_timeout=0.2)
    silent = QuoteBook(client, Keys("x"), wire=wire, timeout_s=0.2)
    try:
        with pytest.raises(RedisError):  # bounded by timeout_s, then the connection is dropped
            await silent.put("q_1", b"x", ttl_ms=1000)
        with pytest.raises(RedisError):
            await silent.put("q_2", b"x", ttl_ms=1000)
    finally:
        await silent.close()
        await client.aclose()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_the_service_stores_every_quote_it_gives_for_its_time_to_live(
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    redis_client: aioredis.Redis,
) -> None:
    async with (
        pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                     state_dir=tmp_path, with_order=False, with_location=False) as mesh,
        mesh.client() as svc,
    ):  # fmt: skip
        got = await asyncio.gather(*(svc.quote_order(quote_request(f"c{i}")) for i in range(40)))
        quotes = [g.quote for g in got]
        assert len({q.quote_id for q in quotes}) == 40
        assert all(q.quote_id.startswith("q_") and len(q.quote_id) == 34 for q in quotes)
        for q in quotes:
            stored = await redis_client.get(f"{namespace}:quote:{q.quote_id}")
            assert isinstance(stored, bytes) and ppb.Quote.FromString(stored) == q
            # QUOTE_TTL_S is 4 in these tests; the key outlives the quote by 30 s.
            valid_ns = q.expire_time.ToNanoseconds() - q.create_time.ToNanoseconds()
            assert abs(valid_ns - 4 * 10**9) < 10**6
            assert 20_000 < await redis_client.pttl(f"{namespace}:quote:{q.quote_id}") <= 34_000
        again = await svc.get_quote(ppb.GetQuoteRequest(quote_id=quotes[7].quote_id))
        assert again.quote == quotes[7]
