"""The Catalog as Pricing reads it, with a brief in-process memory of its answers.

A quote needs the restaurant (where it is, its currency), its menu (prices) and
the delivery check (zone fee, distance). Asked afresh, that is three gRPC calls
per quote; the answers are kept ``ttl_s`` seconds (2 by default), so a price
change reaches quotes at most that late, and a quote is still checked against the
Catalog's current prices when it is charged (PlaceOrder prices the lines itself
and re-quotes when they differ). Concurrent misses of one key share one call;
failures are never remembered (:class:`clients.catalog.CachedCatalog` on
:class:`servers.runtime.cache.TtlCache`).

:meth:`QuoteCatalog.quote_inputs` is what a quote asks: answers still fresh
are taken without a task or a wait (the common case, and the one a quote's CPU
is spent on), and only the missing ones are fetched, together. The menu is kept
as a :class:`~servers.pricing.cart.MenuIndex`, built once per menu fetched.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from clients.catalog import CachedCatalog
from foodmesh.v1 import catalog_pb2, common_pb2
from servers.pricing.cart import MenuIndex

__all__ = ["QuoteCatalog", "QuoteInputs"]

T = TypeVar("T")


#: What a quote needs of the Catalog: the restaurant, its priced menu, the delivery check.
QuoteInputs = tuple[catalog_pb2.GetRestaurantResponse, MenuIndex, catalog_pb2.CheckDeliveryResponse]


class QuoteCatalog(CachedCatalog):
    """The cached Catalog, and what a quote asks of it at once."""

    async def quote_inputs(
        self, restaurant_id: str, lat: float, lon: float, *, deadline_s: float | None = None
    ) -> QuoteInputs:
        """The restaurant, its menu and the delivery check of ``(lat, lon)``, fetched together.

        Raises what the Catalog raised (``grpc.aio.AioRpcError``) for any of them.
        """
        rkey = ("restaurant", restaurant_id)
        mkey = ("menu_index", restaurant_id)
        dkey = ("delivery", restaurant_id, lat, lon)
        got: catalog_pb2.GetRestaurantResponse | None = self.cache.fresh(rkey)
        menu: MenuIndex | None = self.cache.fresh(mkey)
        where: catalog_pb2.CheckDeliveryResponse | None = self.cache.fresh(dkey)
        if got is not None and menu is not None and where is not None:
            return got, menu, where
        rid = restaurant_id
        return await asyncio.gather(
            _ready(got) if got is not None else self.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id=rid), deadline_s=deadline_s),
            _ready(menu) if menu is not None else self.cache.get(
                mkey, lambda: self._menu_index(rid, deadline_s)),
            _ready(where) if where is not None else self.check_delivery(
                catalog_pb2.CheckDeliveryRequest(
                    restaurant_id=rid, location=common_pb2.LatLng(lat=lat, lon=lon)),
                deadline_s=deadline_s),
        )  # fmt: skip

    async def _menu_index(self, restaurant_id: str, deadline_s: float | None) -> MenuIndex:
        got = await self.inner.get_menu(
            catalog_pb2.GetMenuRequest(restaurant_id=restaurant_id), deadline_s=deadline_s
        )
        return MenuIndex(got.menu)


async def _ready(value: T) -> T:
    return value
