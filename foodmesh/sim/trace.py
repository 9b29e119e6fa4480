"""Recording a simulated day as a ``foodmesh-trace/1`` trace (format: foodmesh.core.trace)."""

from __future__ import annotations

import math
import threading
from typing import Any

from foodmesh.core.trace import (
    DEFAULTS,
    FORMAT,
    Courier,
    Trace,
    TraceError,
    TraceOrder,
    TraceRestaurant,
    load_trace,
    parse_trace,
    write_trace,
)

__all__ = [
    "FORMAT",
    "Courier",
    "Trace",
    "TraceError",
    "TraceOrder",
    "TraceRecorder",
    "TraceRestaurant",
    "load_trace",
    "parse_trace",
    "write_trace",
]


# ---------------------------------------------------------------- recording


def _r3(x: float) -> float:
    return round(float(x), 3)


class TraceRecorder:
    """Collects what a simulation generated, as seconds since its start.

    A courier who comes on twice gets a second record (``drv_1#2``): the format has
    one shift per courier. Orders that never get a ready time are written with the
    time the kitchen planned; cancelled orders are left out (nothing to deliver).
    """

    def __init__(self, *, name: str, source: str, origin: tuple[float, float]) -> None:
        self.name = name
        self.source = source
        self.origin = origin
        self._lock = threading.Lock()
        self._couriers: dict[str, list[float]] = {}  # key -> [lat, lon, on_s, off_s]
        self._shifts: dict[str, int] = {}
        self._open: dict[str, str] = {}  # driver id -> key of the open shift
        self._restaurants: dict[str, tuple[float, float]] = {}
        self._orders: dict[str, dict[str, Any]] = {}
        self._cancelled: set[str] = set()

    def courier_on(self, driver_id: str, lat: float, lon: float, t: float) -> None:
        with self._lock:
            if driver_id in self._open:
                return
            n = self._shifts.get(driver_id, 0) + 1
            self._shifts[driver_id] = n
            key = driver_id if n == 1 else f"{driver_id}#{n}"
            self._couriers[key] = [lat, lon, t, math.inf]
            self._open[driver_id] = key

    def courier_off(self, driver_id: str, t: float) -> None:
        with self._lock:
            key = self._open.pop(driver_id, None)
            if key is not None:
                self._couriers[key][3] = t

    def restaurant(self, restaurant_id: str, lat: float, lon: float) -> None:
        with self._lock:
            self._restaurants.setdefault(restaurant_id, (lat, lon))

    def order_placed(
        self,
        order_id: str,
        *,
        t: float,
        restaurant_id: str,
        restaurant: tuple[float, float],
        dropoff: tuple[float, float],
        planned_ready_s: float,
    ) -> None:
        with self._lock:
            self._restaurants.setdefault(restaurant_id, restaurant)
            self._orders.setdefault(order_id, {
                "placed_s": t, "restaurant_id": restaurant_id, "ready_s": None,
                "planned_ready_s": max(t, planned_ready_s), "dropoff": dropoff,
            })  # fmt: skip

    def order_ready(self, order_id: str, t: float) -> None:
        with self._lock:
            rec = self._orders.get(order_id)
            if rec is not None and rec["ready_s"] is None:
                rec["ready_s"] = max(t, rec["placed_s"])

    def order_cancelled(self, order_id: str) -> None:
        with self._lock:
            self._cancelled.add(order_id)

    @property
    def order_count(self) -> int:
        return len(self._orders) - len(self._cancelled & self._orders.keys())

    def trace(self, *, end_s: float) -> Trace:
        """The trace so far; shifts still open end at ``end_s``."""
        with self._lock:
            couriers = tuple(
                Courier(k, v[0], v[1], _r3(v[2]), _r3(max(v[2], min(v[3], end_s))))
                for k, v in self._couriers.items()
            )
            restaurants = tuple(TraceRestaurant(k, v[0], v[1]) for k, v in
                                sorted(self._restaurants.items()))  # fmt: skip
            orders = tuple(
                TraceOrder(oid, _r3(o["placed_s"]), o["restaurant_id"],
                           _r3(o["ready_s"] if o["ready_s"] is not None else o["planned_ready_s"]),
                           o["dropoff"][0], o["dropoff"][1])
                for oid, o in sorted(self._orders.items(), key=lambda kv: kv[1]["placed_s"])
                if oid not in self._cancelled
            )  # fmt: skip
        return Trace(
            name=self.name,
            source=self.source,
            origin=self.origin,
            speed_mps=DEFAULTS["speed_mps"],
            pickup_service_s=DEFAULTS["pickup_service_s"],
            dropoff_service_s=DEFAULTS["dropoff_service_s"],
            target_click_to_door_s=DEFAULTS["target_click_to_door_s"],
            couriers=couriers,
            restaurants=restaurants,
            orders=orders,
        )
