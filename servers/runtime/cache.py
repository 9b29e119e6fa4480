"""A brief in-process memory of another service's answers, one call per key at a time.

Answers are kept ``ttl_s`` seconds (0: not at all); concurrent misses of one key
share one call (a burst after expiry makes one request, not 64), and a caller
that gives up does not cancel the call others wait on. Failures are never
remembered: the next caller asks again. Answers are shared: treat them as read-only.
The memory is a :class:`cachetools.TTLCache` of the calls' futures; this wrapper adds
the shared in-flight calls, the forgetting of failures and the count of calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from cachetools import TTLCache

__all__ = ["TtlCache"]

T = TypeVar("T")


class TtlCache:
    """Answers by key for ``ttl_s`` seconds, at most ``max_entries`` of them (least recently
    used go first when full)."""

    def __init__(
        self,
        *,
        ttl_s: float = 2.0,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.calls = 0  # calls made for misses, for tests and benchmarks
        self._entries: TTLCache[Hashable, asyncio.Future[Any]] = TTLCache(
            max_entries, max(ttl_s, 0.0), timer=clock
        )

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """The answer remembered under ``key``, else ``fetch()``'s (remembered if it succeeds)."""
        if self.ttl_s <= 0:
            self.calls += 1
            return await fetch()
        hit = self._entries.get(key)
        if hit is not None:
            return await asyncio.shield(hit)
        self.calls += 1
        task: asyncio.Future[T] = asyncio.ensure_future(fetch())
        self._entries[key] = task
        task.add_done_callback(lambda t: self._settled(key, t))
        return await asyncio.shield(task)

    def fresh(self, key: Hashable) -> Any | None:
        """The answer of ``key`` if one is in and still fresh, without waiting; else None."""
        fut = self._entries.get(key)
        if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return None
        return fut.result()

    def forget(self, matches: Callable[[Hashable], bool]) -> None:
        """Drops every answer whose key ``matches``."""
        for k in [k for k in self._entries if matches(k)]:
            self._entries.pop(k, None)

    def _settled(self, key: Hashable, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            if self._entries.get(key) is task:
                self._entries.pop(key, None)
