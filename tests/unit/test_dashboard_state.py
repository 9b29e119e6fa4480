"""The dashboard's figures, folded from the events the services publish."""

from __future__ import annotations

from dashboard.state import CityState
from foodmesh.v1 import common_pb2, dispatch_pb2, location_pb2, order_pb2


def fix(
    driver: str, lat: float, lon: float, status: int = 0, order: str = ""
) -> location_pb2.DriverLocationEvent:
    ev = location_pb2.DriverLocationEvent(order_id=order)
    ev.position.driver_id, ev.position.lat, ev.position.lon = driver, lat, lon
    ev.position.status = status or common_pb2.DRIVER_STATUS_AVAILABLE
    return ev


def order_event(oid: str, status: int, at: float, *, seq: int, promised: float = 0.0,
                driver: str = "") -> order_pb2.OrderEvent:  # fmt: skip
    ev = order_pb2.OrderEvent(event_id=f"{oid}.{seq}")
    o = ev.order
    o.order_id, o.status, o.restaurant_id, o.driver_id = oid, status, "rest_1", driver
    o.restaurant_location.lat, o.restaurant_location.lon = 37.77, -122.42
    o.delivery_address.lat, o.delivery_address.lon = 37.78, -122.41
    if promised:
        o.estimated_delivery_time.FromSeconds(int(promised))
    ev.event_time.FromSeconds(int(at))
    return ev


def dispatch_event(oid: str, kind: int, at: float, *, n: int, driver: str = "",
                   offers: int = 0) -> dispatch_pb2.DispatchEvent:  # fmt: skip
    ev = dispatch_pb2.DispatchEvent(event_id=f"d.{oid}.{n}", kind=kind)
    ev.assignment.order_id, ev.assignment.driver_id = oid, driver
    ev.assignment.offers_made = offers
    ev.event_time.FromSeconds(int(at))
    return ev


def test_an_order_life_gives_matching_time_offers_and_eta_error() -> None:
    s = CityState()
    t0 = 1_000_000.0
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_PLACED, t0, seq=1,
                           promised=t0 + 1800), t0)  # fmt: skip
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_CONFIRMED, t0 + 60, seq=2), t0 + 60)
    off = dispatch_pb2.DISPATCH_EVENT_KIND_OFFERED
    s.on_dispatch(dispatch_event("o1", off, t0 + 62, n=1, driver="d1"), t0 + 62)
    s.on_dispatch(dispatch_event("o1", off, t0 + 85, n=2, driver="d2"), t0 + 85)
    fig = s.figures(t0 + 86)
    assert fig["unassigned"] == 1 and fig["in_flight"] == 1
    s.on_dispatch(dispatch_event("o1", dispatch_pb2.DISPATCH_EVENT_KIND_ASSIGNED, t0 + 90, n=3,
                                 driver="d2", offers=2), t0 + 90)  # fmt: skip
    fig = s.figures(t0 + 91)
    assert fig["matching_p50_s"] == 30.0  # confirmed at +60, assigned at +90
    assert fig["offers_per_order"] == 2.0
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_DELIVERED, t0 + 1800 + 180, seq=7,
                           driver="d2"), t0 + 1980)  # fmt: skip
    fig = s.figures(t0 + 1981)
    assert fig["matching_p50_s"] is None  # a 10-minute window: the match was long ago
    assert fig["eta_error_mean_min"] == 3.0  # delivered 3 minutes after the promise
    assert fig["delivered_window"] == 1 and fig["in_flight"] == 0 and fig["unassigned"] == 0


def test_eta_error_per_stage_placement_assignment_pickup() -> None:
    s = CityState()
    t0 = 1_000_000.0
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_PLACED, t0, seq=1,
                           promised=t0 + 1800), t0)  # fmt: skip
    # Picked up: the order stands with its assignment-stage estimate (+1 min off the truth).
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_PICKED_UP, t0 + 1200, seq=5,
                           promised=t0 + 2040, driver="d1"), t0 + 1200)  # fmt: skip
    # Delivered at +33 min; the latest estimate (made at pickup) said +33.5.
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_DELIVERED, t0 + 1980, seq=7,
                           promised=t0 + 2010, driver="d1"), t0 + 1980)  # fmt: skip
    fig = s.figures(t0 + 1981)
    assert fig["eta_error_mean_min"] == 3.0
    assert fig["eta_error_assigned_mean_min"] == 1.0
    assert fig["eta_error_pickup_mean_min"] == 0.5


