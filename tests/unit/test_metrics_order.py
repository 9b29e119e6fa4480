"""Order's business metrics, from the pure hook the store calls after each commit."""

from __future__ import annotations

import dataclasses
import datetime as dt

from prometheus_client import REGISTRY

from servers.order import metrics
from servers.order.model import Order
from servers.order.transitions import Status

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _order(**kw: object) -> Order:
    base = Order(
        order_id="o1", customer_id="c", restaurant_id="r", restaurant_name="R",
        restaurant_lat=37.0, restaurant_lon=-122.0, driver_id="", status=Status.PLACED,
        delivery_address={}, delivery_option=1, scheduled_time=None, currency="USD",
        subtotal_minor=1000, delivery_fee_minor=0, service_fee_minor=0,
        small_order_fee_minor=0, tax_minor=0, discount_minor=0, tip_minor=0,
        total_minor=1000, surge_multiplier=1.0, quote_id="", promo_code="",
        payment_provider="sandbox", payment_id="p", payment_status="authorized",
        refunded_minor=0, payment_pending=None, estimated_delivery_time=T0,
        eta_confidence=0.8, ready_time=T0, release_at=None, released=True,
        cancellation_reason="", last_seq=1, created_at=T0, updated_at=T0,
        promised_delivery_time=T0,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _count(status: str) -> float:
    return REGISTRY.get_sample_value("foodmesh_orders_total", {"status": status}) or 0.0


def _eta() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("foodmesh_eta_error_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("foodmesh_eta_error_seconds_sum") or 0.0
    return count, total


def test_each_status_step_counts_once_and_a_driver_change_does_not() -> None:
    before = {s: _count(s) for s in ("placed", "confirmed", "cancelled")}
    metrics.placed()
    metrics.committed(_order(), _order(status=Status.CONFIRMED), at=T0)
    confirmed = _order(status=Status.CONFIRMED)
    metrics.committed(confirmed, dataclasses.replace(confirmed, driver_id="d1"), at=T0)
    metrics.committed(confirmed, _order(status=Status.CANCELLED), at=T0)
    assert _count("placed") == before["placed"] + 1
    assert _count("confirmed") == before["confirmed"] + 1
    assert _count("cancelled") == before["cancelled"] + 1


def test_delivery_observes_the_distance_from_the_promise_made_at_placement() -> None:
    # Dispatch later moved the estimate to T0 + 5 min; the promise at placement was T0.
    transit = _order(status=Status.IN_TRANSIT, estimated_delivery_time=T0 + dt.timedelta(minutes=5))
    delivered = dataclasses.replace(transit, status=Status.DELIVERED)
    n0, s0 = _eta()
    metrics.committed(transit, delivered, at=T0 + dt.timedelta(minutes=7))  # 7 min late
    metrics.committed(transit, delivered, at=T0 - dt.timedelta(minutes=2))  # 2 min early
    n1, s1 = _eta()
    assert n1 == n0 + 2
    assert s1 - s0 == 7 * 60 + 2 * 60
    # An order placed before the promise was kept falls back to its estimate.
    old = dataclasses.replace(transit, promised_delivery_time=None)
    metrics.committed(old, dataclasses.replace(old, status=Status.DELIVERED),
                      at=T0 + dt.timedelta(minutes=5))  # fmt: skip
    n2, s2 = _eta()
    assert (n2, s2) == (n1 + 1, s1)  # on time against its estimate: 0 s error


def test_a_step_that_is_not_a_delivery_observes_no_eta_error() -> None:
    n0, _ = _eta()
    metrics.committed(_order(), _order(status=Status.CONFIRMED), at=T0)
    assert _eta()[0] == n0
