"""Typed async clients of every foodmesh service (thin wrappers over ``foodmesh.v1`` stubs).

Each client holds a channel whose service config gives every unary call a
deadline and retries the methods the contract marks idempotent::

    async with OrderClient("localhost:7052") as orders:
        reply = await orders.get_order(order_pb2.GetOrderRequest(order_id="..."))
"""

from clients._base import ClientOptions, RetryPolicy, mesh_channel_args
from clients.catalog import CatalogClient
from clients.dispatch import DispatchClient
from clients.eta import EtaClient
from clients.location import LocationClient
from clients.notification import NotificationClient
from clients.order import OrderClient
from clients.pricing import PricingClient

__all__ = [
    "CatalogClient",
    "ClientOptions",
    "DispatchClient",
    "EtaClient",
    "LocationClient",
    "NotificationClient",
    "OrderClient",
    "PricingClient",
    "RetryPolicy",
    "mesh_channel_args",
]
