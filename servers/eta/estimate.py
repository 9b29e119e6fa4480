"""EstimateDelivery's arithmetic: prep left + pickup + delivery, from the models or the baseline.

Pure: legs (already routed) and the order's facts in, parts with their spreads out.

- **prep**: the prep model's quantiles for the order, less the time since it was
  placed (none once the food is ready or picked up);
- **pickup**: from food ready to food in the driver's hands. With a driver known,
  their drive to the restaurant (the travel model, their pace and vehicle) overlaps
  the kitchen's work, so only the part beyond the prep left counts, plus the
  counter; without one, the wait model on what is known now (the free drivers
  near the restaurant, weather, a local event, the kitchen), or for a model file
  from before it, the history's wait at that hour. The parts therefore add
  up to the total, and ``pickup_minutes`` is the driver's share, not the whole drive;
- **delivery**: the travel model on the drive to the customer (from the driver,
  once they have the food).

Without a model the routing-only baseline answers: the road graph's time with
traffic and the vehicle's profile, a fixed prep, fixed waits; its spreads grow with
each part. A model's 80 % interval is its stage's conformal band where it has one
(``servers.eta.conformal``: what estimates at that stage missed by on recent
deliveries), else the parts' spreads. Either way the confidence comes from the
interval (``confidence.py``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from foodmesh.core.geo import haversine_m
from foodmesh.v1 import common_pb2
from servers.eta.confidence import Interval, Part, combine, confidence
from servers.eta.conformal import stage_of, widen
from servers.eta.features import (
    CENTER,
    is_peak,
    prep_matrix,
    travel_matrix,
    vehicle_time_s,
    wait_matrix,
)
from servers.eta.model import EtaModel
from servers.eta.routing import Leg

__all__ = [
    "BASELINE_PREP_MIN",
    "DeliveryEstimate",
    "DeliveryInput",
    "estimate_delivery",
    "travel_minutes",
]

OS = common_pb2.OrderStatus
_AFTER_PICKUP = {OS.ORDER_STATUS_PICKED_UP, OS.ORDER_STATUS_IN_TRANSIT}
_FINISHED = {OS.ORDER_STATUS_DELIVERED, OS.ORDER_STATUS_CANCELLED}
#: The baseline's fixed kitchen time and waits, minutes.
BASELINE_PREP_MIN = 20.0
BASELINE_HANDOVER_MIN = 2.0
BASELINE_WAIT_MIN = 3.0


@dataclass(frozen=True, slots=True)
class DeliveryInput:
    restaurant_id: str
    item_count: int
    subtotal: float  # major units
    order_time: dt.datetime
    now: dt.datetime
    #: Local (the city's) hour and weekday of the order and of now.
    order_hour: int
    order_dow: int
    hour: int
    dow: int
    status: int
    weather: int
    restaurant_load: int
    vehicle: int
    driver_id: str
    driver_known: bool
    #: To the customer: from the restaurant, or from the driver once picked up.
    delivery_leg: Leg
    delivery_to: tuple[float, float]
    #: Driver to restaurant, when a driver is known and has not picked up yet.
    pickup_leg: Leg | None
    restaurant: tuple[float, float]
    #: The Catalog's prep time, and the mean of the restaurant's latest ready orders and
    #: how many (NaN, 0 when the caller does not know: the model's history stands in).
    listed_prep_min: float = math.nan
    recent_prep_min: float = math.nan
    recent_orders: int = 0
    #: Free drivers near the restaurant now (Pricing's count in its cell; NaN: unknown) and
    #: a local event's factor there (1.0 without one).
    drivers_nearby: float = math.nan
    event_multiplier: float = 1.0


@dataclass(frozen=True, slots=True)
class DeliveryEstimate:
    prep: Part
    pickup: Part
    delivery: Part
    interval: Interval
    confidence: float
    model_version: str
    straight_line: bool

    @property
    def from_model(self) -> bool:
        return self.model_version != "baseline"


def _zone_km(p: tuple[float, float]) -> float:
    return haversine_m(p[0], p[1], CENTER[0], CENTER[1]) / 1000.0


def travel_minutes(
    model: EtaModel | None,
    legs: list[Leg],
    *,
    ends: list[tuple[float, float]],
    hour: int,
    dow: int,
    weather: int,
    vehicle: int,
    driver_id: str,
    to_customer: bool,
) -> np.ndarray:
    """(n, 3) minutes (q10, q50, q90) of legs: the travel model, or the baseline's spread."""
    ff = np.array([leg.free_flow_s for leg in legs])
    g = np.array([leg.duration_s for leg in legs])
    if model is None:
        t = vehicle_time_s(vehicle, ff, g) / 60.0
        sigma = 0.2 * t + (1.0 if to_customer else 0.5)
        return np.column_stack([np.maximum(0.0, t - 1.28 * sigma), t, t + 1.28 * sigma])
    prof = model.driver(driver_id) if driver_id else model.default_driver
    known = bool(driver_id) and driver_id in model.drivers
    x = travel_matrix(
        distance_m=np.array([leg.distance_m for leg in legs]),
        free_flow_s=ff,
        graph_s=g,
        hour=hour,
        day_of_week=dow,
        weather=weather,
        zone_km=np.array([_zone_km(p) for p in ends]),
        driver_speed_ratio=prof.speed_ratio,
        driver_deliveries=prof.deliveries if known else 0,
        vehicle=vehicle,
        to_customer=1.0 if to_customer else 0.0,
    )
    return model.predict_travel(x)


