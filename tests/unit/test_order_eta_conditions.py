"""The restaurant cell's live conditions: from Pricing's surge into each ETA request of an order."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.geo import geohash_encode
from foodmesh.v1 import common_pb2, eta_pb2, pricing_pb2
from servers.order.eta import EtaInput, FallbackEta, RemoteEta
from servers.order.eta_stages import StageEstimates
from servers.order.placement import CellConditions, cell_conditions
from servers.order.pricing import FallbackPricing, PriceInput, RemotePricing
from servers.pricing.surge import Weather, weather_kind, weather_multiplier
from tests.unit.test_metrics_order import _order

WK = common_pb2.WeatherKind
REST = (37.7755, -122.4183)
CELL = geohash_encode(*REST, 5)
START = dt.datetime(2026, 2, 2, 19, tzinfo=dt.UTC)
PRICE = PriceInput(customer_id="c", restaurant_id="r", currency="USD", subtotal_minor=2398,
                   zone_delivery_fee_minor=299, items=(("pizza", 1, ()),),
                   delivery_address=common_pb2.Address(lat=37.77, lon=-122.42))  # fmt: skip


class Pricing:
    """The Pricing client port, answering with a set surge."""

    def __init__(self, surge: pricing_pb2.Surge) -> None:
        self.surge = surge

    async def get_quote(
        self, request: pricing_pb2.GetQuoteRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.GetQuoteResponse:
        raise AssertionError("no quote id was given")

    async def redeem_promo_code(
        self, request: pricing_pb2.RedeemPromoCodeRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.RedeemPromoCodeResponse:
        raise AssertionError("no promo code was given")

    async def quote_order(
        self, request: pricing_pb2.QuoteOrderRequest, *, deadline_s: float | None = None
    ) -> pricing_pb2.QuoteOrderResponse:
        m = common_pb2.Money(amount_minor=2398, currency_code="USD")
        return pricing_pb2.QuoteOrderResponse(
            quote=pricing_pb2.Quote(quote_id="q1", subtotal=m, surge=self.surge)
        )


class Eta:
    """The ETA client port: keeps each request, answers 30 minutes."""

    def __init__(self) -> None:
        self.sent: list[eta_pb2.EstimateDeliveryRequest] = []

    async def estimate_delivery(
        self, request: eta_pb2.EstimateDeliveryRequest, *, deadline_s: float | None = None
    ) -> eta_pb2.EstimateDeliveryResponse:
        self.sent.append(request)
        out = eta_pb2.EstimateDeliveryResponse(prep_minutes=12, total_minutes=30)
        out.estimated_delivery_time.FromDatetime(START + dt.timedelta(minutes=30))
        return out


async def test_the_quotes_surge_gives_the_restaurant_cells_conditions() -> None:
    live = pricing_pb2.Surge(
        multiplier=1.8,
        cell=CELL,
        supply=3,
        event_multiplier=1.5,
        weather_multiplier=1.5,
        weather=WK.WEATHER_KIND_HEAVY_RAIN,
    )
    q = await RemotePricing(Pricing(live), FallbackPricing()).quote(PRICE, timeout_s=1)
    assert cell_conditions(q, REST) == CellConditions(3, WK.WEATHER_KIND_HEAVY_RAIN, 1.5)
    # No driver in the cell is a known 0, not unknown.
    empty = pricing_pb2.Surge()
    empty.CopyFrom(live)
    empty.supply = 0
    q0 = await RemotePricing(Pricing(empty), FallbackPricing()).quote(PRICE, timeout_s=1)
    assert cell_conditions(q0, REST).drivers_nearby == 0
    # Pricing blind to Redis or Location: the weather is known, the drivers and events not.
    blind = pricing_pb2.Surge(multiplier=1.0, cell=CELL, event_multiplier=1.0, fallback=True,
                              weather=WK.WEATHER_KIND_SNOW)  # fmt: skip
    qb = await RemotePricing(Pricing(blind), FallbackPricing()).quote(PRICE, timeout_s=1)
    assert cell_conditions(qb, REST) == CellConditions(None, WK.WEATHER_KIND_SNOW, None)
    # A surge of another cell says nothing of the restaurant's; Pricing away: nothing known.
    assert cell_conditions(q, (40.7128, -74.0060)) == CellConditions()
    assert cell_conditions(FallbackPricing().price(PRICE), REST) == CellConditions()


async def test_remote_eta_sends_the_conditions_and_leaves_unknown_ones_out() -> None:
    eta = Eta()
    base = EtaInput("r", REST, (37.78, -122.41), 18, 2, 2398, "USD", START)
    known = dataclasses.replace(base, drivers_nearby=0, weather=WK.WEATHER_KIND_HEAVY_RAIN,
                                event_multiplier=1.5)  # fmt: skip
    port = RemoteEta(eta, FallbackEta())
    await port.estimate(known, timeout_s=1)
    await port.estimate(base, timeout_s=1)
    sent, blank = eta.sent
    assert sent.HasField("drivers_nearby") and sent.drivers_nearby == 0
    assert (sent.weather, sent.event_multiplier) == (WK.WEATHER_KIND_HEAVY_RAIN, 1.5)
    assert not blank.HasField("drivers_nearby")
    assert (blank.weather, blank.event_multiplier) == (0, 0.0)  # 0: not sent, read as 1.0


async def test_every_re_estimate_carries_the_conditions_kept_at_placement() -> None:
    pool = AsyncConnectionPool("postgresql://unused", open=False)  # never opened
    stages = StageEstimates(pool, RemoteEta(Eta(), FallbackEta()), spawn=lambda c: c.close())
    o = _order(
        eta_drivers_nearby=4,
        eta_weather=WK.WEATHER_KIND_LIGHT_RAIN,
        eta_event_multiplier=1.2,
        delivery_address={"lat": 37.78, "lon": -122.41},
    )
    for stage in ("confirmation", "assignment", "pickup"):
        e = await stages.stage_input(o, stage, START)
        assert (e.drivers_nearby, e.weather, e.event_multiplier) == (
            4, WK.WEATHER_KIND_LIGHT_RAIN, pytest.approx(1.2))  # fmt: skip
    unknown = await stages.stage_input(_order(), "pickup", START)
    assert (unknown.drivers_nearby, unknown.weather, unknown.event_multiplier) == (None, 0, None)


def test_the_weather_kind_is_the_most_specific_areas() -> None:
    w = [Weather("9q", WK.WEATHER_KIND_LIGHT_RAIN), Weather("9q8yy", WK.WEATHER_KIND_SNOW)]
    assert weather_kind(w, "9q8yy") == WK.WEATHER_KIND_SNOW
    assert weather_kind(w, "9q8yz") == WK.WEATHER_KIND_LIGHT_RAIN
    assert weather_kind(w, "dr5ru") == 0 and weather_multiplier(w, "dr5ru") == 1
    assert weather_multiplier(w, "9q8yy") == weather_multiplier([w[1]], "9q8yy") > 1
