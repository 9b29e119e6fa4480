"""What the live engine matches with: pooled orders, available drivers, offers. Pure.

The decision itself is the trip planner's (``trips.plan_trips``), the one
``foodmesh replay`` runs; ``live.py`` turns these records into its inputs and its
plans into ``Proposal`` records (offers to make). ``MatchConfig`` holds the search
radii: an order looks for drivers within 5 mi, 10 once a round found it nobody, 15
once escalated; a vehicle takes trips (to the restaurant, then to the customer) of
at most ``trip_limit_miles``: walking 2 mi, a bicycle 6, a scooter 12, a car any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from foodmesh.v1 import common_pb2

__all__ = [
    "Candidate",
    "MatchConfig",
    "PendingOrder",
    "Proposal",
    "trip_limit_miles",
]

VT = common_pb2.VehicleType

#: Longest trip (to pickup + to dropoff) each vehicle takes, miles.
_TRIP_LIMIT: dict[int, float] = {
    VT.VEHICLE_TYPE_WALKING: 2.0,
    VT.VEHICLE_TYPE_BICYCLE: 6.0,
    VT.VEHICLE_TYPE_SCOOTER: 12.0,
}


def trip_limit_miles(vehicle_type: int) -> float:
    return _TRIP_LIMIT.get(vehicle_type, math.inf)


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order waiting for a driver, as matching sees it."""

    order_id: str
    pickup_lat: float
    pickup_lon: float
    dropoff_lat: float
    dropoff_lon: float
    #: When the food is ready, epoch seconds.
    ready_at: float
    radius_miles: float = 5.0
    excluded: frozenset[str] = frozenset()
    #: Put back at the front of the pool (its driver was lost) or escalated.
    front: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """An available driver, as matching sees it."""

    driver_id: str
    lat: float
    lon: float
    vehicle_type: int = VT.VEHICLE_TYPE_CAR
    rating: float = 5.0
    deliveries: int = 0
    acceptance: float = 1.0


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """The search radii (``FOODMESH_DISPATCH_*``)."""

    radius_miles: float = 5.0
    wide_radius_miles: float = 10.0
    escalated_radius_miles: float = 15.0


@dataclass(frozen=True, slots=True)
class Proposal:
    """Offer this order to this driver."""

    order_id: str
    driver_id: str
    score: float
    #: Driver to restaurant.
    to_pickup_s: float
    to_pickup_miles: float
    #: Restaurant to customer.
    to_dropoff_s: float
    to_dropoff_miles: float
    #: When the driver should have the food (arrival, or the food being ready if later).
    pickup_at: float
    delivery_at: float
    #: Why: the score's weighted parts ``(name, weight, value)``, the drivers who could
    #: have taken it, and the orders of the trip it joins (a stacked offer).
    parts: tuple[tuple[str, float, float], ...] = ()
    alternatives: int = 0
    bundle: tuple[str, ...] = ()
    #: The planner's cost, minutes (the parts' weighted sum).
    cost: float = 0.0

    def why(self) -> dict[str, Any]:
        """The explanation as plain data (stored with the offer, sent on it)."""
        return {
            "score": round(self.score, 4),
            "cost": round(self.cost, 4),
            "parts": [[n, w, round(v, 4)] for n, w, v in self.parts],
            "alternatives": self.alternatives,
            "bundle": list(self.bundle),
            "to_pickup_s": round(self.to_pickup_s, 1),
            "pickup_at": round(self.pickup_at, 1),
            "delivery_at": round(self.delivery_at, 1),
        }
