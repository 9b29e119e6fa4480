"""Typed async client of the Order service (OrderService)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import order_pb2 as pb
from foodmesh.v1 import order_pb2_grpc as pb_grpc

__all__ = ["OrderClient"]


class OrderClient(BaseClient):
    """foodmesh.v1.OrderService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["OrderService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.OrderServiceStub(self.channel)

    async def place_order(
        self,
        request: pb.PlaceOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.PlaceOrderResponse:
        """Places an order. Safe to retry with the same idempotency_key."""
        return await self.stub.PlaceOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_order(
        self,
        request: pb.GetOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetOrderResponse:
        """Returns one order (its customer, restaurant, driver or ops)."""
        return await self.stub.GetOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def list_orders(
        self,
        request: pb.ListOrdersRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListOrdersResponse:
        """Lists the caller's orders (a customer's own, a restaurant's incoming), newest first."""
        return await self.stub.ListOrders(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def cancel_order(
        self,
        request: pb.CancelOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.CancelOrderResponse:
        """Cancels an order before pickup, with a reason; refunds per stage."""
        return await self.stub.CancelOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def update_order_status(
        self,
        request: pb.UpdateOrderStatusRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpdateOrderStatusResponse:
        """Moves an order to its next status (restaurant, driver or ops, as the step allows)."""
        return await self.stub.UpdateOrderStatus(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def assign_driver(
        self,
        request: pb.AssignDriverRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.AssignDriverResponse:
        """Records which driver carries an order, or that none does any more (Dispatch only)."""
        return await self.stub.AssignDriver(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def rate_order(
        self,
        request: pb.RateOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RateOrderResponse:
        """Rates a delivered order once: restaurant, food quality and driver, each on its own."""
        return await self.stub.RateOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def list_payment_methods(
        self,
        request: pb.ListPaymentMethodsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ListPaymentMethodsResponse:
        """Lists the caller's saved cards and digital wallets, the default first."""
        return await self.stub.ListPaymentMethods(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def add_payment_method(
        self,
        request: pb.AddPaymentMethodRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.AddPaymentMethodResponse:
        """Saves a card or a digital wallet for the caller. Safe to retry with the same key."""
        return await self.stub.AddPaymentMethod(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def remove_payment_method(
        self,
        request: pb.RemovePaymentMethodRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RemovePaymentMethodResponse:
        """Removes one of the caller's saved payment methods (again: no error)."""
        return await self.stub.RemovePaymentMethod(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_default_payment_method(
        self,
        request: pb.SetDefaultPaymentMethodRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetDefaultPaymentMethodResponse:
        """Makes one of the caller's saved payment methods the default."""
        return await self.stub.SetDefaultPaymentMethod(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    def watch_order(
        self,
        request: pb.WatchOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        """Streams an order's changes: the current state first, then each change, until it ends."""
        call = self.stub.WatchOrder(
            request, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()

    def watch_restaurant_orders(
        self,
        request: pb.WatchRestaurantOrdersRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[pb.WatchRestaurantOrdersResponse]:
        """Streams a restaurant's open orders, then every change of its orders."""
        call = self.stub.WatchRestaurantOrders(
            request, timeout=self._stream_deadline(deadline_s), metadata=self._metadata(metadata)
        )
        return call.__aiter__()

    async def get_restaurant_order_settings(
        self,
        request: pb.GetRestaurantOrderSettingsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetRestaurantOrderSettingsResponse:
        """Returns a restaurant's order-taking settings (auto-confirm, confirmation timeout)."""
        return await self.stub.GetRestaurantOrderSettings(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_restaurant_order_settings(
        self,
        request: pb.SetRestaurantOrderSettingsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetRestaurantOrderSettingsResponse:
        """Sets a restaurant's order-taking settings."""
        return await self.stub.SetRestaurantOrderSettings(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def flag_order(
        self,
        request: pb.FlagOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.FlagOrderResponse:
        """Raises or clears an alert on an order in flight (no driver, driver lost)."""
        return await self.stub.FlagOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def resolve_lost_delivery(
        self,
        request: pb.ResolveLostDeliveryRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ResolveLostDeliveryResponse:
        """Resolves an order whose driver was lost after pickup: reassign or refund (ops)."""
        return await self.stub.ResolveLostDelivery(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )
