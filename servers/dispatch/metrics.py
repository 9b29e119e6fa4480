"""The Dispatch service's own Prometheus metrics (the RPC metrics come from the runtime).

Read by the matching-latency SLO alerts and the dashboard
(``k8s/components/monitoring/``): the buckets put bounds at the SLO (30 s) and the
page threshold (60 s) so their p95 is read off a bucket edge, not interpolated.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from foodmesh.v1 import dispatch_pb2, eta_pb2
from servers.dispatch.model import Assignment

__all__ = [
    "DRIVER_WAIT",
    "FOOD_WAIT",
    "MATCHING",
    "OFFERS_PER_ORDER",
    "REGION_LEADER",
    "ROUTE_UPDATES",
    "assigned",
    "food_wait_s",
    "picked_up",
    "route_sent",
]

MATCHING = Histogram(
    "foodmesh_dispatch_matching_seconds",
    "Seconds from an order's confirmation reaching Dispatch to its driver's assignment.",
    buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
)
OFFERS_PER_ORDER = Histogram(
    "foodmesh_dispatch_offers_per_order",
    "Offers made for an order before a driver accepted it (counted at the assignment).",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
)
DRIVER_WAIT = Histogram(
    "foodmesh_dispatch_driver_wait_seconds",
    "Seconds a driver spent at the restaurant: from arriving to picking the order up"
    " (the wait for the food and the handover at the counter).",
    buckets=(0, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600),
)
FOOD_WAIT = Histogram(
    "foodmesh_dispatch_driver_food_wait_seconds",
    "Seconds a driver waited for the food: from arriving at the restaurant to the kitchen"
    " marking it ready (0 when it was ready first); only orders the kitchen marked ready.",
    buckets=(0, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600),
)
REGION_LEADER = Gauge(
    "foodmesh_dispatch_region_leader",
    "1 while this replica holds the region's lease, 0 once it lost or gave it up.",
    ("region",),
)

ROUTE_UPDATES = Counter(
    "foodmesh_dispatch_route_updates_total",
    "Routes sent to drivers, by why (initial, off_route, eta_changed) and by source "
    "(road_graph, or straight_line when the ETA service gave no road route).",
    ("reason", "source"),
)


def assigned(a: Assignment, *, now: float) -> None:
    """Records one committed assignment: how long the order waited, how many offers it took."""
    MATCHING.observe(max(0.0, now - a.created_at.timestamp()))
    OFFERS_PER_ORDER.observe(max(1, a.offers_made))


def picked_up(before: Assignment, *, now: float, food_ready_at: float | None = None) -> None:
    """Records the driver's time at the counter, when ``before`` was the arrival there, and
    their wait for the food (arrival → max(arrival, ready), when the kitchen said ready)."""
    if before.status.value == "at_restaurant":
        arrived = before.updated_at.timestamp()
        DRIVER_WAIT.observe(max(0.0, now - arrived))
        if food_ready_at is not None:
            FOOD_WAIT.observe(food_wait_s(arrived=arrived, ready=food_ready_at, picked=now))


def food_wait_s(*, arrived: float, ready: float, picked: float) -> float:
    """A driver's wait for the food: arrival to ready, none if ready first, at most to pickup."""
    return max(0.0, min(ready, picked) - arrived)


def route_sent(u: dispatch_pb2.RouteUpdate) -> None:
    """Counts one route sent to a driver."""
    reason = dispatch_pb2.RouteUpdateReason.Name(u.reason).removeprefix("ROUTE_UPDATE_REASON_")
    source = eta_pb2.EstimateSource.Name(u.source).removeprefix("ESTIMATE_SOURCE_")
    ROUTE_UPDATES.labels(reason.lower(), source.lower()).inc()
