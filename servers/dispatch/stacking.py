"""A driver's trip of stacked orders as their session shows it. Pure.

Which orders join a trip is the planner's decision (``trips.join_trips``, run live
through ``live.py``); the data store enforces K (``fleet.trip_limits``).
``plan_stops`` is the trip: the pickups still to make (one per restaurant), then
the drop-offs in the order they were promised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus

__all__ = [
    "Stop",
    "next_stop",
    "plan_stops",
]

S = AssignmentStatus
_BEFORE_PICKUP = (S.ASSIGNED, S.AT_RESTAURANT)


@dataclass(frozen=True, slots=True)
class Stop:
    kind: str  # "pickup" or "dropoff"
    order_id: str
    lat: float
    lon: float
    label: str


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
