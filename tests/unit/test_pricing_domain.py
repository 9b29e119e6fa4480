"""Pricing's pure parts: surge tiers, clamp and rounding, hysteresis, fees, tax, promo rules."""

from __future__ import annotations

from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foodmesh.core.fees import FeeSchedule
from foodmesh.core.money import apply_bps, apply_ppm, apply_tenths, mul_ratio
from foodmesh.core.receipt import compute_breakdown
from foodmesh.core.tax import DEFAULT, TABLE, TaxRule, TaxTable, tax_minor
from foodmesh.v1 import common_pb2
from servers.pricing import surge
from servers.pricing.promo import (
    DiscountKind,
    Promo,
    PromoRejected,
    PromoUsage,
    check_redeemable,
    discount_minor,
)

WK = common_pb2.WeatherKind
CELL = "9q8yy"  # San Francisco


# -- surge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "base"),
    [
        (F(0), F(1)),
        (F(1, 2), F(1)),
        (F(1), F(1)),  # tier 1 upper boundary, inclusive
        (F(101, 100), F("1.005")),  # just over: tier 2
        (F(3, 2), F("1.25")),
        (F(2), F(3, 2)),  # tier 2 upper boundary, inclusive: 1 + 1 × 0.5
        (F(201, 100), F("2.003")),  # just over: tier 3 starts at 2.0 (the design's jump)
        (F(3), F("2.3")),
        (F(5), F("2.9")),  # tier 3 upper boundary, inclusive: 2 + 3 × 0.3
        (F(501, 100), F("2.5")),  # over 5: the design's flat 2.5
        (F(100), F("2.5")),
    ],
)
def test_base_surge_at_every_tier_boundary(ratio: F, base: F) -> None:
    assert surge.base_surge(ratio) == base


def test_ratio_without_drivers_is_the_seeds_extreme_and_zero_without_orders() -> None:
    assert surge.demand_ratio(0, 0) == 0
    assert surge.demand_ratio(3, 0) == 5
    assert surge.demand_ratio(3, 2) == F(3, 2)
    with pytest.raises(ValueError):
        surge.demand_ratio(-1, 2)


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        (F("0.5"), F(1)),  # clamped up
        (F(1), F(1)),
        (F("1.25"), F("1.3")),  # half up, not banker's (round(1.25, 1) == 1.2)
        (F("1.249"), F("1.2")),
        (F("2.95"), F(3)),
        (F(3), F(3)),
        (F("4.05"), F(3)),  # clamped down: 2.5 × 1.8 × 1.5 = 6.75 never shows
    ],
)
def test_finish_clamps_to_1_and_3_and_rounds_half_up_to_a_tenth(raw: F, out: F) -> None:
    assert surge.finish(raw) == out


def test_compute_multiplies_events_and_weather_and_says_why() -> None:
    now = 1_000.0
    ev = [surge.Event("stadium", 37.7786, -122.3893, 60_000)]  # inside 9q8yy
    rain = [surge.Weather("9q8", WK.WEATHER_KIND_HEAVY_RAIN)]
    got = surge.compute(demand=3, supply=2, events=ev, weather=rain, cell=CELL, now=now)
    assert got.ratio == F(3, 2) and got.event_multiplier == F("1.8")
    assert got.weather_multiplier == F("1.5")
    assert got.raw == F("1.25") * F("1.8") * F("1.5")  # 3.375
    assert got.multiplier == 3  # clamped
    assert got.reason == "Moderate demand + special event + bad weather"
    calm = surge.compute(demand=1, supply=4, cell=CELL, now=now)
    assert (calm.multiplier, calm.reason) == (F(1), "Normal demand")


@pytest.mark.parametrize(
    ("attendance", "factor"),
    [(1_000, F(1)), (1_001, F("1.2")), (10_001, F("1.5")), (50_000, F("1.5")), (50_001, F("1.8"))],
)
def test_event_factor_grows_with_attendance(attendance: int, factor: F) -> None:
    e = surge.Event("e", 37.7786, -122.3893, attendance)
    assert surge.event_multiplier([e], CELL, 0.0) == factor


def test_event_outside_its_window_or_far_away_does_not_count() -> None:
    later = surge.Event("e", 37.7786, -122.3893, 60_000, start_ts=100.0, end_ts=200.0)
    assert surge.event_multiplier([later], CELL, 50.0) == 1
    assert surge.event_multiplier([later], CELL, 150.0) == F("1.8")
    assert surge.event_multiplier([later], CELL, 250.0) == 1
    la = surge.Event("far", 34.05, -118.25, 60_000)
    assert surge.event_multiplier([la], CELL, 0.0) == 1


