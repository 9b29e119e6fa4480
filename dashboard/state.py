"""What the ops dashboard shows, folded from the platform's own events.

``CityState`` is pure: feed it the events the services publish (driver fixes,
presence changes, order events, dispatch events) with the time they arrived,
and ask for a ``snapshot``. Nothing here does I/O, so the figures are tested by
feeding events and reading numbers.

Figures, each over a sliding window (``window_s``, 10 minutes by default):

- orders per minute: orders placed, bucketed per minute (a small chart);
- matching time: from ``confirmed`` to ``assigned`` (dispatch's assignment), p50/p95;
- offers per order: offers made before an order was assigned, mean;
- ETA error: |delivered − estimated delivery time as promised when placed|, minutes;
  and per later stage: the latest estimate once a driver was assigned (as the order
  stood when picked up) and at pickup (as it stood when delivered);
- fixes per second: accepted driver fixes over the last 10 s;
- unassigned: confirmed orders still without a driver; escalated: orders that
  dispatch escalated and nobody has taken since;
- auto-confirmed and confirmation timeouts (orders their restaurant never confirmed,
  cancelled by the platform), over the window; no driver / driver lost: orders in
  flight with that alert now (a lost driver's last known position is in the order's
  details).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

from cachetools import FIFOCache

from foodmesh.v1 import common_pb2, dispatch_pb2, location_pb2, order_pb2

__all__ = ["CityState", "DriverView", "OrderView"]

_ORDER_STATUS = {v: k.removeprefix("ORDER_STATUS_").lower()
                 for k, v in common_pb2.OrderStatus.items()}  # fmt: skip
_DRIVER_STATUS = {v: k.removeprefix("DRIVER_STATUS_").lower()
                  for k, v in common_pb2.DriverStatus.items()}  # fmt: skip
_FINAL = {"delivered", "cancelled"}
_ALERTS = {order_pb2.ORDER_ALERT_KIND_NO_DRIVER: "no_driver",
           order_pb2.ORDER_ALERT_KIND_DRIVER_LOST: "driver_lost"}  # fmt: skip
_PATH_POINTS = 240  # a driver's recent path: 20 minutes of fixes every 5 s


@dataclass(slots=True)
class DriverView:
    driver_id: str
    lat: float
    lon: float
    status: str
    order_id: str
    seen: float
    online: bool = True
    path: collections.deque[tuple[float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=_PATH_POINTS)
    )


@dataclass(slots=True)
class OrderView:
    order_id: str
    status: str
    restaurant_id: str
    restaurant_name: str
    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    driver_id: str = ""
    placed_at: float = 0.0
    confirmed_at: float = 0.0
    assigned_at: float = 0.0
    delivered_at: float = 0.0
    promised_at: float = 0.0  # estimated delivery when placed, epoch seconds
    assigned_eta: float = 0.0  # the latest estimate before pickup (the assignment stage's)
    offers: int = 0
    escalated: bool = False
    updated: float = 0.0
    #: ``no_driver`` / ``driver_lost`` while the order has that alert, else ''.
    alert: str = ""
    #: A lost driver's last known position.
    last_known: tuple[float, float] | None = None


def _ts(t: Any) -> float:
    """A protobuf Timestamp as epoch seconds (0 when unset)."""
    return float(t.seconds) + t.nanos / 1e9 if (t.seconds or t.nanos) else 0.0


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class _Window:
    """(time, value) samples kept for ``span_s`` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.items: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, t: float, v: float = 1.0) -> None:
        self.items.append((t, v))

    def trim(self, now: float) -> None:
        while self.items and self.items[0][0] < now - self.span_s:
            self.items.popleft()

    def values(self, now: float) -> list[float]:
        self.trim(now)
        return [v for _, v in self.items]