def estimate_delivery(inp: DeliveryInput, model: EtaModel | None) -> DeliveryEstimate:
    """The three parts, their total with an 80% interval, and the confidence."""
    elapsed = max(0.0, (inp.now - inp.order_time).total_seconds() / 60.0)
    rest_orders: int | None = None
    finished = inp.status in _FINISHED
    picked_up = inp.status in _AFTER_PICKUP
    ready = inp.status == OS.ORDER_STATUS_READY_FOR_PICKUP
    # Prep.
    if finished or picked_up or ready:
        prep = Part.exact(0.0)
    elif model is None:
        left = max(0.0, BASELINE_PREP_MIN - elapsed)
        prep = Part.spread(left, 0.35 * BASELINE_PREP_MIN if left > 0 else 0.0)
    else:
        prof, known = model.restaurant(inp.restaurant_id)
        rest_orders = max(prof.orders if known else 0, inp.recent_orders)
        listed = inp.listed_prep_min
        if not listed > 0:  # no listed time sent: what history knows of the kitchen
            listed = prof.avg_prep_min if known else math.nan
        q = model.predict_prep(
            prep_matrix(
                listed_prep_min=listed,
                recent_prep_min=inp.recent_prep_min if inp.recent_orders > 0 else math.nan,
                recent_orders=inp.recent_orders,
                item_count=inp.item_count,
                subtotal=inp.subtotal,
                hour=inp.order_hour,
                day_of_week=inp.order_dow,
                restaurant_load=inp.restaurant_load,
                weather=inp.weather,
            )
        )[0]
        lo, mid, hi = (max(0.0, float(v) - elapsed) for v in q)
        prep = Part(mid, lo, hi)
    # Delivery.
    if finished:
        delivery = Part.exact(0.0)
    else:
        d = travel_minutes(
            model,
            [inp.delivery_leg],
            ends=[inp.delivery_to],
            hour=inp.hour,
            dow=inp.dow,
            weather=inp.weather,
            vehicle=inp.vehicle,
            driver_id=inp.driver_id,
            to_customer=True,
        )[0]
        delivery = Part(float(d[1]), float(d[0]), float(d[2]))
    # Pickup: what the driver adds beyond the prep left.
    handover = model.handover_min if model is not None else BASELINE_HANDOVER_MIN
    if finished or picked_up:
        pickup = Part.exact(0.0)
    elif inp.pickup_leg is not None:
        q = travel_minutes(
            model,
            [inp.pickup_leg],
            ends=[inp.restaurant],
            hour=inp.hour,
            dow=inp.dow,
            weather=inp.weather,
            vehicle=inp.vehicle,
            driver_id=inp.driver_id,
            to_customer=False,
        )[0]
        lo, mid, hi = (max(0.0, float(v) - prep.median) + handover for v in q)
        pickup = Part(mid, lo, hi)
    elif model is None:
        pickup = Part.spread(BASELINE_WAIT_MIN, 1.5)
    elif model.wait is not None:
        listed = inp.listed_prep_min
        if not listed > 0:
            prof, known = model.restaurant(inp.restaurant_id)
            listed = prof.avg_prep_min if known else math.nan
        w = model.predict_wait(
            wait_matrix(
                hour=inp.hour,
                day_of_week=inp.dow,
                weather=inp.weather,
                event_multiplier=inp.event_multiplier,
                drivers_nearby=inp.drivers_nearby,
                restaurant_load=inp.restaurant_load,
                listed_prep_min=listed,
                recent_prep_min=inp.recent_prep_min if inp.recent_orders > 0 else math.nan,
                item_count=inp.item_count,
            )
        )[0]
        pickup = Part(float(w[1]), float(w[0]), float(w[2]))
    else:
        lo, mid, hi = model.pickup_wait_by_hour[inp.hour % 24]
        pickup = Part(mid, lo, hi)
    interval = combine([prep, pickup, delivery])
    stage = stage_of(picked_up=picked_up, driver_on_the_way=inp.pickup_leg is not None)
    band = model.stage_residuals.get(stage) if model is not None and not finished else None
    if band is not None:  # calibrated on recent deliveries: the band, not the spreads
        t = interval.total
        lo_b, hi_b = widen(t, band, spread=interval.upper - interval.lower)
        interval = Interval(t, float(lo_b), float(hi_b))
    elif model is not None and model.total_interval_scale != 1.0:
        k = model.total_interval_scale
        t = interval.total
        interval = Interval(t, max(0.0, t - (t - interval.lower) * k), t + (interval.upper - t) * k)
    conf = confidence(
        interval,
        driver_assigned=inp.driver_known or bool(inp.driver_id),
        peak=bool(is_peak(inp.hour, inp.dow)),
        restaurant_orders=rest_orders,
    )
    if finished:
        conf = 1.0
    straight = inp.delivery_leg.straight_line or (
        inp.pickup_leg is not None and inp.pickup_leg.straight_line
    )
    return DeliveryEstimate(
        prep=prep,
        pickup=pickup,
        delivery=delivery,
        interval=interval,
        confidence=conf,
        model_version=model.version if model is not None else "baseline",
        straight_line=straight,
    )
