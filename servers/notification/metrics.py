"""The Notification service's own Prometheus metrics (the RPC metrics come from the runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ATTEMPTS", "DEAD_LETTERS", "EVENTS", "IN_DOUBT", "NOTICES", "QUEUED", "SEND_SECONDS"]

EVENTS = Counter(
    "foodmesh_notification_events_total",
    "Events consumed, by source (orders.confirmed, dispatch.offered...) and outcome "
    "(recorded, ignored, failed: redelivered later).",
    ("source", "outcome"),
)
NOTICES = Counter(
    "foodmesh_notification_notices_total",
    "Inbox notifications made, by event type (repeats of one already made are not counted).",
    ("event_type",),
)
ATTEMPTS = Counter(
    "foodmesh_notification_send_attempts_total",
    "Send attempts, by channel and outcome (sent, delivered, retry, failed).",
    ("channel", "outcome"),
)
IN_DOUBT = Counter(
    "foodmesh_notification_in_doubt_total",
    "Deliveries taken again after their sender stopped mid-send (sent again, same identity).",
    ("channel",),
)
SEND_SECONDS = Histogram(
    "foodmesh_notification_send_seconds",
    "How long one send took, by channel.",
    ("channel",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUED = Gauge(
    "foodmesh_notification_deliveries",
    "Deliveries by channel and state, as stored (read every 15 s).",
    ("channel", "state"),
)
DEAD_LETTERS = Gauge(
    "foodmesh_notification_dead_letters",
    "Deliveries that failed every attempt (ops: ListDeadLetters).",
)
