"""The live service's state as the trip planner sees it, and its plans as offers. Pure.

The live engine decides with ``trips.plan_trips``, the planner ``foodmesh replay``
runs; this module is the only difference between the two, the translation:

- a pooled order (``Assignment``) is a ``TripOrder``: its restaurant is its pickup
  place, its readiness the prep estimate the Order service sent, its search radius
  and the drivers who declined it are limits, an order moved to the front (lost
  driver, escalated) is served first, Pricing's demand at its drop-off is the
  opportunity term;
- an available driver (Location, with the profile from the store) is a
  ``FreeDriver`` free now; their vehicle bounds the trip; acceptance and quality
  are a penalty in minutes (a likely decline costs offers that lapse);
- a driver carrying orders is free at their last drop-off's expected time (a
  horizon driver, never offered before then); one whose food is not picked up yet
  is an ``OpenTrip`` another order of that restaurant may join (while their offer
  is still open, the join is planned and offered once they accept).

A plan the planner commits becomes one offer: a new trip offers its first order
(the driver answers one offer at a time; the bundle's others join the trip the
next rounds, as an ``OpenTrip``), a join offers the joining order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from foodmesh.core.geo import haversine_m
from servers.dispatch import scoring
from servers.dispatch.matching import Candidate, Proposal, trip_limit_miles
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.trips import FreeDriver, OpenTrip, TripConfig, TripOrder, TripPlan

__all__ = [
    "LiveState",
    "MILE_M",
    "free_driver",
    "live_state",
    "paced",
    "proposal_of",
    "restaurant_key",
    "trip_order",
]

S = AssignmentStatus
MILE_M = 1609.344
_BEFORE_PICKUP = (S.ASSIGNED, S.AT_RESTAURANT)
#: A driver's quality (rating, experience) is worth at most this many minutes: less than
#: what nearness is worth over a 5-mile search (the seed's weights, 0.2 against 0.6; the
#: planner's ``drive_weight`` a minute of the drive there). At 1 minute a 5.0-rated
#: veteran 20 minutes away beat a 4.5-rated newcomer next door.
QUALITY_MIN = 0.5


def restaurant_key(lat: float, lon: float) -> str:
    """The restaurant of a pickup place (orders of one place bundle; ~10 m apart)."""
    return f"{lat:.4f},{lon:.4f}"


def trip_order(a: Assignment, *, demand: float = 0.0) -> TripOrder:
    return TripOrder(
        order_id=a.order_id,
        restaurant_id=restaurant_key(a.pickup_lat, a.pickup_lon),
        pickup_lat=a.pickup_lat,
        pickup_lon=a.pickup_lon,
        dropoff_lat=a.dropoff_lat,
        dropoff_lon=a.dropoff_lon,
        placed_at=a.created_at.timestamp(),
        ready_at=a.ready_at.timestamp(),
        excluded=frozenset(a.excluded),
        radius_m=a.radius_miles * MILE_M,
        front=a.front or a.status == S.ESCALATED,
        opportunity=float(scoring.opportunity_score(np.array([demand]))[0]),
    )


def free_driver(c: Candidate, *, now: float, expiry_s: float) -> FreeDriver:
    """An available driver, free now; the penalty: expected lapses, and quality."""
    p = min(max(c.acceptance, 0.05), 1.0)
    quality = float(scoring.quality_score(np.array([c.rating]), np.array([float(c.deliveries)]))[0])
    return FreeDriver(
        driver_id=c.driver_id,
        lat=c.lat,
        lon=c.lon,
        free_at=now,
        max_trip_m=trip_limit_miles(c.vehicle_type) * MILE_M,
        penalty_min=(1.0 - p) / p * expiry_s / 60.0 + QUALITY_MIN * (1.0 - quality),
        vehicle=int(c.vehicle_type),
    )


def _at(t: object, default: float) -> float:
    stamp = getattr(t, "timestamp", None)
    return float(stamp()) if callable(stamp) else default


@dataclass(frozen=True, slots=True)
class LiveState:
    orders: list[TripOrder]
    drivers: list[FreeDriver]
    open_trips: list[OpenTrip]


def live_state(
    pool: Sequence[Assignment],
    candidates: Sequence[Candidate],
    on_trips: Sequence[Assignment],
    *,
    now: float,
    config: TripConfig,
    expiry_s: float,
    demand: Mapping[str, float] | None = None,
    vehicles: Mapping[str, int] | None = None,
) -> LiveState:
    """The planner's inputs: pooled orders, free and soon-free drivers, open trips.

    ``on_trips``: the orders drivers hold or are offered (``offered`` … ``at_customer``);
    ``vehicles``: their drivers' vehicle types (unknown: 0, timed as the travel rule).
    """
    vehicles = vehicles or {}
    demand = demand or {}
    orders = [trip_order(a, demand=demand.get(a.order_id, 0.0)) for a in pool]
    drivers = [free_driver(c, now=now, expiry_s=expiry_s) for c in candidates]
    seen = {d.driver_id for d in drivers}
    by: dict[str, list[Assignment]] = {}
    for a in on_trips:
        if a.driver_id:
            by.setdefault(a.driver_id, []).append(a)
    trips: list[OpenTrip] = []
    for driver, xs in sorted(by.items()):
        if driver in seen:
            continue
        last = max(xs, key=lambda a: _at(a.est_delivery_at, now))
        drivers.append(
            FreeDriver(driver, last.dropoff_lat, last.dropoff_lon,
                       free_at=max(now, _at(last.est_delivery_at, now)),
                       vehicle=vehicles.get(driver, 0))
        )  # fmt: skip
        offered = all(a.status == S.OFFERED for a in xs)
        before = all(a.status in _BEFORE_PICKUP for a in xs)
        places = {restaurant_key(a.pickup_lat, a.pickup_lon) for a in xs}
        if (offered or before) and len(places) == 1 and len(xs) < config.max_orders:
            arrive = min(_at(a.est_pickup_at, now) for a in xs)
            trips.append(
                OpenTrip(driver, places.pop(), arrive,
                         tuple(trip_order(a) for a in sorted(xs, key=lambda a: a.order_id)),
                         accepted=before)
            )  # fmt: skip
    return LiveState(orders, drivers, trips)


def paced(state: LiveState, paces: Mapping[int, float]) -> LiveState:
    """``state`` with each driver's pace (``trips.FreeDriver.pace``) by their vehicle."""
    if not paces:
        return state
    drivers = [replace(d, pace=paces.get(d.vehicle, d.pace)) for d in state.drivers]
    return LiveState(state.orders, drivers, state.open_trips)


