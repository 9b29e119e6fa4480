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
    "MATCHING",
    "OFFERS_PER_ORDER",
    "REGION_LEADER",
    "ROUTE_UPDATES",
    "assigned",
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
    "Seconds a driver waited at the restaurant: from arriving to picking the order up.",
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


def picked_up(before: Assignment, *, now: float) -> None:
    """Records the driver's wait at the counter, when ``before`` was the arrival there."""
    if before.status.value == "at_restaurant":
        DRIVER_WAIT.observe(max(0.0, now - before.updated_at.timestamp()))


def route_sent(u: dispatch_pb2.RouteUpdate) -> None:
    """Counts one route sent to a driver."""
    reason = dispatch_pb2.RouteUpdateReason.Name(u.reason).removeprefix("ROUTE_UPDATE_REASON_")
    source = eta_pb2.EstimateSource.Name(u.source).removeprefix("ESTIMATE_SOURCE_")
    ROUTE_UPDATES.labels(reason.lower(), source.lower()).inc()
