"""What an order costs: the Pricing service's quote, or this module's fallback formula.

``PricingPort`` is what PlaceOrder needs. ``RemotePricing`` asks the Pricing service:

- a ``quote_id`` that is still valid (``GetQuote``) and was made for this very order
  (customer, restaurant, items, address, promo code) and whose subtotal is what the
  menu says now is charged as quoted; an expired, unknown or different quote is never
  charged: the order is re-quoted (``QuoteOrder``);
- a promo code that gives a discount is redeemed (``RedeemPromoCode``) before the
  price is returned, so two concurrent orders cannot both use a one-time code; the
  use is keyed by the order id when PlaceOrder passes it (``PriceInput.order_id``),
  else by the quote. The Pricing service confirms the use when the order's
  ``orders.v1.placed`` event arrives, gives it back on ``orders.v1.cancelled``, and
  gives back a use no order confirmed (a placement that failed after redeeming);
- Pricing's INVALID_ARGUMENT / FAILED_PRECONDITION / NOT_FOUND answers become the
  same errors of PlaceOrder (``promo_code`` with the reason, ``items[i].quantity``...).

``FallbackPricing`` is used when the Pricing service is not configured (no
``FOODMESH_ORDER_PRICING_TARGET``) or does not answer; it applies Pricing's own fee and
tax rules (``foodmesh.core.receipt``) without surge. It cannot check promo codes or
quotes: a promo code is refused while it is in use (``PROMO_UNAVAILABLE``), a ``quote_id``
is ignored and the order re-priced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from foodmesh.core.errors import (
    FailedPrecondition,
    FieldViolation,
    FoodmeshError,
    InvalidArgument,
    NotFound,
)
from foodmesh.core.fees import FeeSchedule
from foodmesh.core.receipt import compute_breakdown
from foodmesh.core.tax import TaxTable
from foodmesh.v1 import common_pb2, pricing_pb2

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
    #: The order being placed: the key of its promo redemption (else the quote's id).
    order_id: str = ""
    #: Restaurant to customer, as the Catalog measured it (the delivery fee's distance band).
    distance_m: float = 0.0


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
    #: The restaurant's cell as Pricing's surge saw it (the ETA's live conditions): its
    #: geohash, free drivers, WeatherKind and event factor; None where not known.
    surge_cell: str = ""
    drivers_nearby: int | None = None
    weather: int | None = None
    event_multiplier: float | None = None

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


class FallbackPricing:
    """Pricing's own receipt without its live parts: used when Pricing is absent or down.

    The fees and the tax are the very rules the Pricing service applies
    (:func:`foodmesh.core.receipt.compute_breakdown` over its fee schedule and tax table:
    one source of truth for what a customer is charged); only what needs the service is
    left out: surge (1.0) and promo codes (refused while it is away).
    """

    def __init__(self, fees: FeeSchedule | None = None, taxes: TaxTable | None = None) -> None:
        self.fees = fees or FeeSchedule()
        self.taxes = taxes or TaxTable()

    def price(self, p: PriceInput) -> Quote:
        if p.promo_code:
            raise PromoUnavailable(p.promo_code)
        a = p.delivery_address
        b = compute_breakdown(
            subtotal_minor=p.subtotal_minor, zone_fee_minor=p.zone_delivery_fee_minor,
            distance_m=p.distance_m, surge_tenths=10, discount_off_minor=0,
            tax_rule=self.taxes.rule(a.state, a.zip), fees=self.fees,
        )  # fmt: skip
        return Quote(
            subtotal_minor=b.subtotal_minor,
            delivery_fee_minor=b.delivery_fee_minor,
            service_fee_minor=b.service_fee_minor,
            small_order_fee_minor=b.small_order_fee_minor,
            tax_minor=b.tax_minor,
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

    async def get_quote(
        self, request: pricing_pb2.GetQuoteRequest, *, deadline_s: float | None = ...
    ) -> pricing_pb2.GetQuoteResponse: ...

    async def redeem_promo_code(
        self, request: pricing_pb2.RedeemPromoCodeRequest, *, deadline_s: float | None = ...
    ) -> pricing_pb2.RedeemPromoCodeResponse: ...


_DOWN = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
)
#: A quote this close to its expiry is re-made rather than charged.
_EXPIRY_MARGIN_NS = 2_000_000_000


def _reason(exc: grpc.aio.AioRpcError) -> tuple[str, list[FieldViolation]]:
    found, bad = "", []
    status = rpc_status.from_call(exc)
    for d in status.details if status is not None else ():
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            found = info.reason
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            bad = [FieldViolation(v.field, v.description) for v in br.field_violations]
    return found, bad


def _as_ours(
    exc: grpc.aio.AioRpcError, *, field_map: dict[str, str] | None = None
) -> FoodmeshError:
    """Pricing's answer as the same error of PlaceOrder (fields renamed by ``field_map``)."""
    reason, bad = _reason(exc)
    msg = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and bad:
        fm = field_map or {}
        err = InvalidArgument([FieldViolation(fm.get(v.field, v.field), v.description)
                               for v in bad])  # fmt: skip
        if reason:
            err.reason = reason
        return err
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(msg, reason=reason or None)
    return FailedPrecondition(f"pricing: {msg}", reason=reason or "PRICING_REFUSED")


