"""A short-lived, in-process memory of the Catalog answers PlaceOrder needs.

Every PlaceOrder needs the restaurant, its menu and whether it delivers to the
address. Asked afresh each time, that is three gRPC calls per order, which cost
more CPU (here and in the Catalog) than the rest of the order together. The
Catalog offers no change feed to other services (its per-region counters are its
own Redis keys), so answers are kept for ``ttl_s`` seconds: a menu price, a pause
or an opening-hours edge reaches new orders at most that late. The Catalog still
decides delivery: its CheckDelivery answer is remembered per restaurant and exact
point (the geometry is not copied here, so the two services cannot disagree).

Concurrent misses for one key share one call (a burst after expiry makes one
request, not 64). Failures are never remembered: the next order asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from foodmesh.v1 import catalog_pb2

if TYPE_CHECKING:
    from servers.order.service import CatalogPort

__all__ = ["CachedCatalog"]

T = TypeVar("T")


class CachedCatalog:
    """A ``CatalogPort`` that remembers reads for ``ttl_s`` seconds (0: not at all).

    Answers are shared between callers: treat them as read-only.
    """

    def __init__(
        self,
        inner: CatalogPort,
        *,
        ttl_s: float = 2.0,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.calls = 0  # calls made to the Catalog, for tests and benchmarks
        self._entries: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    async def _get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        if self.ttl_s <= 0:
            self.calls += 1
            return await fetch()
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return await asyncio.shield(hit[1])
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        self.calls += 1
        task: asyncio.Future[T] = asyncio.ensure_future(fetch())
        self._entries[key] = (now + self.ttl_s, task)
        task.add_done_callback(lambda t: self._settled(key, t))
        # Shielded: a caller that gives up does not cancel the call others wait on.
        return await asyncio.shield(task)

    def _settled(self, key: Hashable, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            held = self._entries.get(key)
            if held is not None and held[1] is task:
                del self._entries[key]

    def _evict(self, now: float) -> None:
        for k in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[k]
        while len(self._entries) >= self.max_entries:  # the oldest go first
            del self._entries[next(iter(self._entries))]

    def forget(self, restaurant_id: str) -> None:
        """Drops what is remembered of ``restaurant_id``."""
        for k in [k for k in self._entries if isinstance(k, tuple) and k[1] == restaurant_id]:
            del self._entries[k]

    async def get_restaurant(
        self, request: catalog_pb2.GetRestaurantRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetRestaurantResponse:
        return await self._get(
            ("restaurant", request.restaurant_id),
            lambda: self.inner.get_restaurant(request, deadline_s=deadline_s),
        )

    async def get_menu(
        self, request: catalog_pb2.GetMenuRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetMenuResponse:
        return await self._get(
            ("menu", request.restaurant_id),
            lambda: self.inner.get_menu(request, deadline_s=deadline_s),
        )

    async def check_delivery(
        self, request: catalog_pb2.CheckDeliveryRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.CheckDeliveryResponse:
        where = request.location
        return await self._get(
            ("delivery", request.restaurant_id, where.lat, where.lon),
            lambda: self.inner.check_delivery(request, deadline_s=deadline_s),
        )

    async def add_review(
        self, request: catalog_pb2.AddReviewRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.AddReviewResponse:
        return await self.inner.add_review(request, deadline_s=deadline_s)
