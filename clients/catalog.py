"""Typed async client of the Catalog service (CatalogService)."""

from __future__ import annotations

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import catalog_pb2_grpc as pb_grpc

__all__ = ["CatalogClient"]


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