@pytest.mark.parametrize(
    ("kind", "factor"),
    [(WK.WEATHER_KIND_CLEAR, F(1)), (WK.WEATHER_KIND_LIGHT_RAIN, F("1.2")),
     (WK.WEATHER_KIND_MODERATE_RAIN, F("1.3")), (WK.WEATHER_KIND_HEAVY_RAIN, F("1.5")),
     (WK.WEATHER_KIND_SNOW, F("1.5")), (WK.WEATHER_KIND_EXTREME_TEMPERATURE, F("1.1"))],
)  # fmt: skip
def test_weather_factors(kind: int, factor: F) -> None:
    assert surge.weather_multiplier([surge.Weather("9q", kind)], CELL) == factor


def test_the_most_specific_weather_area_wins() -> None:
    w = [surge.Weather("9", WK.WEATHER_KIND_SNOW), surge.Weather("9q8y", WK.WEATHER_KIND_CLEAR)]
    assert surge.weather_multiplier(w, CELL) == 1
    assert surge.weather_multiplier(w, "9q9pp") == F("1.5")
    assert surge.weather_multiplier(w, "dr5ru") == 1


def test_hysteresis_holds_against_jitter_and_moves_a_full_step() -> None:
    assert surge.smooth(None, F("1.26")) == F("1.3")
    assert surge.smooth(F("1.2"), F("1.26")) == F("1.2")  # jitter at the 1.25 edge: held
    assert surge.smooth(F("1.3"), F("1.24")) == F("1.3")
    assert surge.smooth(F("1.3"), F("1.19")) == F("1.2")  # a full step down
    assert surge.smooth(F("1.2"), F("1.31")) == F("1.3")  # a full step up shows at once
    assert surge.smooth(F("1.1"), F("1.0")) == 1  # demand gone: back to 1.0
    assert surge.smooth(F("1.0"), F("2.5")) == F("2.5")  # a spike is not delayed
    flaps = [surge.smooth(F("1.2"), r) for r in (F("1.24"), F("1.26"), F("1.24"), F("1.26"))]
    assert set(flaps) == {F("1.2")}


# -- money, fees, tax ---------------------------------------------------------------------


def test_rounding_is_half_up_on_exact_halves() -> None:
    assert mul_ratio(5, 1, 2) == 3 and mul_ratio(-5, 1, 2) == -3
    assert apply_bps(2398, 500) == 120  # 119.9
    assert apply_bps(10, 5000) == 5 and apply_bps(1, 5000) == 1  # 0.5 → 1
    assert apply_ppm(2000, 86_250) == 173  # 172.5 → 173
    assert apply_tenths(299, 13) == 389  # 388.7
    assert apply_tenths(5, 13) == 7  # 6.5 → 7


def test_fee_schedule() -> None:
    f = FeeSchedule()
    assert f.service_fee(2398) == 150  # the design's $1.50 on $23.98 (min)
    assert f.service_fee(20_000) == 500  # capped
    assert f.service_fee(5_000) == 250
    assert f.small_order_fee(999) == 200 and f.small_order_fee(1000) == 0
    assert f.delivery_fee(299, 1000.0, 10) == 299
    assert f.delivery_fee(299, 5000.0, 10) == 399  # 2-4 mi band
    assert f.delivery_fee(299, 5000.0, 15) == 599  # 399 × 1.5 = 598.5 → 599


def test_tax_table_by_zip_then_state_then_default() -> None:
    t = TaxTable()
    assert t.rule("CA", "94105").jurisdiction == "CA San Francisco"
    assert t.rule("ca", "95014").jurisdiction == "CA"
    assert t.rule("NY", "10001-1234").jurisdiction == "NY New York City"
    assert t.rule("", "").jurisdiction == DEFAULT.jurisdiction
    assert t.rule("ZZ", "00000") is DEFAULT
    assert t.rule("OR", "97201").rate_ppm == 0


def test_tax_applies_to_the_parts_the_jurisdiction_taxes() -> None:
    ca, ny = TABLE["CA"]["941"], TABLE["NY"]["100"]
    parts = dict(food_minor=2000, discount_minor=500, delivery_fee_minor=400,
                 service_fee_minor=150, small_order_fee_minor=0)  # fmt: skip
    assert tax_minor(ca, **parts) == apply_ppm(1500, 86_250)  # food after discount only
    assert tax_minor(ny, **parts) == apply_ppm(1500 + 400 + 150, 88_750)


_RULES = st.sampled_from([DEFAULT, *(r for by_zip in TABLE.values() for r in by_zip.values())])


