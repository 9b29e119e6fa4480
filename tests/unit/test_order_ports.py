"""The Pricing and ETA ports: the remote service's answer, or the fallback when it is away."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from foodmesh.core.errors import FailedPrecondition
from foodmesh.v1 import common_pb2, eta_pb2, pricing_pb2
from servers.order.eta import EtaInput, FallbackEta, RemoteEta
from servers.order.pricing import FallbackPricing, PriceInput, RemotePricing


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


def m(n: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=n, currency_code="USD")


class Pricing:
    def __init__(self, fail: grpc.StatusCode | None = None) -> None:
        self.fail = fail
        self.calls: list[pricing_pb2.QuoteOrderRequest] = []
        self.redeemed: list[pricing_pb2.RedeemPromoCodeRequest] = []

    async def get_quote(
        self, request: pricing_pb2.GetQuoteRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.GetQuoteResponse:
        raise _error(grpc.StatusCode.NOT_FOUND)

    async def redeem_promo_code(
        self, request: pricing_pb2.RedeemPromoCodeRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.RedeemPromoCodeResponse:
        self.redeemed.append(request)
        return pricing_pb2.RedeemPromoCodeResponse(customer_uses=1)

    async def quote_order(
        self, request: pricing_pb2.QuoteOrderRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.QuoteOrderResponse:
        self.calls.append(request)
        if self.fail is not None:
            raise _error(self.fail)
        return pricing_pb2.QuoteOrderResponse(quote=pricing_pb2.Quote(
            quote_id="q1", subtotal=m(2398), delivery_fee=m(359), service_fee=m(150),
            tax=m(210), discount=m(-480), surge=pricing_pb2.Surge(multiplier=1.2),
            promo_code="SUMMER20"))  # fmt: skip


PRICE = PriceInput(customer_id="c", restaurant_id="r", currency="USD", subtotal_minor=2398,
                   zone_delivery_fee_minor=299, items=(("pizza", 2, ("large",)),),
                   delivery_address=common_pb2.Address(lat=1, lon=2),
                   promo_code="SUMMER20")  # fmt: skip


async def test_remote_pricing_uses_the_services_quote() -> None:
    client = Pricing()
    q = await RemotePricing(client, FallbackPricing()).quote(PRICE, timeout_s=1)
    assert (q.quote_id, q.delivery_fee_minor, q.discount_minor, q.surge_multiplier) == (
        "q1", 359, -480, 1.2)  # fmt: skip
    assert q.total() == 2398 + 359 + 150 + 210 - 480 and q.source == "pricing"
    sent = client.calls[0]
    assert (sent.promo_code, sent.items[0].item_id, list(sent.items[0].customizations)) == (
        "SUMMER20", "pizza", ["large"])  # fmt: skip
    # the discount is counted against the code at once (keyed by the quote: no order id)
    assert [(r.code, r.order_id) for r in client.redeemed] == [("SUMMER20", "quote:q1")]


async def test_remote_pricing_falls_back_only_when_the_service_is_away() -> None:
    fallback = FallbackPricing()
    no_promo = PriceInput(customer_id="c", restaurant_id="r", currency="USD", subtotal_minor=2398,
                          zone_delivery_fee_minor=299, items=(),
                          delivery_address=common_pb2.Address(lat=1, lon=2))  # fmt: skip
    away = RemotePricing(Pricing(grpc.StatusCode.UNAVAILABLE), fallback)
    q = await away.quote(no_promo, timeout_s=1)
    assert q == fallback.price(no_promo)
    with pytest.raises(FailedPrecondition):  # a refusal is not an outage
        await RemotePricing(Pricing(grpc.StatusCode.FAILED_PRECONDITION), fallback).quote(
            no_promo, timeout_s=1)  # fmt: skip


class Eta:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def estimate_delivery(
        self, request: eta_pb2.EstimateDeliveryRequest, *, deadline_s: float | None = None
    ) -> eta_pb2.EstimateDeliveryResponse:
        if self.fail:
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED)
        out = eta_pb2.EstimateDeliveryResponse(prep_minutes=12, total_minutes=30,
                                               eta_confidence=0.9)  # fmt: skip
        out.estimated_delivery_time.FromDatetime(request.order_time.ToDatetime(dt.UTC)
                                                 + dt.timedelta(minutes=30))  # fmt: skip
        return out


async def test_remote_eta_or_prep_plus_travel() -> None:
    start = dt.datetime(2026, 2, 2, 19, tzinfo=dt.UTC)
    e = EtaInput("r", (37.77, -122.41), (37.78, -122.41), 18, 2, 2398, "USD", start)
    got = await RemoteEta(Eta(fail=False), FallbackEta()).estimate(e, timeout_s=1)
    assert (got.prep_minutes, got.travel_minutes, got.confidence) == (12, 18, 0.9)
    assert got.arrival == start + dt.timedelta(minutes=30) and got.source == "eta"
    down = await RemoteEta(Eta(fail=True), FallbackEta()).estimate(e, timeout_s=1)
    assert down == FallbackEta().compute(e)