class CityState:
    """The live picture of the city, built from events."""

    def __init__(self, *, window_s: float = 600.0, driver_ttl_s: float = 120.0) -> None:
        self.window_s = window_s
        self.driver_ttl_s = driver_ttl_s
        self.drivers: dict[str, DriverView] = {}
        self.orders: dict[str, OrderView] = {}
        self._placed = _Window(window_s)
        self._matching = _Window(window_s)
        self._offers = _Window(window_s)
        self._eta_error = _Window(window_s)
        self._eta_error_assigned = _Window(window_s)
        self._eta_error_pickup = _Window(window_s)
        self._fixes = _Window(10.0)
        self._delivered = _Window(window_s)
        self._auto_confirmed = _Window(window_s)
        self._confirm_timeouts = _Window(window_s)
        self._seen_events: FIFOCache[str, None] = FIFOCache(50_000)  # the oldest ids go first
        self.events = 0

    # ------------------------------------------------------------------ events
    def _dupe(self, event_id: str) -> bool:
        """JetStream redelivers; the same event counts once."""
        if not event_id:
            return False
        if event_id in self._seen_events:
            return True
        self._seen_events[event_id] = None
        return False

    def on_fix(self, ev: location_pb2.DriverLocationEvent, now: float) -> None:
        p = ev.position
        if not p.driver_id:
            return
        self.events += 1
        self._fixes.add(now)
        d = self.drivers.get(p.driver_id)
        status = _DRIVER_STATUS.get(p.status, "unspecified")
        if d is None:
            d = DriverView(p.driver_id, p.lat, p.lon, status, ev.order_id, now)
            self.drivers[p.driver_id] = d
        d.lat, d.lon, d.seen, d.online = p.lat, p.lon, now, True
        d.order_id = ev.order_id or d.order_id
        if p.status:
            d.status = status
        d.path.append((now, p.lat, p.lon))

    def on_presence(self, ev: location_pb2.DriverPresenceEvent, now: float) -> None:
        if self._dupe(ev.event_id) or not ev.driver_id:
            return
        self.events += 1
        d = self.drivers.get(ev.driver_id)
        if d is None:
            p = ev.last_position
            d = DriverView(ev.driver_id, p.lat, p.lon, "offline", ev.order_id, now)
            self.drivers[ev.driver_id] = d
        d.online = ev.online
        d.seen = now
        if not ev.online:
            d.status = "offline"

    def on_order(self, ev: order_pb2.OrderEvent, now: float) -> None:
        if self._dupe(ev.event_id):
            return
        o = ev.order
        if not o.order_id:
            return
        self.events += 1
        status = _ORDER_STATUS.get(o.status, "unspecified")
        v = self.orders.get(o.order_id)
        if v is None:
            r, a = o.restaurant_location, o.delivery_address
            v = OrderView(o.order_id, status, o.restaurant_id, o.restaurant_name,
                          (r.lat, r.lon), (a.lat, a.lon))  # fmt: skip
            self.orders[o.order_id] = v
        at = _ts(ev.event_time) or now
        if status == "placed" and not v.placed_at:
            v.placed_at = at
            v.promised_at = _ts(o.estimated_delivery_time)
            self._placed.add(now)
        elif status == "confirmed" and not v.confirmed_at:
            v.confirmed_at = at
        elif status == "picked_up" and not v.assigned_eta:
            v.assigned_eta = _ts(o.estimated_delivery_time)
        elif status == "delivered" and not v.delivered_at:
            v.delivered_at = at
            self._delivered.add(now)
            if v.promised_at:
                self._eta_error.add(now, abs(at - v.promised_at) / 60.0)
            if v.assigned_eta:
                self._eta_error_assigned.add(now, abs(at - v.assigned_eta) / 60.0)
            if latest := _ts(o.estimated_delivery_time):  # re-estimated at pickup
                self._eta_error_pickup.add(now, abs(at - latest) / 60.0)
        if status == "confirmed" and ev.change.actor == "auto-confirm":
            self._auto_confirmed.add(now)
        if status == "cancelled" and o.cancellation_reason.startswith("confirm_timeout"):
            self._confirm_timeouts.add(now)
        v.alert = _ALERTS.get(o.alert.kind, "")
        loc = o.alert.last_known_location
        v.last_known = (loc.lat, loc.lon) if o.alert.HasField("last_known_location") else None
        v.status = status
        v.driver_id = o.driver_id or v.driver_id
        v.updated = now
        if status in _FINAL and v.driver_id in self.drivers:
            self.drivers[v.driver_id].order_id = ""

    def on_dispatch(self, ev: dispatch_pb2.DispatchEvent, now: float) -> None:
        if self._dupe(ev.event_id):
            return
        a = ev.assignment
        v = self.orders.get(a.order_id)
        if v is None:
            return  # an order placed before the dashboard started; its next event adds it
        self.events += 1
        kind = ev.kind
        if kind == dispatch_pb2.DISPATCH_EVENT_KIND_OFFERED:
            v.offers = max(v.offers + 1, a.offers_made)
        elif kind == dispatch_pb2.DISPATCH_EVENT_KIND_ASSIGNED:
            v.driver_id = a.driver_id
            v.escalated = False
            v.offers = max(v.offers, a.offers_made)
            if not v.assigned_at:
                v.assigned_at = _ts(ev.event_time) or now
                if v.confirmed_at:
                    self._matching.add(now, max(0.0, v.assigned_at - v.confirmed_at))
                self._offers.add(now, float(max(1, v.offers)))
            d = self.drivers.get(a.driver_id)
            if d is not None:
                d.order_id = a.order_id
        elif kind == dispatch_pb2.DISPATCH_EVENT_KIND_UNASSIGNED:
            v.driver_id = ""
        elif kind == dispatch_pb2.DISPATCH_EVENT_KIND_ESCALATED:
            v.escalated = True
        v.updated = now

    # ---------------------------------------------------------------- reading
    def forget_old(self, now: float) -> None:
        """Drops finished orders a minute after they finished, and long-silent drivers."""
        for oid in [k for k, v in self.orders.items()
                    if v.status in _FINAL and now - v.updated > 60.0]:  # fmt: skip
            del self.orders[oid]
        for did in [k for k, d in self.drivers.items() if now - d.seen > self.driver_ttl_s]:
            del self.drivers[did]

    def figures(self, now: float) -> dict[str, Any]:
        placed = [t for t, _ in self._placed.items if t >= now - self.window_s]
        per_minute = [0] * 10
        for t in placed:
            k = int((now - t) // 60)
            if 0 <= k < 10:
                per_minute[9 - k] += 1
        matching = sorted(self._matching.values(now))
        offers = self._offers.values(now)
        eta = sorted(self._eta_error.values(now))
        eta_assigned = self._eta_error_assigned.values(now)
        eta_pickup = self._eta_error_pickup.values(now)
        in_flight = [v for v in self.orders.values() if v.status not in _FINAL]
        unassigned = [v for v in in_flight if v.confirmed_at and not v.driver_id]

        def r(x: float | None, nd: int = 1) -> float | None:
            return None if x is None else round(x, nd)

        return {
            "orders_per_min": per_minute,
            "orders_last_min": per_minute[-1],
            "delivered_window": len(self._delivered.values(now)),
            "matching_p50_s": r(_pct(matching, 0.5)),
            "matching_p95_s": r(_pct(matching, 0.95)),
            "offers_per_order": r(sum(offers) / len(offers) if offers else None, 2),
            "eta_error_mean_min": r(sum(eta) / len(eta) if eta else None, 2),
            "eta_error_p90_min": r(_pct(eta, 0.9), 2),
            "eta_error_assigned_mean_min": r(
                sum(eta_assigned) / len(eta_assigned) if eta_assigned else None, 2
            ),
            "eta_error_pickup_mean_min": r(
                sum(eta_pickup) / len(eta_pickup) if eta_pickup else None, 2
            ),  # fmt: skip
            "fixes_per_s": round(len(self._fixes.values(now)) / self._fixes.span_s, 1),
            "in_flight": len(in_flight),
            "unassigned": len(unassigned),
            "escalated": sum(1 for v in in_flight if v.escalated),
            "auto_confirmed": len(self._auto_confirmed.values(now)),
            "confirm_timeouts": len(self._confirm_timeouts.values(now)),
            "no_driver": sum(1 for v in in_flight if v.alert == "no_driver"),
            "driver_lost": sum(1 for v in in_flight if v.alert == "driver_lost"),
            "drivers_online": sum(1 for d in self.drivers.values() if d.online),
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        """Compact JSON-ready picture: arrays, not objects, since it goes out every second.

        Only what the map draws: no customer, street, items or payment; a drop-off is
        rounded to ~100 m (a line's end, not a front door).
        """
        self.forget_old(now)
        drivers = [[d.driver_id, round(d.lat, 5), round(d.lon, 5),
                    d.status if d.online else "offline", d.order_id]
                   for d in self.drivers.values()]  # fmt: skip
        orders = [[v.order_id, v.status, round(v.pickup[0], 5), round(v.pickup[1], 5),
                   round(v.dropoff[0], 3), round(v.dropoff[1], 3), v.driver_id, v.escalated]
                  for v in self.orders.values() if v.status not in _FINAL]  # fmt: skip
        return {"t": round(now, 3), "drivers": drivers, "orders": orders,
                "figures": self.figures(now)}  # fmt: skip

    def driver_path(self, driver_id: str) -> list[list[float]]:
        d = self.drivers.get(driver_id)
        return [] if d is None else [[round(t, 1), la, lo] for t, la, lo in d.path]

    def order_view(self, order_id: str) -> OrderView | None:
        return self.orders.get(order_id)
