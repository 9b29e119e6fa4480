"""The lean pipelined Redis connection against a real server."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from servers.runtime.redis_wire import RedisWire


async def test_a_pipeline_returns_every_reply_in_order(redis_url: str, namespace: str) -> None:
    wire = RedisWire(redis_url)
    try:
        key = f"{namespace}:geo"
        replies = await wire.execute(
            [
                ("GEOADD", key, -122.4194, 37.7749, "d1"),
                ("GEOADD", key, -122.4183, 37.7755, "d2"),
                ("ZCARD", key),
                ("INCR", key),  # wrong type: an error in place, the others still answer
                ("GEOSEARCH", key, "FROMLONLAT", -122.4194, 37.7749, "BYRADIUS", 50, "m", "ASC"),
            ]
        )
        assert replies[:3] == [1, 1, 2]
        assert isinstance(replies[3], hiredis.ReplyError) and "WRONGTYPE" in str(replies[3])
        assert replies[4] == [b"d1"]
        # Concurrent pipelines on one connection each get their own replies.
        got = await asyncio.gather(
            *(wire.execute([("ECHO", str(i)), ("ECHO", f"{i}b")]) for i in range(200))
        )
        assert got == [[str(i).encode(), f"{i}b".encode()] for i in range(200)]
    finally:
        await wire.close()


async def test_noscript_raises_like_redis_py(redis_url: str) -> None:
    wire = RedisWire(redis_url)
    try:
        with pytest.raises(NoScriptError):
            await wire.execute([("EVALSHA", "0" * 40, 0)])
    finally:
        await wire.close()


async def test_a_dropped_connection_fails_in_flight_and_reconnects(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    wire = RedisWire(redis_url)
    try:
        assert await wire.execute([("CLIENT", "SETNAME", "wire-test")]) == [b"OK"]
        blocked = asyncio.create_task(wire.execute([("BLPOP", "nothing-here", 5)], within_s=10))
        await asyncio.sleep(0.1)
        await redis_client.client_kill_filter(
            _type="normal", skipme=True, laddr=None, _id=None, user=None
        )
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await wire.execute([("PING",)]) == [b"PONG"]
    finally:
        await wire.close()


async def test_unreachable_server_is_a_connection_error() -> None:
    wire = RedisWire("redis://127.0.0.1:1/0", connect_timeout=0.5)
    with pytest.raises(RedisConnectionError):
        await wire.execute([("PING",)])


async def test_a_server_still_loading_its_data_is_a_connection_error() -> None:
    """A restarted Redis answers LOADING until it has read its data back: an outage (the
    caller answers UNAVAILABLE), not an unhandled error (the soak found one in Location)."""

    async def loading(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            for _ in range(data.count(b"*")):  # one reply per command array
                w.write(b"-LOADING Valkey is loading the dataset in memory\r\n")
            await w.drain()
        w.close()

    server = await asyncio.start_server(loading, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = RedisWire(f"redis://127.0.0.1:{port}")
    try:
        with pytest.raises(RedisConnectionError, match="LOADING"):
            await wire.execute([("EVALSHA", "0" * 40, 1, "k")], noscript_in_place=True)
    finally:
        await wire.close()
        server.close()
        await server.wait_closed()