def _same_order(q: pricing_pb2.Quote, p: PriceInput) -> bool:
    """Whether a stored quote priced exactly this order."""
    a, b = q.delivery_address, p.delivery_address
    asked = [(i.item_id, i.quantity, tuple(i.customizations)) for i in q.items]
    return (
        q.customer_id == p.customer_id
        and q.restaurant_id == p.restaurant_id
        and q.subtotal.amount_minor == p.subtotal_minor
        and (q.subtotal.currency_code or p.currency) == p.currency
        and sorted(asked) == sorted((i, n, tuple(c)) for i, n, c in p.items)
        and (a.lat, a.lon, a.state, a.zip) == (b.lat, b.lon, b.state, b.zip)
        and q.promo_code == p.promo_code.strip().upper()
    )


def _to_quote(q: pricing_pb2.Quote) -> Quote:
    s = q.surge
    # A fallback surge (Pricing blind to Redis or Location) knows the weather, not the
    # drivers nor the events.
    live = q.HasField("surge") and not s.fallback
    return Quote(
        surge_cell=s.cell,
        drivers_nearby=int(s.supply) if live else None,
        weather=int(s.weather) if q.HasField("surge") else None,
        event_multiplier=(s.event_multiplier or 1.0) if live else None,
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


class RemotePricing:
    """The Pricing service: a valid quote is charged as quoted, anything else re-quoted.

    Falls back to ``fallback`` when Pricing does not answer (never with a promo code).
    """

    def __init__(self, client: _QuoteClient, fallback: FallbackPricing) -> None:
        self.client = client
        self.fallback = fallback
        self.requoted = 0  # presented quotes that could not be charged, for tests

    async def _stored(self, p: PriceInput, timeout_s: float) -> pricing_pb2.Quote | None:
        try:
            got = await self.client.get_quote(
                pricing_pb2.GetQuoteRequest(quote_id=p.quote_id), deadline_s=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        q = got.quote
        if q.expire_time.ToNanoseconds() - _EXPIRY_MARGIN_NS <= time.time_ns():
            return None
        return q if _same_order(q, p) else None

    async def _fresh(self, p: PriceInput, timeout_s: float) -> pricing_pb2.Quote:
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
            return (await self.client.quote_order(req, deadline_s=timeout_s)).quote
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _DOWN:
                raise
            raise _as_ours(exc) from None

    async def _redeem(self, p: PriceInput, q: pricing_pb2.Quote, timeout_s: float) -> None:
        key = p.order_id or f"quote:{q.quote_id}"
        try:
            await self.client.redeem_promo_code(
                pricing_pb2.RedeemPromoCodeRequest(
                    code=q.promo_code, customer_id=p.customer_id, order_id=key
                ),
                deadline_s=timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _DOWN:
                raise PromoUnavailable(p.promo_code) from None
            raise _as_ours(exc, field_map={"code": "promo_code"}) from None

    async def quote(self, p: PriceInput, *, timeout_s: float) -> Quote:
        try:
            return await self._quote(p, timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _DOWN:
                raise
            if p.promo_code:
                raise PromoUnavailable(p.promo_code) from None
            _log.warning("pricing unavailable (%s): fallback formula", exc.code().name)
            return self.fallback.price(p)

    async def _quote(self, p: PriceInput, timeout_s: float) -> Quote:
        q = await self._stored(p, timeout_s) if p.quote_id else None
        if q is None:
            if p.quote_id:
                self.requoted += 1
            q = await self._fresh(p, timeout_s)
            if q.subtotal.amount_minor != p.subtotal_minor:
                raise FailedPrecondition(
                    "the menu's prices are changing (the order and its quote disagree): retry",
                    reason="PRICE_CHANGED",
                )
        if q.promo_code and q.discount.amount_minor:
            try:
                await self._redeem(p, q, timeout_s)
            except FailedPrecondition as exc:
                if exc.reason != "QUOTE_ALREADY_REDEEMED":
                    raise
                # The quote's promo use belongs to an order placed before: a new quote.
                q = await self._fresh(p, timeout_s)
                await self._redeem(p, q, timeout_s)
        elif p.promo_code and not q.promo_code:
            raise InvalidArgument.field("promo_code", q.promo_message or "does not apply")
        return _to_quote(q)
