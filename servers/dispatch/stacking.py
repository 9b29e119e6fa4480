"""Stacked orders in the live service: a driver on the way to a restaurant takes another. Pure.

The live form of a bundle (``trips.form_bundles``): a driver carrying orders not yet
picked up, heading to a restaurant, is offered a new order of the same restaurant
(within ``same_place_m``) whose food is ready close to theirs (within
``max_food_wait_s``), while they carry fewer than K. Accepting it makes the two one
trip: one pickup, then the drop-offs. The data store enforces K
(``fleet.trip_limits``, migration 0003).

``plan_stops`` is the trip as the driver's session shows it: the pickups still to
make (one per restaurant), then the drop-offs in the order they were promised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from foodmesh.core.geo import haversine_m
from servers.dispatch.matching import PendingOrder, Proposal
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus

__all__ = [
    "StackConfig",
    "Stop",
    "Trip",
    "next_stop",
    "plan_stops",
    "stack_proposals",
    "trips_of",
]

S = AssignmentStatus
_BEFORE_PICKUP = (S.ASSIGNED, S.AT_RESTAURANT)


@dataclass(frozen=True, slots=True)
class StackConfig:
    max_orders: int = 3
    same_place_m: float = 150.0
    max_food_wait_s: float = 600.0
    #: Urban speed for the extra drop-off's estimate, m/s.
    speed_mps: float = 6.9


@dataclass(frozen=True, slots=True)
class Trip:
    """A driver's orders not yet picked up (every one of them: a trip under way can't grow)."""

    driver_id: str
    pickup_lat: float
    pickup_lon: float
    ready_at: float
    orders: int
    last_dropoff: tuple[float, float]
    last_delivery_at: float
    #: The orders already on it.
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stop:
    kind: str  # "pickup" or "dropoff"
    order_id: str
    lat: float
    lon: float
    label: str


def stack_proposals(
    orders: Sequence[PendingOrder], trips: Sequence[Trip], *, now: float, config: StackConfig
) -> list[Proposal]:
    """For each order (in the pool's order), the trip it can join; one new order per trip."""
    out: list[Proposal] = []
    used: set[str] = set()
    for o in orders:
        best: tuple[float, Trip] | None = None
        for t in trips:
            if t.driver_id in used or t.driver_id in o.excluded or t.orders >= config.max_orders:
                continue
            if haversine_m(o.pickup_lat, o.pickup_lon, t.pickup_lat, t.pickup_lon) > (
                config.same_place_m
            ):
                continue
            if abs(o.ready_at - t.ready_at) > config.max_food_wait_s:
                continue
            gap = abs(o.ready_at - t.ready_at)
            if best is None or gap < best[0]:
                best = (gap, t)
        if best is None:
            continue
        t = best[1]
        used.add(t.driver_id)
        # The new drop-off comes after the trip's last one.
        leg_m = haversine_m(*t.last_dropoff, o.dropoff_lat, o.dropoff_lon)
        pickup_at = max(now, o.ready_at, t.ready_at)
        out.append(
            Proposal(
                order_id=o.order_id,
                driver_id=t.driver_id,
                score=1.0,
                to_pickup_s=0.0,
                to_pickup_miles=0.0,
                to_dropoff_s=leg_m / config.speed_mps,
                to_dropoff_miles=leg_m / 1609.344,
                pickup_at=pickup_at,
                delivery_at=max(t.last_delivery_at, pickup_at) + leg_m / config.speed_mps,
                bundle=t.order_ids,
            )
        )
    return out


def trips_of(held: Sequence[Assignment], *, now: float) -> list[Trip]:
    """The stackable trips among drivers' held orders (none of them picked up yet)."""
    by: dict[str, list[Assignment]] = {}
    for a in held:
        by.setdefault(a.driver_id, []).append(a)
    out = []
    for driver, xs in sorted(by.items()):
        if not all(a.status in _BEFORE_PICKUP for a in xs):
            continue
        last = max(xs, key=lambda a: _when(a.est_delivery_at, now))
        out.append(
            Trip(
                driver_id=driver,
                pickup_lat=xs[0].pickup_lat,
                pickup_lon=xs[0].pickup_lon,
                ready_at=max(a.ready_at.timestamp() for a in xs),
                orders=len(xs),
                last_dropoff=(last.dropoff_lat, last.dropoff_lon),
                last_delivery_at=_when(last.est_delivery_at, now),
                order_ids=tuple(sorted(a.order_id for a in xs)),
            )
        )
    return out


def _when(t: object, now: float) -> float:
    ts = getattr(t, "timestamp", None)
    return float(ts()) if callable(ts) else now


def plan_stops(held: Sequence[Assignment]) -> list[Stop]:
    """The stops still to make: pickups (one per restaurant), then drop-offs as promised."""
    stops: list[Stop] = []
    seen: set[tuple[float, float]] = set()
    for a in held:
        if a.status in _BEFORE_PICKUP:
            where = (round(a.pickup_lat, 5), round(a.pickup_lon, 5))
            if where not in seen:
                seen.add(where)
                stops.append(Stop("pickup", a.order_id, a.pickup_lat, a.pickup_lon,
                                  a.pickup_label))  # fmt: skip
    for a in sorted(held, key=lambda a: (_when(a.est_delivery_at, math.inf), a.order_id)):
        stops.append(Stop("dropoff", a.order_id, a.dropoff_lat, a.dropoff_lon, a.dropoff_label))
    return stops


def next_stop(held: Sequence[Assignment]) -> tuple[Assignment, tuple[float, float]] | None:
    """The order the driver works on next and where they go for it; None: the trip is done."""
    stops = plan_stops(held)
    if not stops:
        return None
    first = stops[0]
    a = next(x for x in held if x.order_id == first.order_id)
    return a, (first.lat, first.lon)
