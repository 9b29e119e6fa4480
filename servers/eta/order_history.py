"""Real order history for ``train-eta --from-db``: delivered orders from the Order database.

An offline export, read-only, as an analytics job would take it: each delivered
order's restaurant, driver, place, size and value, and the times its timeline
records (placed, ready for pickup, picked up, delivered). The road graph supplies
each drive's distance, free-flow and traffic time at the hour it happened; the
kitchen's load is the restaurant's orders placed in the 20 minutes before. What
the database does not know is left unknown: the driver's position when assigned
(no pickup leg: NaN), the vehicle (0). The weather kind, the free drivers near the
restaurant and the event factor are those Order kept at placement (Pricing's surge of
the restaurant's cell; 0, NaN and 1.0 where it did not know them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg

from foodmesh.roads import RoadGraph, TrafficModel
from servers.eta.routing import Router

__all__ = ["MIN_ORDERS", "load_order_history"]

#: Fewer delivered orders than this and the simulator's history is used instead.
MIN_ORDERS = 500

_QUERY = """
SELECT o.order_id, o.restaurant_id, o.driver_id, o.restaurant_lat, o.restaurant_lon,
       (o.delivery_address->>'lat')::float8, (o.delivery_address->>'lon')::float8,
       o.subtotal_minor,
       (SELECT coalesce(sum(i.quantity), 0) FROM orders.order_items i
         WHERE i.order_id = o.order_id),
       extract(epoch FROM min(t.at) FILTER (WHERE t.status = 'placed')),
       extract(epoch FROM min(t.at) FILTER (WHERE t.status = 'ready_for_pickup')),
       extract(epoch FROM min(t.at) FILTER (WHERE t.status = 'picked_up')),
       extract(epoch FROM min(t.at) FILTER (WHERE t.status = 'delivered')),
       o.eta_drivers_nearby, o.eta_weather, o.eta_event_multiplier{listed}
  FROM orders.orders o JOIN orders.timeline t USING (order_id){join}
 WHERE o.status = 'delivered'
 GROUP BY o.order_id{group}
"""
#: The Catalog's listed prep time, where its schema shares the database (one PostgreSQL).
_WITH_CATALOG = _QUERY.format(
    listed=",\n       c.avg_prep_time_min",
    join="\n  LEFT JOIN catalog.restaurants c ON c.restaurant_id = o.restaurant_id",
    group=", c.avg_prep_time_min",
)
_WITHOUT_CATALOG = _QUERY.format(listed=",\n       NULL::float8", join="", group="")


async def load_order_history(
    postgres_url: str,
    graph: RoadGraph,
    *,
    traffic: TrafficModel | None = None,
    min_orders: int = MIN_ORDERS,
    progress: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The delivered orders as a history (``foodmesh.sim.history.COLUMNS``), or None.

    None when the database has no Order schema or fewer than ``min_orders``
    complete deliveries (placed, ready, picked up and delivered all recorded).
    """
    try:
        async with await psycopg.AsyncConnection.connect(postgres_url, connect_timeout=5) as c:
            try:
                cur = await c.execute(_WITH_CATALOG)
            except psycopg.errors.UndefinedTable:  # the Catalog lives elsewhere
                await c.rollback()
                cur = await c.execute(_WITHOUT_CATALOG)
            rows = await cur.fetchall()
    except psycopg.errors.UndefinedTable:
        return None
    rows = [r for r in rows if None not in r[9:13] and r[5] is not None and r[6] is not None]
    rows = [r for r in rows if r[9] <= r[10] <= r[11] <= r[12]]
    progress(f"order database: {len(rows):,} complete deliveries")
    if len(rows) < min_orders:
        return None
    rows.sort(key=lambda r: float(r[9]))
    n = len(rows)
    col = list(zip(*rows, strict=True))
    placed, ready, picked, delivered = (np.array(col[k], dtype=np.float64) for k in (9, 10, 11, 12))
    rid = np.array(col[1], dtype="U64")
    traffic = traffic or TrafficModel()
    local = [traffic.local(dt.datetime.fromtimestamp(t, dt.UTC)) for t in placed]
    hour = np.array([t.hour for t in local], dtype=np.int8)
    dow = np.array([t.weekday() for t in local], dtype=np.int8)
    # Kitchen load and recent prep times: recomputed as of each placement by training
    # (servers.eta.kitchen), the way Order computes them live.
    load = np.zeros(n, dtype=np.int32)
    router = Router(graph, traffic=traffic)
    dist = np.full(n, np.nan)
    free = np.full(n, np.nan)
    graph_s = np.full(n, np.nan)
    rest = np.column_stack([np.array(col[3], dtype=float), np.array(col[4], dtype=float)])
    cust = np.column_stack([np.array(col[5], dtype=float), np.array(col[6], dtype=float)])
    buckets = sorted({(int(d), int(h)) for d, h in zip(dow, hour, strict=True)})
    for j, (d, h) in enumerate(buckets):
        idx = np.flatnonzero((dow == d) & (hour == h))
        when = local[int(idx[0])]
        legs = router.legs([tuple(p) for p in rest[idx]], [tuple(p) for p in cust[idx]],
                           depart_at=when)  # fmt: skip
        dist[idx] = [leg.distance_m for leg in legs]
        free[idx] = [leg.free_flow_s for leg in legs]
        graph_s[idx] = [leg.duration_s for leg in legs]
        if j % 20 == 0:
            progress(f"order database: routed {j + 1}/{len(buckets)} hour buckets")
    nan = np.full(n, np.nan)
    return {
        "order_id": np.array(col[0], dtype="U64"),
        "order_ts": placed,
        "hour": hour,
        "day_of_week": dow,
        "restaurant_id": rid,
        "driver_id": np.array(col[2], dtype="U64"),
        "vehicle": np.zeros(n, dtype=np.int8),
        "item_count": np.array(col[8], dtype=np.int32),
        "subtotal_minor": np.array(col[7], dtype=np.int64),
        "restaurant_load": load,
        "restaurant_listed_prep_min": np.array(
            [float(r[16]) if r[16] is not None else np.nan for r in rows]
        ),
        # The restaurant cell's conditions Order kept at placement (and sent with each
        # estimate): NULL on orders placed before they were kept, or while Pricing was away.
        "weather": np.array([r[14] or 0 for r in rows], dtype=np.int8),
        "drivers_nearby": np.array(
            [float(r[13]) if r[13] is not None else np.nan for r in rows], dtype=np.float64
        ),
        "event_multiplier": np.array(
            [float(r[15]) if r[15] is not None else 1.0 for r in rows], dtype=np.float64
        ),
        "restaurant_lat": rest[:, 0],
        "restaurant_lon": rest[:, 1],
        "customer_lat": cust[:, 0],
        "customer_lon": cust[:, 1],
        "driver_lat": nan,
        "driver_lon": nan,
        "route_distance_m": dist,
        "route_free_flow_s": free,
        "route_graph_s": graph_s,
        "pickup_distance_m": nan,
        "pickup_free_flow_s": nan,
        "pickup_graph_s": nan,
        "assign_delay_s": nan,
        "prep_s": ready - placed,
        "pickup_travel_s": nan,
        "wait_s": picked - ready,
        "travel_s": delivered - picked,
        "total_s": delivered - placed,
    }