def test_redelivered_events_count_once() -> None:
    s = CityState()
    ev = order_event("o1", common_pb2.ORDER_STATUS_PLACED, 100.0, seq=1)
    for _ in range(3):
        s.on_order(ev, 100.0)
    assert s.figures(101.0)["orders_last_min"] == 1


def test_orders_per_minute_buckets_and_window() -> None:
    s = CityState(window_s=600)
    for i in range(5):
        s.on_order(order_event(f"a{i}", common_pb2.ORDER_STATUS_PLACED, 0, seq=1), 1000.0 + i)
    for i in range(2):
        s.on_order(order_event(f"b{i}", common_pb2.ORDER_STATUS_PLACED, 0, seq=1), 1130.0 + i)
    fig = s.figures(1140.0)
    assert fig["orders_per_min"][-1] == 2 and fig["orders_per_min"][-3] == 5
    assert sum(s.figures(1000.0 + 700)["orders_per_min"]) == 2  # the first five left the window


def test_drivers_fixes_presence_and_paths() -> None:
    s = CityState(driver_ttl_s=120)
    for i in range(10):
        s.on_fix(fix("d1", 37.77 + i * 1e-4, -122.42), 500.0 + i)
    s.on_fix(fix("d2", 37.78, -122.41, common_pb2.DRIVER_STATUS_ON_DELIVERY, "o9"), 505.0)
    fig = s.figures(509.5)
    assert fig["fixes_per_s"] == 1.1 and fig["drivers_online"] == 2
    assert len(s.driver_path("d1")) == 10 and s.driver_path("nobody") == []
    gone = location_pb2.DriverPresenceEvent(event_id="p1", driver_id="d1", online=False)
    s.on_presence(gone, 510.0)
    snap = s.snapshot(510.0)
    by_id = {d[0]: d for d in snap["drivers"]}
    assert by_id["d1"][3] == "offline" and by_id["d2"][3:] == ["on_delivery", "o9"]
    s.snapshot(700.0)  # long silent drivers are forgotten
    assert s.drivers == {}


def test_escalation_shows_until_someone_takes_the_order() -> None:
    s = CityState()
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_PLACED, 1, seq=1), 1.0)
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_CONFIRMED, 2, seq=2), 2.0)
    s.on_dispatch(dispatch_event("o1", dispatch_pb2.DISPATCH_EVENT_KIND_ESCALATED, 80, n=1), 80.0)
    assert s.figures(81.0)["escalated"] == 1
    assert s.snapshot(81.0)["orders"][0][7] is True
    s.on_dispatch(dispatch_event("o1", dispatch_pb2.DISPATCH_EVENT_KIND_ASSIGNED, 90, n=2,
                                 driver="d1"), 90.0)  # fmt: skip
    assert s.figures(91.0)["escalated"] == 0


def test_auto_confirms_timeouts_and_alerts_are_counted() -> None:
    s = CityState()
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_PLACED, 1, seq=1), 1.0)
    auto = order_event("o1", common_pb2.ORDER_STATUS_CONFIRMED, 2, seq=2)
    auto.change.actor = "auto-confirm"
    s.on_order(auto, 2.0)
    s.on_order(order_event("o2", common_pb2.ORDER_STATUS_PLACED, 1, seq=1), 1.0)
    late = order_event("o2", common_pb2.ORDER_STATUS_CANCELLED, 301, seq=2)
    late.order.cancellation_reason = "confirm_timeout: the restaurant did not confirm"
    s.on_order(late, 301.0)
    flagged = order_event("o1", common_pb2.ORDER_STATUS_CONFIRMED, 40, seq=3)
    flagged.order.alert.kind = order_pb2.ORDER_ALERT_KIND_NO_DRIVER
    s.on_order(flagged, 40.0)
    fig = s.figures(302.0)
    assert (fig["auto_confirmed"], fig["confirm_timeouts"], fig["no_driver"]) == (1, 1, 1)
    lost = order_event("o1", common_pb2.ORDER_STATUS_IN_TRANSIT, 400, seq=4)
    lost.order.alert.kind = order_pb2.ORDER_ALERT_KIND_DRIVER_LOST
    lost.order.alert.last_known_location.lat = 37.7
    s.on_order(lost, 400.0)
    fig = s.figures(401.0)
    assert (fig["no_driver"], fig["driver_lost"]) == (0, 1)
    assert s.orders["o1"].last_known == (37.7, 0.0)
    s.on_order(order_event("o1", common_pb2.ORDER_STATUS_IN_TRANSIT, 420, seq=5), 420.0)
    assert s.figures(421.0)["driver_lost"] == 0  # back: the alert is gone from the order
