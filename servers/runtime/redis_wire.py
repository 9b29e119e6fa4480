"""A lean pipelined Redis connection for hot paths (location ingest).

redis-py spends ~40 µs of Python per command (argument encoding, a timer per
reply). Here hiredis packs a whole pipeline and parses the replies in C, and a
pipeline has one timer: a few µs per command. It speaks plain RESP2 to one
server; everything that is not a hot path keeps using redis-py.

Error replies come back in place as exceptions (``hiredis.ReplyError``), so one
bad command does not hide the others' results; a ``NOSCRIPT`` reply raises
redis-py's ``NoScriptError`` so callers handle a restarted server the same way.
A lost connection fails the pipelines in flight with redis-py's
``ConnectionError``, and the next call reconnects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import BusyLoadingError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Command", "RedisWire"]

Command = Sequence[str | bytes | int | float]


@dataclass(slots=True)
class _Waiter:
    expected: int
    future: asyncio.Future[list[Any]]
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiters:
            reply = self.reader.gets()
            if reply is False:
                return
            w = self.waiters[0]
            w.replies.append(reply)
            if len(w.replies) == w.expected:
                self.waiters.popleft()
                if not w.future.done():
                    w.future.set_result(w.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("connection closed by the server")
        while self.waiters:
            w = self.waiters.popleft()
            if not w.future.done():
                w.future.set_exception(RedisConnectionError(f"Redis connection lost: {self.lost}"))


class RedisWire:
    """One pipelined connection to the server at ``url`` (``redis://[:pw@]host:port/db``)."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0) -> None:
        u = urlparse(url)
        if u.scheme not in ("redis", ""):
            raise ValueError(f"RedisWire speaks plain redis:// only, not {u.scheme}://")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.db = int(u.path.lstrip("/") or 0)
        self.password = unquote(u.password) if u.password else None
        self.username = unquote(u.username) if u.username else None
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        async with self._lock:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, proto = await loop.create_connection(_Protocol, self.host, self.port)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
                ) from None
            self._proto = proto
            hello: list[Command] = []
            if self.password:
                auth: list[str] = [self.username] if self.username else []
                hello.append(("AUTH", *auth, self.password))
            if self.db:
                hello.append(("SELECT", self.db))
            if hello:
                for reply in await self._send(proto, hello, self.connect_timeout):
                    if isinstance(reply, Exception):
                        await self.close()
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
            return proto

    async def _send(
        self, proto: _Protocol, commands: Sequence[Command], within_s: float
    ) -> list[Any]:
        assert proto.transport is not None
        waiter = _Waiter(len(commands), asyncio.get_running_loop().create_future())
        proto.waiters.append(waiter)
        pack = hiredis.pack_command
        proto.transport.write(b"".join([pack(tuple(c)) for c in commands]))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(within_s):
                return await waiter.future
        except TimeoutError:
            # The replies may still come and would be taken for the next pipeline's.
            proto.transport.abort()
            raise RedisTimeoutError(f"Redis did not answer within {within_s:g}s") from None

    async def execute(
        self, commands: Sequence[Command], *, within_s: float = 2.0, noscript_in_place: bool = False
    ) -> list[Any]:
        """Sends ``commands`` in one write and returns their replies, in order.

        A ``NOSCRIPT`` reply raises ``NoScriptError``, unless ``noscript_in_place``: then it
        stays in place like any other error reply, for the caller to resend only those. A
        ``LOADING`` reply (a restarted server) raises ``BusyLoadingError``.
        """
        if not commands:
            return []
        replies = await self._send(await self._connection(), commands, within_s)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("LOADING"):
                # A restarted server still reading its data back is away, not broken: the
                # same error as redis-py's (a ConnectionError, so callers answer UNAVAILABLE).
                raise BusyLoadingError(str(reply))
        if noscript_in_place:
            return replies
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                raise NoScriptError(str(reply))
        return replies

    async def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
