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
request, not 64). Failures are never remembered: the next order asks again
(:class:`servers.runtime.cache.TtlCache`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from foodmesh.v1 import catalog_pb2
from servers.runtime.cache import TtlCache

if TYPE_CHECKING:
    from servers.order.service import CatalogPort

__all__ = ["CachedCatalog"]


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
        self.cache = TtlCache(ttl_s=ttl_s, max_entries=max_entries, clock=clock)

    @property
    def calls(self) -> int:
        """Calls made to the Catalog, for tests and benchmarks."""
        return self.cache.calls

    def forget(self, restaurant_id: str) -> None:
        """Drops what is remembered of ``restaurant_id``."""
        self.cache.forget(lambda k: isinstance(k, tuple) and k[1] == restaurant_id)

    async def get_restaurant(
        self, request: catalog_pb2.GetRestaurantRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetRestaurantResponse:
        return await self.cache.get(
            ("restaurant", request.restaurant_id),
            lambda: self.inner.get_restaurant(request, deadline_s=deadline_s),
        )

    async def get_menu(
        self, request: catalog_pb2.GetMenuRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.GetMenuResponse:
        return await self.cache.get(
            ("menu", request.restaurant_id),
            lambda: self.inner.get_menu(request, deadline_s=deadline_s),
        )

    async def check_delivery(
        self, request: catalog_pb2.CheckDeliveryRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.CheckDeliveryResponse:
        where = request.location
        return await self.cache.get(
            ("delivery", request.restaurant_id, where.lat, where.lon),
            lambda: self.inner.check_delivery(request, deadline_s=deadline_s),
        )

    async def add_review(
        self, request: catalog_pb2.AddReviewRequest, *, deadline_s: float | None = None
    ) -> catalog_pb2.AddReviewResponse:
        return await self.inner.add_review(request, deadline_s=deadline_s)
