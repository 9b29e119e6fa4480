"""PricingServicer: decode the request, call the Catalog, surge, promo rules and store, encode.

The domain lives in ``cart`` (menu prices), ``promo``, ``surge``, and the receipt shared with
Order (``foodmesh.core`` fees, tax, receipt; all pure); ``live`` is the surge cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from typing import Any

import grpc
from redis.exceptions import RedisError

from foodmesh.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from foodmesh.core.fees import FeeSchedule
from foodmesh.core.geo import METERS_PER_MILE, valid_lat_lon
from foodmesh.core.receipt import compute_breakdown
from foodmesh.core.tax import TaxTable
from foodmesh.v1 import pricing_pb2
from foodmesh.v1 import pricing_pb2_grpc as pb_grpc
from servers.pricing import convert
from servers.pricing.cart import check_items, price_items
from servers.pricing.catalog import QuoteCatalog
from servers.pricing.forecast import SurgeRisk, surge_risk
from servers.pricing.forecaster import DemandForecaster
from servers.pricing.live import Conditions, SurgeEngine
from servers.pricing.promo import PromoRejected, discount_minor
from servers.pricing.quotes import QuoteBook
from servers.pricing.store import (
    DEMAND_BUCKET_S,
    PricingStore,
    QuoteAlreadyRedeemed,
    UnknownPromo,
)
from servers.runtime.auth import require
from servers.runtime.context import time_left

__all__ = ["PricingServicer"]

_log = logging.getLogger("foodmesh.pricing")
Ctx = grpc.aio.ServicerContext[Any, Any]
_MAX_AHEAD = dt.timedelta(days=7)
_RISK = {
    SurgeRisk.LOW: pricing_pb2.SURGE_RISK_LOW,
    SurgeRisk.MEDIUM: pricing_pb2.SURGE_RISK_MEDIUM,
    SurgeRisk.HIGH: pricing_pb2.SURGE_RISK_HIGH,
}


class PricingServicer(pb_grpc.PricingServiceServicer):
    def __init__(
        self,
        *,
        store: PricingStore,
        catalog: QuoteCatalog,
        surge: SurgeEngine,
        conditions: Conditions,
        quotes: QuoteBook,
        fees: FeeSchedule | None = None,
        taxes: TaxTable | None = None,
        quote_ttl_s: float = 300.0,
        forecaster: DemandForecaster | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.surge = surge
        self.conditions = conditions
        self.quotes = quotes
        self.fees = fees or FeeSchedule()
        self.taxes = taxes or TaxTable()
        self.quote_ttl_s = quote_ttl_s
        self.forecaster = forecaster
        # Kept 30 s past its expiry, so GetQuote can tell "expired" from "unknown" a while.
        self._keep_ms = int(quote_ttl_s * 1000) + 30_000

    # -- QuoteOrder ----------------------------------------------------------------------

    async def QuoteOrder(  # noqa: N802
        self, request: pricing_pb2.QuoteOrderRequest, context: Ctx
    ) -> pricing_pb2.QuoteOrderResponse:
        p = require()
        customer_id = request.customer_id or (p.subject if p.role == "customer" else "")
        if p.role == "customer" and customer_id != p.subject:
            raise PermissionDenied("a customer may quote only for themselves", reason="NOT_OWNER")
        v = Violations()
        convert.check_id(v, request.restaurant_id, "restaurant_id")
        if request.customer_id:
            convert.check_id(v, request.customer_id, "customer_id")
        check_items(v, request.items)
        a = request.delivery_address
        v.check(request.HasField("delivery_address") and valid_lat_lon(a.lat, a.lon),
                "delivery_address", "is required: lat -90..90, lon -180..180")  # fmt: skip
        code = ""
        if request.promo_code:
            code = convert.check_promo_code(v, request.promo_code, "promo_code")
            v.check(bool(customer_id), "customer_id", "is required with a promo code")
        now = time.time()
        if request.HasField("delivery_time"):
            when = request.delivery_time.ToDatetime(dt.UTC)
            v.check(dt.timedelta(minutes=-5) <= when - dt.datetime.now(dt.UTC) <= _MAX_AHEAD,
                    "delivery_time", "must be from now to 7 days ahead")  # fmt: skip
        v.raise_if_any()

        rid = request.restaurant_id
        try:
            got, menu, where = await self.catalog.quote_inputs(
                rid, a.lat, a.lon, deadline_s=max(0.2, time_left() * 0.5)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"no restaurant {rid!r}", reason="RESTAURANT_NOT_FOUND") from None
            raise Unavailable(f"the catalog did not answer ({exc.code().name}): retry") from None
        r = got.restaurant
        currency = r.minimum_order.currency_code or "USD"
        items = price_items(request.items, menu)
        if not where.deliverable:
            raise FailedPrecondition(
                f"delivery_address: restaurant {rid!r} does not deliver there ({where.reason})",
                reason="OUTSIDE_DELIVERY_ZONE",
            )
        subtotal = sum(i.total_minor for i in items)
        rlat, rlon = r.address.lat, r.address.lon
        surge = self.surge.cached(rlat, rlon) or await self.surge.at(rlat, rlon)
        off = 0
        if code:
            off = await self._discount(code, customer_id, subtotal, currency, surge.cell, now,
                                       detailed=p.role == "ops")  # fmt: skip
        b = compute_breakdown(
            subtotal_minor=subtotal,
            zone_fee_minor=where.delivery_fee.amount_minor,
            distance_m=where.distance_miles * METERS_PER_MILE,
            surge_tenths=max(10, round(surge.multiplier * 10)),
            discount_off_minor=off,
            tax_rule=self.taxes.rule(a.state, a.zip),
            fees=self.fees,
            promo_code=code,
        )
        # Built in place inside the response: no Money temporaries, no copy of the quote.
        out = pricing_pb2.QuoteOrderResponse()
        q = out.quote
        q.quote_id = "q_" + os.urandom(16).hex()
        for m, amount in (
            (q.subtotal, b.subtotal_minor), (q.delivery_fee, b.delivery_fee_minor),
            (q.service_fee, b.service_fee_minor), (q.small_order_fee, b.small_order_fee_minor),
            (q.tax, b.tax_minor), (q.discount, b.discount_minor), (q.total, b.total_minor),
        ):  # fmt: skip
            m.amount_minor = amount
            m.currency_code = currency
        q.surge.CopyFrom(surge)
        add_line = q.lines.add
        for ln in b.lines:
            line_amount = add_line(kind=ln.kind, label=ln.label).amount
            line_amount.amount_minor = ln.amount_minor
            line_amount.currency_code = currency
        q.customer_id = customer_id
        q.restaurant_id = rid
        q.items.MergeFrom(request.items)
        q.delivery_address.CopyFrom(a)
        if off:
            q.promo_code = code
        elif code:
            q.promo_message = f"{code} takes nothing off this order"
        q.create_time.FromNanoseconds(int(now * 1e9))
        q.expire_time.FromNanoseconds(int((now + self.quote_ttl_s) * 1e9))
        try:
            await self.quotes.put(q.quote_id, q.SerializeToString(), ttl_ms=self._keep_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            # The price still stands; PlaceOrder will not find it and re-quotes.
            _log.warning("quote %s not stored (%s)", q.quote_id, exc or "timeout")
        return out

    async def _discount(
        self,
        code: str,
        customer_id: str,
        subtotal: int,
        currency: str,
        cell: str,
        now: float,
        *,
        detailed: bool,
    ) -> int:
        """The code's discount, or INVALID_ARGUMENT on ``promo_code``.

        Why a code does not apply is told to ops only: anyone else (a customer, or a
        customer through PlaceOrder) gets the same answer for an unknown code and for a
        code that exists but does not apply, so codes cannot be discovered by guessing.
        """
        found = await self.store.promo_with_usage(code, customer_id)
        try:
            if found is None:
                raise PromoRejected("NOT_FOUND", f"unknown promo code {code!r}")
            promo, usage = found
            return discount_minor(promo, subtotal_minor=subtotal, currency=currency, cell=cell,
                                  usage=usage, now=now)  # fmt: skip
        except PromoRejected as exc:
            if detailed:
                raise convert.PromoInvalid("promo_code", exc.message, exc.reason) from None
            _log.info("promo code %s refused for %s: %s", code, customer_id, exc.reason)
            raise convert.PromoInvalid(
                "promo_code",
                f"{code} is not a promo code that applies to this order",
                "NOT_APPLICABLE",
            ) from None

    # -- GetQuote --------------------------------------------------------------------------

    async def GetQuote(  # noqa: N802
        self, request: pricing_pb2.GetQuoteRequest, context: Ctx
    ) -> pricing_pb2.GetQuoteResponse:
        p = require()
        v = Violations()
        v.check(bool(request.quote_id) and len(request.quote_id) <= 64 and
                request.quote_id.isascii(), "quote_id", "is required")  # fmt: skip
        v.raise_if_any()
        try:
            raw = await self.quotes.get(request.quote_id)
        except (RedisError, OSError, TimeoutError):
            raise Unavailable("quotes cannot be read now: quote again") from None
        missing = NotFound(f"no valid quote {request.quote_id!r}: quote again",
                           reason="QUOTE_NOT_FOUND")  # fmt: skip
        if raw is None:
            raise missing
        q = pricing_pb2.Quote.FromString(raw)
        if q.expire_time.ToNanoseconds() <= time.time_ns():
            raise missing
        if p.role == "customer" and q.customer_id != p.subject:
            raise missing
        return pricing_pb2.GetQuoteResponse(quote=q)

    # -- surge ---------------------------------------------------------------------------

    async def GetSurge(  # noqa: N802
        self, request: pricing_pb2.GetSurgeRequest, context: Ctx
    ) -> pricing_pb2.GetSurgeResponse:
        v = Violations()
        v.check(valid_lat_lon(request.lat, request.lon), "lat",
                "lat must be -90..90 and lon -180..180")  # fmt: skip
        v.raise_if_any()
        lat, lon = request.lat, request.lon
        out = pricing_pb2.GetSurgeResponse()
        out.surge.CopyFrom(self.surge.cached(lat, lon) or await self.surge.at(lat, lon))
        return out

    async def GetSurgeHistory(  # noqa: N802
        self, request: pricing_pb2.GetSurgeHistoryRequest, context: Ctx
    ) -> pricing_pb2.GetSurgeHistoryResponse:
        v = Violations()
        v.check(len(request.cell) == 5 and bool(convert.CELL.match(request.cell)), "cell",
                "must be a geohash-5 cell")  # fmt: skip
        end = (request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time")
               else dt.datetime.now(dt.UTC))  # fmt: skip
        start = (request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time")
                 else end - dt.timedelta(hours=1))  # fmt: skip
        v.check(start <= end, "start_time", "must not be after end_time")
        v.raise_if_any()
        points = await self.store.history(request.cell, start, end)
        out = pricing_pb2.GetSurgeHistoryResponse()
        for h in points:
            sp = out.points.add(multiplier=h.multiplier, demand=h.demand, supply=h.supply)
            sp.timestamp.FromDatetime(h.at)
        return out

    async def ForecastDemand(  # noqa: N802
        self, request: pricing_pb2.ForecastDemandRequest, context: Ctx
    ) -> pricing_pb2.ForecastDemandResponse:
        v = Violations()
        v.check(len(request.cells) <= 200, "cells", "at most 200")
        for i, c in enumerate(request.cells[:200]):
            v.check(len(c) == 5 and bool(convert.CELL.match(c)), f"cells[{i}]",
                    "must be a geohash-5 cell")  # fmt: skip
        v.check(0 <= request.limit <= 200, "limit", "must be 0 to 200")
        v.raise_if_any()
        f = self.forecaster
        if f is None:
            raise Unavailable("the demand forecast is not running on this replica")
        cells = list(dict.fromkeys(request.cells)) or f.busiest(request.limit or 20)
        # The drivers expected are those available now: the surge's supply (cached per cell).
        surges = await asyncio.gather(*(self.surge.of_cell(c) for c in cells))
        out = pricing_pb2.ForecastDemandResponse()
        now = time.time()
        for cell, s in zip(cells, surges, strict=True):
            cf = out.cells.add(cell=cell, recent_orders=f.recent(cell), expected_drivers=s.supply)
            for fc in f.forecast(cell, now=now):
                d = cf.forecasts.add(
                    horizon_minutes=fc.horizon_min, expected_orders=round(fc.expected, 2),
                    low=fc.low, high=fc.high,
                    surge_risk=_RISK[surge_risk(fc.expected, s.supply)],
                )  # fmt: skip
                d.start_time.FromNanoseconds(int(fc.start_ts * 1e9))
                d.end_time.FromNanoseconds(int(fc.end_ts * 1e9))
                if fc.horizon_min == 30 and not out.HasField("forecast_time"):
                    out.forecast_time.FromNanoseconds(int(fc.start_ts * 1e9))
        m = f.model
        out.model.kind = m.kind
        if m.trained_at:
            out.model.train_time.FromNanoseconds(int(m.trained_at * 1e9))
        out.model.rows = m.rows
        for name, value in (("validation_wape", m.validation_wape),
                            ("baseline_wape", m.baseline_wape),
                            ("interval_coverage", m.coverage),
                            ("prior_share", m.prior_share)):  # fmt: skip
            if value == value:  # not NaN
                setattr(out.model, name, round(value, 4))
        return out

    async def ImportDemandPrior(  # noqa: N802
        self, request: pricing_pb2.ImportDemandPriorRequest, context: Ctx
    ) -> pricing_pb2.ImportDemandPriorResponse:
        v = Violations()
        c = request.cell
        v.check(len(c) == 5 and bool(convert.CELL.match(c)), "cell", "must be a geohash-5 cell")
        start_ns = request.start_time.ToNanoseconds()
        v.check(request.HasField("start_time") and start_ns % (DEMAND_BUCKET_S * 10**9) == 0,
                "start_time", "is required: a multiple of five minutes")  # fmt: skip
        v.check(start_ns <= time.time_ns(), "start_time", "must not be in the future")
        v.check(len(request.orders) <= 10080, "orders", "at most 10080 buckets (35 days)")
        v.check(all(n <= 100_000 for n in request.orders), "orders", "at most 100000 a bucket")
        v.raise_if_any()
        if self.forecaster is None:
            raise Unavailable("the demand forecast is not running on this replica")
        n = await self.store.import_prior(c, request.start_time.ToDatetime(dt.UTC),
                                          list(request.orders))  # fmt: skip
        return pricing_pb2.ImportDemandPriorResponse(buckets=n)

    async def SetConditions(  # noqa: N802
        self, request: pricing_pb2.SetConditionsRequest, context: Ctx
    ) -> pricing_pb2.SetConditionsResponse:
        v = Violations()
        v.check(len(request.events) <= 10_000, "events", "at most 10000")
        v.check(len(request.weather) <= 10_000, "weather", "at most 10000")
        events = convert.events_from_pb(v, list(request.events))
        weather = convert.weather_from_pb(v, list(request.weather))
        v.raise_if_any()
        await self.store.replace_conditions(events, weather)
        if await self.conditions.refresh(self.store):
            self.surge.invalidate()
        return pricing_pb2.SetConditionsResponse(events=len(events), weather=len(weather))

    # -- promo codes ---------------------------------------------------------------------

    async def UpsertPromoCode(  # noqa: N802
        self, request: pricing_pb2.UpsertPromoCodeRequest, context: Ctx
    ) -> pricing_pb2.UpsertPromoCodeResponse:
        if not request.HasField("promo"):
            raise InvalidArgument.field("promo", "is required")
        promo = convert.promo_from_pb(request.promo)
        await self.store.upsert_promo(promo)
        return pricing_pb2.UpsertPromoCodeResponse(promo=convert.promo_to_pb(promo))

    async def RedeemPromoCode(  # noqa: N802
        self, request: pricing_pb2.RedeemPromoCodeRequest, context: Ctx
    ) -> pricing_pb2.RedeemPromoCodeResponse:
        v = Violations()
        code = convert.check_promo_code(v, request.code, "code")
        convert.check_id(v, request.customer_id, "customer_id")
        v.check(bool(request.order_id) and len(request.order_id) <= 128 and
                request.order_id.isascii(), "order_id", "is required")  # fmt: skip
        v.raise_if_any()
        key = request.order_id
        order_id = "" if key.startswith("quote:") else key
        try:
            done = await self.store.redeem(code, request.customer_id, key, now=time.time(),
                                           order_id=order_id)  # fmt: skip
        except UnknownPromo:
            raise convert.PromoInvalid(
                "code", f"unknown promo code {code!r}", "NOT_FOUND"
            ) from None
        except PromoRejected as exc:
            raise convert.PromoInvalid("code", exc.message, exc.reason) from None
        except QuoteAlreadyRedeemed:
            raise FailedPrecondition(
                f"the promo use of {key!r} belongs to another order: quote again",
                reason="QUOTE_ALREADY_REDEEMED",
            ) from None
        return pricing_pb2.RedeemPromoCodeResponse(customer_uses=done.customer_uses)

    async def ReleasePromoCode(  # noqa: N802
        self, request: pricing_pb2.ReleasePromoCodeRequest, context: Ctx
    ) -> pricing_pb2.ReleasePromoCodeResponse:
        v = Violations()
        code = convert.check_promo_code(v, request.code, "code")
        v.check(bool(request.order_id) and len(request.order_id) <= 128, "order_id", "is required")
        v.raise_if_any()
        released = await self.store.release(code, request.order_id)
        return pricing_pb2.ReleasePromoCodeResponse(released=released)
