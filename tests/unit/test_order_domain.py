"""Order domain modules: money, fallback pricing and ETA, ids, menu pricing, hours."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from foodmesh.core.errors import FailedPrecondition, InvalidArgument, NotFound
from foodmesh.core.fees import FeeSchedule
from foodmesh.core.money import apply_bps, clamp, split_refund
from foodmesh.core.receipt import compute_breakdown
from foodmesh.core.tax import TaxTable
from foodmesh.v1 import catalog_pb2, common_pb2, order_pb2
from servers.order import convert
from servers.order.cart import price_lines
from servers.order.eta import EtaInput, FallbackEta
from servers.order.ids import new_order_id, order_id_time_ms, uuid7_int
from servers.order.pricing import FallbackPricing, PriceInput, PromoUnavailable
from servers.order.schedule import open_at


def test_basis_points_round_half_away_from_zero() -> None:
    assert apply_bps(2398, 875) == 210  # 209.825
    assert apply_bps(1000, 5) == 1  # 0.5 rounds up
    assert apply_bps(1000, 4) == 0  # 0.4 rounds down
    assert apply_bps(-1000, 5) == -1
    assert apply_bps(0, 875) == 0
    assert clamp(5, 10, 20) == 10 and clamp(25, 10, 20) == 20 and clamp(15, 10, 20) == 15
    assert split_refund(1000, 300) == (700, 300)
    assert split_refund(1000, 5000) == (0, 1000)
    assert split_refund(1000, -5) == (1000, 0)


def _input(subtotal: int, promo: str = "") -> PriceInput:
    return PriceInput(
        customer_id="c",
        restaurant_id="r",
        currency="USD",
        subtotal_minor=subtotal,
        zone_delivery_fee_minor=299,
        items=(("i", 1, ()),),
        delivery_address=common_pb2.Address(lat=1, lon=1),
        promo_code=promo,
    )


def test_fallback_pricing_follows_the_seed_receipt() -> None:
    q = FallbackPricing().price(_input(2398))
    # The design's receipt: $23.98 subtotal, $2.99 delivery, $1.50 service fee.
    assert (q.subtotal_minor, q.delivery_fee_minor, q.service_fee_minor) == (2398, 299, 150)
    assert q.small_order_fee_minor == 0 and q.discount_minor == 0
    assert q.tax_minor == 210  # 8.75 %
    assert q.total() == 2398 + 299 + 150 + 210
    assert q.total(tip_minor=300) == q.total() + 300
    assert q.surge_multiplier == 1.0 and q.source == "fallback"


def test_fallback_pricing_charges_what_pricing_would_without_surge_or_promo() -> None:
    """One source of truth: the fallback's receipt is the Pricing service's own rules."""
    addr = common_pb2.Address(lat=40.75, lon=-73.99, state="NY", zip="10001")
    p = dataclasses.replace(_input(2398), delivery_address=addr, distance_m=5 * 1609.344)
    q = FallbackPricing().price(p)
    b = compute_breakdown(
        subtotal_minor=2398, zone_fee_minor=299, distance_m=5 * 1609.344, surge_tenths=10,
        discount_off_minor=0, tax_rule=TaxTable().rule("NY", "10001"), fees=FeeSchedule(),
    )  # fmt: skip
    assert (q.delivery_fee_minor, q.service_fee_minor, q.small_order_fee_minor, q.tax_minor) == (
        b.delivery_fee_minor, b.service_fee_minor, b.small_order_fee_minor, b.tax_minor
    )  # fmt: skip
    assert q.delivery_fee_minor == 299 + 200  # the 4-7 mi band, as Pricing charges it
    assert q.total() == b.total_minor


def test_fallback_pricing_fees_are_bounded_and_small_orders_pay_extra() -> None:
    small = FallbackPricing().price(_input(800))
    assert small.small_order_fee_minor == 200
    big = FallbackPricing().price(_input(50_000))
    assert big.service_fee_minor == 500  # capped
    assert FallbackPricing().price(_input(6000)).service_fee_minor == 300  # 5 %


def test_fallback_pricing_refuses_promo_codes_it_cannot_check() -> None:
    with pytest.raises(PromoUnavailable):
        FallbackPricing().price(_input(2398, promo="SUMMER20"))


def test_fallback_eta_is_prep_plus_travel() -> None:
    start = dt.datetime(2026, 2, 2, 19, 0, tzinfo=dt.UTC)
    e = EtaInput("r", (37.7755, -122.4183), (37.7755 + 1 / 69.0, -122.4183), 18, 2, 2398, "USD",
                 start)  # fmt: skip
    est = FallbackEta().compute(e)
    assert est.prep_minutes == 18
    # About one mile × 1.3 road factor at 15 mph = 5.2 min, + 3 min hand-over.
    assert est.travel_minutes == pytest.approx(8.2, abs=0.1)
    assert est.ready == start + dt.timedelta(minutes=18)
    assert est.arrival == est.ready + dt.timedelta(minutes=est.travel_minutes)
    slow = FallbackEta().compute(EtaInput("r", (0, 0), (0, 0), 500, 1, 1, "USD", start))
    assert slow.prep_minutes == 60  # clamped like the design's model


def test_order_ids_are_opaque_unique_and_sort_by_time() -> None:
    ids = [new_order_id(now_ms=1_700_000_000_000 + i) for i in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200
    assert all(i.startswith("ord_") and len(i) == 30 for i in ids)
    assert order_id_time_ms(ids[5]) == 1_700_000_000_005
    same_ms = {new_order_id(now_ms=1) for _ in range(1000)}
    assert len(same_ms) == 1000  # 74 random bits
    u = uuid7_int(now_ms=123)
    assert (u >> 76) & 0xF == 7 and (u >> 62) & 0b11 == 0b10
    assert order_id_time_ms("ord_nothex") is None and order_id_time_ms("x") is None


def _money(n: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=n, currency_code="USD")


MENU = catalog_pb2.Menu(
    restaurant_id="rest_1",
    categories=[catalog_pb2.MenuCategory(category_id="c", items=[
        catalog_pb2.MenuItem(item_id="pizza", name="Pizza", price=_money(1499), available=True,
            customizations=[catalog_pb2.CustomizationGroup(group_id="size", name="Size",
                min_choices=1, max_choices=1, options=[
                    catalog_pb2.CustomizationOption(option_id="s", price_delta=_money(-200),
                                                    available=True),
                    catalog_pb2.CustomizationOption(option_id="l", price_delta=_money(300),
                                                    available=False),
                    catalog_pb2.CustomizationOption(option_id="m", price_delta=_money(0),
                                                    available=True)])]),
        catalog_pb2.MenuItem(item_id="cola", name="Cola", price=_money(299), available=True),
        catalog_pb2.MenuItem(item_id="gone", name="Gone", price=_money(100), available=False),
    ])],
)  # fmt: skip


def line(item: str, qty: int = 1, *opts: str, price: int | None = None) -> order_pb2.OrderItemInput:
    it = order_pb2.OrderItemInput(item_id=item, quantity=qty, customizations=list(opts))
    if price is not None:
        it.price.CopyFrom(_money(price))
    return it


def test_lines_are_priced_from_the_menu_with_option_deltas() -> None:
    lines = price_lines([line("pizza", 2, "s"), line("cola", 3, price=299)], MENU, "USD")
    assert [(ln.unit_price_minor, ln.line_total_minor) for ln in lines] == [(1299, 2598),
                                                                           (299, 897)]  # fmt: skip


def test_a_client_price_that_differs_from_the_menu_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match=r"items\[1\]\.price"):
        price_lines([line("cola"), line("pizza", 1, "m", price=999)], MENU, "USD")


def test_unknown_and_unavailable_items_are_named() -> None:
    with pytest.raises(NotFound, match=r"items\[1\]"):
        price_lines([line("cola"), line("nope")], MENU, "USD")
    with pytest.raises(FailedPrecondition, match=r"items\[0\]"):
        price_lines([line("gone")], MENU, "USD")


def test_bad_customizations_name_their_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        price_lines([line("cola"), line("pizza", 1, "zz"), line("pizza", 1, "l"),
                     line("pizza", 1)], MENU, "USD")  # fmt: skip
    fields = {v.field for v in err.value.violations}
    assert fields == {"items[1].customizations[0]", "items[1].customizations",
                      "items[2].customizations[0]", "items[2].customizations",
                      "items[3].customizations"}  # fmt: skip


def test_place_request_checks_name_every_bad_field() -> None:
    now = dt.datetime(2026, 2, 2, 19, tzinfo=dt.UTC)
    req = order_pb2.PlaceOrderRequest(
        restaurant_id="rest 1",
        items=[line("cola", 0), line("", 100)],
        delivery_address=common_pb2.Address(lat=91, lon=0),
        delivery_option=order_pb2.DELIVERY_OPTION_SCHEDULED,
        payment_method_id="p" * 256,  # (none at all pays with the default saved method)
    )
    req.scheduled_time.FromDatetime(now + dt.timedelta(minutes=10))
    with pytest.raises(InvalidArgument) as err:
        convert.check_place(req, now)
    assert {v.field for v in err.value.violations} == {
        "idempotency_key", "restaurant_id", "items[0].quantity", "items[1].item_id",
        "items[1].quantity", "delivery_address.lat", "payment_method_id", "scheduled_time",
    }  # fmt: skip


def test_request_hash_ignores_the_key_only() -> None:
    a = order_pb2.PlaceOrderRequest(idempotency_key="k1", restaurant_id="r", items=[line("x")])
    b = order_pb2.PlaceOrderRequest(idempotency_key="k2", restaurant_id="r", items=[line("x")])
    c = order_pb2.PlaceOrderRequest(idempotency_key="k1", restaurant_id="r", items=[line("x", 2)])
    assert convert.request_hash(a) == convert.request_hash(b) != convert.request_hash(c)


def test_cursors_are_bound_to_their_filters() -> None:
    token = convert.encode_cursor("cus_1|||", "ord_X")
    assert convert.decode_cursor(token, "cus_1|||") == "ord_X"
    with pytest.raises(InvalidArgument):
        convert.decode_cursor(token, "cus_2|||")
    with pytest.raises(InvalidArgument):
        convert.decode_cursor("garbage!", "cus_1|||")


def test_open_at_follows_hours_overnight_spans_and_closures() -> None:
    tz = "America/Los_Angeles"
    hours = [(1, 11 * 60, 22 * 60), (5, 18 * 60, 26 * 60)]  # Mon 11-22, Fri 18-02
    mon_noon = dt.datetime(2026, 2, 2, 20, 0, tzinfo=dt.UTC)  # Monday 12:00 PST
    assert open_at(mon_noon, tz, hours)
    assert not open_at(mon_noon + dt.timedelta(hours=11), tz, hours)  # 23:00
    sat_1am = dt.datetime(2026, 2, 7, 9, 0, tzinfo=dt.UTC)  # Saturday 01:00 PST
    assert open_at(sat_1am, tz, hours)
    assert not open_at(sat_1am, tz, hours, closures={"2026-02-06"})
    assert not open_at(mon_noon, "Not/AZone", hours)
