"""What an order costs: the Pricing service's quote, or this module's fallback formula.

``PricingPort`` is what PlaceOrder needs. ``FallbackPricing`` is used when the
Pricing service is not configured (no ``FOODMESH_ORDER_PRICING_TARGET``) or does
not answer; it applies the seed's receipt (subtotal, delivery fee, service fee,
tax, total) with fixed rates and no surge. It cannot check promo codes or
quotes: a promo code is refused while it is in use (``PROMO_UNAVAILABLE``), a
``quote_id`` is ignored and the order re-priced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from foodmesh.v1 import common_pb2, pricing_pb2
from servers.order.money import apply_bps, clamp, scale

__all__ = [
    "FallbackPricing",
    "PriceInput",
    "PricingPort",
    "PromoUnavailable",
    "Quote",
    "RemotePricing",
]

_log = logging.getLogger("foodmesh.order.pricing")


@dataclass(frozen=True, slots=True)
class PriceInput:
    """What the price depends on: the menu-priced lines, the zone's fee, the place."""

    customer_id: str
    restaurant_id: str
    currency: str
    subtotal_minor: int
    zone_delivery_fee_minor: int
    items: tuple[tuple[str, int, tuple[str, ...]], ...]
    delivery_address: common_pb2.Address
    promo_code: str = ""
    quote_id: str = ""


@dataclass(frozen=True, slots=True)
class Quote:
    """A receipt, in minor units of ``currency`` (discount is negative or zero)."""

    subtotal_minor: int
    delivery_fee_minor: int
    service_fee_minor: int
    small_order_fee_minor: int
    tax_minor: int
    discount_minor: int
    surge_multiplier: float
    quote_id: str
    source: str

    def total(self, tip_minor: int = 0) -> int:
        return max(
            0,
            self.subtotal_minor
            + self.delivery_fee_minor
            + self.service_fee_minor
            + self.small_order_fee_minor
            + self.tax_minor
            + self.discount_minor,
        ) + max(0, tip_minor)


class PromoUnavailable(Exception):
    """A promo code was given but no pricing that can check it is reachable."""


class PricingPort(Protocol):
    async def quote(self, p: PriceInput, *, timeout_s: float) -> Quote: ...


@dataclass(frozen=True, slots=True)
class FallbackPricing:
    """The seed's receipt with fixed rates: used when Pricing is absent or down.

    - delivery fee: the delivery zone's fee (no surge: multiplier 1.0);
    - service fee: ``service_fee_bps`` of the subtotal, between ``service_fee_min`` and
      ``service_fee_max`` (the seed's $1.50 on $23.98);
    - small-order fee: ``small_order_fee`` when the subtotal is under ``small_order_below``;
    - tax: ``tax_bps`` of the subtotal (food only, fees untaxed);
    - no discount.
    """

    service_fee_bps: int = 500
    service_fee_min: int = 150
    service_fee_max: int = 500
    small_order_below: int = 1000
    small_order_fee: int = 200
    tax_bps: int = 875

    def price(self, p: PriceInput) -> Quote:
        if p.promo_code:
            raise PromoUnavailable(p.promo_code)
        sub = p.subtotal_minor
        return Quote(
            subtotal_minor=sub,
            delivery_fee_minor=scale(p.zone_delivery_fee_minor, 1.0),
            service_fee_minor=clamp(
                apply_bps(sub, self.service_fee_bps), self.service_fee_min, self.service_fee_max
            ),
            small_order_fee_minor=self.small_order_fee if sub < self.small_order_below else 0,
            tax_minor=apply_bps(sub, self.tax_bps),
            discount_minor=0,
            surge_multiplier=1.0,
            quote_id="",
            source="fallback",
        )

    async def quote(self, p: PriceInput, *, timeout_s: float) -> Quote:
        return self.price(p)


class _QuoteClient(Protocol):
    async def quote_order(
        self, request: pricing_pb2.QuoteOrderRequest, *, deadline_s: float | None = ...
    ) -> pricing_pb2.QuoteOrderResponse: ...


class RemotePricing:
    """``PricingService.QuoteOrder``, falling back to ``fallback`` when it does not answer."""

    def __init__(self, client: _QuoteClient, fallback: FallbackPricing) -> None:
        self.client = client
        self.fallback = fallback

    async def quote(self, p: PriceInput, *, timeout_s: float) -> Quote:
        req = pricing_pb2.QuoteOrderRequest(
            customer_id=p.customer_id,
            restaurant_id=p.restaurant_id,
            items=[
                pricing_pb2.QuoteItem(item_id=i, quantity=q, customizations=c)
                for i, q, c in p.items
            ],  # fmt: skip
            delivery_address=p.delivery_address,
            promo_code=p.promo_code,
        )
        try:
            q = (await self.client.quote_order(req, deadline_s=timeout_s)).quote
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNIMPLEMENTED,
            ):
                raise
            _log.warning("pricing unavailable (%s): fallback formula", exc.code().name)
            return self.fallback.price(p)
        return Quote(
            subtotal_minor=q.subtotal.amount_minor,
            delivery_fee_minor=q.delivery_fee.amount_minor,
            service_fee_minor=q.service_fee.amount_minor,
            small_order_fee_minor=q.small_order_fee.amount_minor,
            tax_minor=q.tax.amount_minor,
            discount_minor=-abs(q.discount.amount_minor),
            surge_multiplier=q.surge.multiplier or 1.0,
            quote_id=q.quote_id,
            source="pricing",
        )
