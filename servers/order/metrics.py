"""The Order service's own Prometheus metrics (the RPC metrics come from the runtime).

``foodmesh_orders_total`` counts committed steps by the status reached (placement
counts as ``placed``), so cancelled / placed is the cancellation rate the business
alert reads. ``foodmesh_eta_error_seconds`` is fed here, on delivery: the ETA
service never learns when an order actually arrived, Order does.
"""

from __future__ import annotations

import datetime as dt

from prometheus_client import Counter, Histogram

from servers.order.model import Order
from servers.order.transitions import Status

__all__ = ["ETA_ERROR", "ORDERS", "committed", "placed"]

ORDERS = Counter(
    "foodmesh_orders_total",
    "Orders placed and status steps committed, by the status reached.",
    ("status",),
)
ETA_ERROR = Histogram(
    "foodmesh_eta_error_seconds",
    "|actual - promised| delivery time of a delivered order, in seconds (promised at placement).",
    buckets=(30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600),
)
# Children looked up once: the status set is closed.
_BY_STATUS = {s: ORDERS.labels(s.value) for s in Status}


def placed() -> None:
    """A new order was committed."""
    _BY_STATUS[Status.PLACED].inc()


def committed(before: Order, after: Order, *, at: dt.datetime) -> None:
    """A change of ``before`` into ``after`` was committed at ``at``.

    Only a change of status counts (a driver assigned keeps the status); a delivery
    also records how far the promise made at placement was from the truth.
    """
    if after.status is before.status:
        return
    _BY_STATUS[after.status].inc()
    if after.status is Status.DELIVERED:
        promised = before.promised_delivery_time or before.estimated_delivery_time
        ETA_ERROR.observe(abs((at - promised).total_seconds()))