@settings(max_examples=300, deadline=None)
@given(
    prices=st.lists(st.tuples(st.integers(0, 50_000), st.integers(1, 99)), min_size=1,
                    max_size=100),
    zone_fee=st.integers(0, 2_000),
    distance=st.floats(0, 30_000),
    tenths=st.integers(10, 30),
    off=st.integers(0, 100_000),
    rule=_RULES,
)  # fmt: skip
def test_breakdown_lines_always_sum_to_the_total(
    prices: list[tuple[int, int]], zone_fee: int, distance: float, tenths: int, off: int,
    rule: TaxRule,
) -> None:  # fmt: skip
    subtotal = sum(p * q for p, q in prices)
    b = compute_breakdown(subtotal_minor=subtotal, zone_fee_minor=zone_fee, distance_m=distance,
                          surge_tenths=tenths, discount_off_minor=off, tax_rule=rule,
                          fees=FeeSchedule(), promo_code="X")  # fmt: skip
    assert sum(ln.amount_minor for ln in b.lines) == b.total_minor
    assert b.total_minor >= 0 and b.tax_minor >= 0 and b.discount_minor <= 0
    assert -b.discount_minor <= subtotal
    assert all(isinstance(ln.amount_minor, int) for ln in b.lines)
    expected_tax = apply_ppm(
        (subtotal + b.discount_minor if rule.food else 0)
        + (b.delivery_fee_minor if rule.delivery_fee else 0)
        + (b.service_fee_minor + b.small_order_fee_minor if rule.service_fee else 0),
        rule.rate_ppm,
    )
    assert b.tax_minor == expected_tax
    base = FeeSchedule().delivery_base(zone_fee, distance)
    assert b.delivery_fee_minor == (base * tenths * 2 + 10) // 20  # half up, exactly


def test_surged_delivery_line_explains_itself() -> None:
    b = compute_breakdown(subtotal_minor=2398, zone_fee_minor=299, distance_m=100.0,
                          surge_tenths=15, discount_off_minor=0, tax_rule=DEFAULT,
                          fees=FeeSchedule())  # fmt: skip
    line = next(ln for ln in b.lines if ln.kind == "delivery_fee")
    assert "x 1.5 busy-area surge" in line.label and line.amount_minor == 449


# -- promo rules --------------------------------------------------------------------------


def _promo(**kw: object) -> Promo:
    base: dict[str, object] = dict(code="SUMMER20", kind=DiscountKind.PERCENT, percent_bps=2000)
    base.update(kw)
    return Promo(**base)  # type: ignore[arg-type]


def _off(p: Promo, subtotal: int = 2398, usage: PromoUsage | None = None, *, cell: str = CELL,
         now: float = 1_000.0, currency: str = "USD") -> int:  # fmt: skip
    return discount_minor(p, subtotal_minor=subtotal, currency=currency, cell=cell,
                          usage=usage or PromoUsage(), now=now)  # fmt: skip


def test_percent_and_fixed_discounts_with_caps() -> None:
    assert _off(_promo()) == 480  # the design's $4.80 off $23.98 (479.6 → 480)
    assert _off(_promo(max_discount_minor=300)) == 300
    assert _off(_promo(kind=DiscountKind.FIXED, amount_off_minor=500)) == 500
    assert _off(_promo(kind=DiscountKind.FIXED, amount_off_minor=5000), subtotal=1200) == 1200
    assert _off(_promo(percent_bps=10_000)) == 2398


@pytest.mark.parametrize(
    ("promo", "usage", "kw", "reason"),
    [
        (_promo(start_ts=2_000.0), PromoUsage(), {}, "NOT_YET_VALID"),
        (_promo(end_ts=500.0), PromoUsage(), {}, "EXPIRED"),
        (_promo(regions=("dr5",)), PromoUsage(), {}, "WRONG_REGION"),
        (_promo(kind=DiscountKind.FIXED, amount_off_minor=5, currency="EUR"), PromoUsage(), {},
         "WRONG_CURRENCY"),
        (_promo(total_limit=10), PromoUsage(total_uses=10), {}, "EXHAUSTED"),
        (_promo(first_order_only=True), PromoUsage(customer_orders=1), {}, "FIRST_ORDER_ONLY"),
        (_promo(per_customer_limit=1), PromoUsage(customer_uses=1), {}, "ALREADY_USED"),
        (_promo(min_subtotal_minor=3000), PromoUsage(), {}, "MINIMUM_NOT_MET"),
    ],
)  # fmt: skip
def test_each_rule_names_its_reason(
    promo: Promo, usage: PromoUsage, kw: dict[str, object], reason: str
) -> None:
    with pytest.raises(PromoRejected) as caught:
        _off(promo, usage=usage)
    assert caught.value.reason == reason and promo.code in caught.value.message


def test_rules_that_pass() -> None:
    assert _off(_promo(regions=("9q8",), first_order_only=True, per_customer_limit=2,
                       total_limit=3, min_subtotal_minor=2398, start_ts=0.0, end_ts=2_000.0),
                usage=PromoUsage(customer_uses=1, total_uses=2)) == 480  # fmt: skip
    check_redeemable(_promo(per_customer_limit=1), PromoUsage(), now=0.0)
    with pytest.raises(PromoRejected):
        check_redeemable(_promo(per_customer_limit=1), PromoUsage(customer_uses=1), now=0.0)
