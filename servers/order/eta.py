"""When an order arrives: the ETA service's estimate, or prep + travel as a fallback.

``FallbackEta`` (used when ``FOODMESH_ORDER_ETA_TARGET`` is not set or the ETA
service does not answer): the restaurant's typical preparation time, clamped to
the design's 5–60 minutes, plus travel: the straight-line distance times a road
detour factor at an urban driving speed, plus a hand-over allowance.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from foodmesh.v1 import common_pb2, eta_pb2
from servers.order.eta_features import KitchenNow

__all__ = ["Estimate", "EtaInput", "EtaPort", "FallbackEta", "RemoteEta"]

_log = logging.getLogger("foodmesh.order.eta")


@dataclass(frozen=True, slots=True)
class EtaInput:
    restaurant_id: str
    restaurant: tuple[float, float]
    destination: tuple[float, float]
    prep_minutes: int
    item_count: int
    subtotal_minor: int
    currency: str
    start: dt.datetime
    #: Where the order stands (a re-estimate after placement): its status and driver.
    status: str = "placed"
    driver_id: str = ""
    now: dt.datetime | None = None
    #: The driver's VehicleType, when known (0: not known).
    vehicle: int = 0
    #: The restaurant's cell at placement (kept with the order): free drivers (None:
    #: unknown), WeatherKind (0: unknown), event factor (None: unknown, read as 1.0).
    drivers_nearby: int | None = None
    weather: int = 0
    event_multiplier: float | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    prep_minutes: float
    travel_minutes: float
    arrival: dt.datetime
    ready: dt.datetime
    confidence: float
    source: str
    #: The 80 % interval of the arrival, when the estimator gives one.
    lower: dt.datetime | None = None
    upper: dt.datetime | None = None


class EtaPort(Protocol):
    async def estimate(self, e: EtaInput, *, timeout_s: float) -> Estimate: ...


@dataclass(frozen=True, slots=True)
class FallbackEta:
    road_factor: float = 1.3
    speed_mph: float = 15.0
    handover_min: float = 3.0
    confidence: float = 0.5

    def travel_minutes(self, e: EtaInput) -> float:
        miles = haversine_m(*e.restaurant, *e.destination) / METERS_PER_MILE
        return miles * self.road_factor / self.speed_mph * 60.0 + self.handover_min

    def compute(self, e: EtaInput) -> Estimate:
        prep = float(min(60, max(5, e.prep_minutes)))
        travel = round(self.travel_minutes(e), 1)
        ready = e.start + dt.timedelta(minutes=prep)
        return Estimate(prep, travel, ready + dt.timedelta(minutes=travel), ready,
                        self.confidence, "fallback")  # fmt: skip

    async def estimate(self, e: EtaInput, *, timeout_s: float) -> Estimate:
        return self.compute(e)


class _EstimateClient(Protocol):
    async def estimate_delivery(
        self, request: eta_pb2.EstimateDeliveryRequest, *, deadline_s: float | None = ...
    ) -> eta_pb2.EstimateDeliveryResponse: ...


class _Kitchens(Protocol):
    async def of(
        self, restaurant_id: str, *, placed_before: dt.datetime | None = ...
    ) -> KitchenNow | None: ...


class RemoteEta:
    """``EtaService.EstimateDelivery``, falling back to ``fallback`` when it does not answer.

    With ``kitchens`` each request carries the kitchen's live state (its open orders,
    its recent prep times) beside its listed prep time: the model's live features.
    """

    def __init__(
        self, client: _EstimateClient, fallback: FallbackEta, *, kitchens: _Kitchens | None = None
    ) -> None:
        self.client = client
        self.fallback = fallback
        self.kitchens = kitchens

    async def estimate(self, e: EtaInput, *, timeout_s: float) -> Estimate:
        req = eta_pb2.EstimateDeliveryRequest(
            restaurant_id=e.restaurant_id,
            restaurant_location=common_pb2.LatLng(lat=e.restaurant[0], lon=e.restaurant[1]),
            delivery_location=common_pb2.LatLng(lat=e.destination[0], lon=e.destination[1]),
            item_count=e.item_count,
            subtotal=common_pb2.Money(amount_minor=e.subtotal_minor, currency_code=e.currency),
            restaurant_listed_prep_minutes=float(max(0, e.prep_minutes)),
            driver_id=e.driver_id,
            vehicle_type=e.vehicle,  # type: ignore[arg-type]
            order_status=common_pb2.OrderStatus.Value(f"ORDER_STATUS_{e.status.upper()}"),
            weather=e.weather,  # type: ignore[arg-type]
            event_multiplier=e.event_multiplier or 0.0,
        )
        if e.drivers_nearby is not None:
            req.drivers_nearby = e.drivers_nearby
        req.order_time.FromDatetime(e.start)
        kitchen = None
        if self.kitchens is not None:
            # A re-estimate (status past placed) counts the orders placed before this one.
            before = e.start if e.status != "placed" else None
            kitchen = await self.kitchens.of(e.restaurant_id, placed_before=before)
        if kitchen is not None:
            req.restaurant_active_orders = kitchen.open_orders
            req.restaurant_recent_prep_minutes = kitchen.recent_prep_min
            req.restaurant_recent_orders = kitchen.recent_orders
        try:
            r = await self.client.estimate_delivery(req, deadline_s=timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNIMPLEMENTED,
            ):
                raise
            _log.warning("eta unavailable (%s): fallback formula", exc.code().name)
            return self.fallback.compute(e)
        now = r.estimated_delivery_time.ToDatetime(dt.UTC) - dt.timedelta(minutes=r.total_minutes)
        ready = now + dt.timedelta(minutes=r.prep_minutes)
        return Estimate(
            lower=now + dt.timedelta(minutes=r.lower_minutes),
            upper=now + dt.timedelta(minutes=r.upper_minutes),
            prep_minutes=r.prep_minutes,
            travel_minutes=r.total_minutes - r.prep_minutes,
            arrival=r.estimated_delivery_time.ToDatetime(dt.UTC),
            ready=ready,
            confidence=r.eta_confidence,
            source="eta",
        )
