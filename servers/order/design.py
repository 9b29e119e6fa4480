"""PlaceOrder's reply as the design's API section shows it: the order's fields at the top.

The reply keeps ``order`` (every client of the contract reads it); the design's example
names ``order_id``, ``status``, ``restaurant``, ``items``, ``pricing``,
``estimated_delivery_time`` and ``created_at`` beside it, so those are copied up. Pure.
"""

from __future__ import annotations

from foodmesh.v1 import order_pb2

__all__ = ["placed_response"]


def placed_response(order: order_pb2.Order) -> order_pb2.PlaceOrderResponse:
    """The reply to PlaceOrder for ``order`` (as the caller may see it)."""
    out = order_pb2.PlaceOrderResponse(
        order=order,
        order_id=order.order_id,
        status=order.status,
        restaurant=order_pb2.OrderRestaurant(restaurant_id=order.restaurant_id,
                                             name=order.restaurant_name),
        items=order.items,
        pricing=order.pricing,
    )  # fmt: skip
    if order.HasField("estimated_delivery_time"):
        out.estimated_delivery_time.CopyFrom(order.estimated_delivery_time)
    if order.HasField("created_at"):
        out.created_at.CopyFrom(order.created_at)
    return out
