"""Typed async client of the Catalog service (CatalogService), its port and its cache.

:class:`CatalogPort` is the Catalog as the services that call it need it
(``CatalogClient`` fits, and so does a test's stand-in); :class:`CachedCatalog` is
one in front of another that keeps its answers briefly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol, TypeVar

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import catalog_pb2_grpc as pb_grpc

__all__ = ["AnswerCache", "CachedCatalog", "CatalogClient", "CatalogPort"]

T = TypeVar("T")


class CatalogClient(BaseClient):
    """foodmesh.v1.CatalogService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["CatalogService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.CatalogServiceStub(self.channel)

    async def search_restaurants(
        self,
        request: pb.SearchRestaurantsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SearchRestaurantsResponse:
        """Finds restaurants that deliver around a point, filtered, sorted and paged."""
        return await self.stub.SearchRestaurants(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def autocomplete_restaurants(
        self,
        request: pb.AutocompleteRestaurantsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.AutocompleteRestaurantsResponse:
        """Completes what a customer is typing in the search box."""
        return await self.stub.AutocompleteRestaurants(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_restaurant(
        self,
        request: pb.GetRestaurantRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetRestaurantResponse:
        """Returns one restaurant."""
        return await self.stub.GetRestaurant(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_menu(
        self,
        request: pb.GetMenuRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetMenuResponse:
        """Returns a restaurant's menu."""
        return await self.stub.GetMenu(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def upsert_restaurant(
        self,
        request: pb.UpsertRestaurantRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertRestaurantResponse:
        """Creates or replaces a restaurant (its owner or ops only)."""
        return await self.stub.UpsertRestaurant(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def upsert_menu(
        self,
        request: pb.UpsertMenuRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertMenuResponse:
        """Creates or replaces a restaurant's menu (its owner or ops only)."""
        return await self.stub.UpsertMenu(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_restaurant_paused(
        self,
        request: pb.SetRestaurantPausedRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetRestaurantPausedResponse:
        """Pauses or resumes a restaurant's intake of orders."""
        return await self.stub.SetRestaurantPaused(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def check_delivery(
        self,
        request: pb.CheckDeliveryRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.CheckDeliveryResponse:
        """Says whether a restaurant delivers to a point, and with which zone's fee and minimum."""
        return await self.stub.CheckDelivery(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def add_review(
        self,
        request: pb.AddReviewRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.AddReviewResponse:
        """Records a customer's review of a delivered order (called by the Order service)."""
        return await self.stub.AddReview(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def list_reviews(
        self,
        request: pb.ListReviewsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListReviewsResponse:
        """Lists a restaurant's reviews, newest first."""
        return await self.stub.ListReviews(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )


class CatalogPort(Protocol):
    """The Catalog as Order (PlaceOrder, RateOrder) and Pricing (quotes) need it."""

    async def get_restaurant(
        self, request: pb.GetRestaurantRequest, *, deadline_s: float | None = ...
    ) -> pb.GetRestaurantResponse: ...

    async def get_menu(
        self, request: pb.GetMenuRequest, *, deadline_s: float | None = ...
    ) -> pb.GetMenuResponse: ...

    async def check_delivery(
        self, request: pb.CheckDeliveryRequest, *, deadline_s: float | None = ...
    ) -> pb.CheckDeliveryResponse: ...

    async def add_review(
        self, request: pb.AddReviewRequest, *, deadline_s: float | None = ...
    ) -> pb.AddReviewResponse: ...


class AnswerCache(Protocol):
    """A brief memory of answers by key (``servers.runtime.cache.TtlCache`` fits)."""

    @property
    def calls(self) -> int:
        """Calls made for misses."""
        ...

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T: ...

    def fresh(self, key: Hashable) -> Any | None: ...

    def forget(self, matches: Callable[[Hashable], bool]) -> None: ...


class CachedCatalog:
    """A ``CatalogPort`` that answers reads from ``cache`` while they are fresh.

    A menu price, a pause or an opening-hours edge reaches callers at most the
    cache's time to live late. Delivery checks are remembered per restaurant and
    exact point (the Catalog decides; its geometry is not copied). Concurrent
    misses of one key share one call and failures are not remembered (the
    cache's doing). Answers are shared between callers: treat them as read-only.
    Writes (``add_review``) go straight through.
    """

    def __init__(self, inner: CatalogPort, *, cache: AnswerCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def calls(self) -> int:
        """Calls made to the Catalog, for tests and benchmarks."""
        return self.cache.calls

    def forget(self, restaurant_id: str) -> None:
        """Drops what is remembered of ``restaurant_id``."""
        self.cache.forget(lambda k: isinstance(k, tuple) and k[1] == restaurant_id)

    async def get_restaurant(
        self, request: pb.GetRestaurantRequest, *, deadline_s: float | None = None
    ) -> pb.GetRestaurantResponse:
        return await self.cache.get(
            ("restaurant", request.restaurant_id),
            lambda: self.inner.get_restaurant(request, deadline_s=deadline_s),
        )

    async def get_menu(
        self, request: pb.GetMenuRequest, *, deadline_s: float | None = None
    ) -> pb.GetMenuResponse:
        return await self.cache.get(
            ("menu", request.restaurant_id),
            lambda: self.inner.get_menu(request, deadline_s=deadline_s),
        )

    async def check_delivery(
        self, request: pb.CheckDeliveryRequest, *, deadline_s: float | None = None
    ) -> pb.CheckDeliveryResponse:
        where = request.location
        return await self.cache.get(
            ("delivery", request.restaurant_id, where.lat, where.lon),
            lambda: self.inner.check_delivery(request, deadline_s=deadline_s),
        )

    async def add_review(
        self, request: pb.AddReviewRequest, *, deadline_s: float | None = None
    ) -> pb.AddReviewResponse:
        return await self.inner.add_review(request, deadline_s=deadline_s)
