"""The Location service's own Prometheus metrics (the RPC metrics come from the runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BATCH", "BUFFERED", "DEGRADED", "FIXES", "HISTORY_ROWS", "PRESENCE"]

FIXES = Counter(
    "foodmesh_location_fixes_total",
    "GPS fixes received, by outcome (accepted, or the rejection reason).",
    ("outcome",),
)
BATCH = Histogram(
    "foodmesh_location_ingest_batch_fixes",
    "Fixes written to Redis per ingest batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
DEGRADED = Gauge(
    "foodmesh_location_degraded",
    "1 while a dependency of the ingest path is unreachable.",
    ("dependency",),
)
BUFFERED = Gauge(
    "foodmesh_location_buffered_positions",
    "Driver positions held in memory while Redis is unreachable.",
)
HISTORY_ROWS = Counter(
    "foodmesh_location_history_rows_total",
    "Location history rows, by what became of them (written by COPY, spilled to disk).",
    ("outcome",),
)
PRESENCE = Counter(
    "foodmesh_location_presence_events_total",
    "Drivers that went offline or came back online.",
    ("change",),
)
