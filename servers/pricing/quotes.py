"""Where quotes are kept: Redis, one key per quote with its expiry.

Every quote is stored before QuoteOrder answers (PlaceOrder may present it at
once), so its ``SET`` is on the hot path. redis-py spends tens of µs of Python
per command (argument encoding, a connection taken from the pool, a timer per
reply, retries); here the command goes over a lean pipelined connection
(:class:`~servers.runtime.redis_wire.RedisWire`: hiredis packs and parses, one
timer per command, concurrent quotes share the connection). Reads go through the
same connection, so a quote read after its write was acknowledged is found.

(Batching the ``SET``\\ s of quotes finished in the same turn of the event loop
into one pipeline was measured and dropped: gRPC hands the handlers their
requests one turn apart, so a batch held 1.05 commands and only added a task.)

Without a plain ``redis://`` URL (TLS, a socket path) redis-py does the work. A
command Redis does not acknowledge within ``timeout_s`` fails with RedisError:
give the wire a ``connect_timeout`` no longer than that.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from foodmesh.core.redis import Keys
from servers.runtime.redis_wire import RedisWire

__all__ = ["QuoteBook"]


class QuoteBook:
    """Stores serialized quotes under ``<ns>:quote:<id>`` with a time to live."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        wire: RedisWire | None = None,
        timeout_s: float = 0.5,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.wire = wire
        self.timeout_s = timeout_s
        self._prefix = keys.key("quote", "")

    def key(self, quote_id: str) -> str:
        return self._prefix + quote_id

    async def put(self, quote_id: str, data: bytes, *, ttl_ms: int) -> None:
        """Stores one quote; raises RedisError, OSError or TimeoutError if it was not."""
        if self.wire is None:
            async with asyncio.timeout(self.timeout_s):
                await self.redis.set(self.key(quote_id), data, px=ttl_ms)
            return
        (reply,) = await self.wire.execute(
            (("SET", self._prefix + quote_id, data, "PX", ttl_ms),), within_s=self.timeout_s
        )
        if isinstance(reply, Exception):
            raise RedisError(f"Redis refused the quote: {reply}")

    async def get(self, quote_id: str) -> bytes | None:
        """The stored quote, or None; raises RedisError, OSError or TimeoutError."""
        if self.wire is None:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.redis.get(self.key(quote_id))
        else:
            (raw,) = await self.wire.execute(
                (("GET", self._prefix + quote_id),), within_s=self.timeout_s
            )
            if isinstance(raw, Exception):
                raise RedisError(f"Redis refused the read: {raw}")
        return raw if raw is None or isinstance(raw, bytes) else str(raw).encode()

    async def close(self) -> None:
        if self.wire is not None:
            await self.wire.close()