def proposal_of(
    plan: TripPlan,
    order_id: str,
    *,
    now: float,
    config: TripConfig,
    driver_at: tuple[float, float] | None = None,
) -> Proposal:
    """The offer of ``order_id`` on this plan, its why the planner's cost parts."""
    o = next(x for x in plan.bundle.orders if x.order_id == order_id)
    pick = plan.legs[0]
    drop = next(leg for leg in plan.legs[1:] if leg.order_ids == (order_id,))
    to_pick_m = 0.0
    if driver_at is not None and not plan.joins:
        to_pick_m = haversine_m(driver_at[0], driver_at[1], pick.lat, pick.lon)
    leg_m = haversine_m(o.pickup_lat, o.pickup_lon, o.dropoff_lat, o.dropoff_lon)
    w = plan.why
    at_once = config.release_at_once and not plan.joins
    return Proposal(
        order_id=order_id,
        driver_id=plan.driver_id,
        score=w.score,
        to_pickup_s=max(0.0, pick.arrive_at - now),
        to_pickup_miles=to_pick_m / MILE_M,
        to_dropoff_s=max(0.0, drop.arrive_at - pick.depart_at),
        to_dropoff_miles=leg_m / MILE_M,
        pickup_at=pick.depart_at - config.pickup_service_s,
        delivery_at=drop.depart_at,
        parts=(
            ("minutes_to_doors", 1.0, w.minutes_to_doors),
            ("late_minutes", config.late_weight, w.late_minutes),
            (
                "driver_wait_minutes",
                0.0 if at_once else config.driver_wait_weight,
                w.driver_wait_min,
            ),
            (
                "travel_minutes",
                config.driver_wait_weight if at_once else config.drive_weight,
                w.travel_min,
            ),
            ("serve_reward_minutes", -1.0, w.serve_reward),
            ("driver_penalty_minutes", 1.0, w.driver_penalty),
        ),
        alternatives=w.alternatives,
        bundle=plan.joins,
        cost=w.cost,
    )
