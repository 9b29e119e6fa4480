"""The demand model: the daily curve's shape, Poisson arrivals, and the customers' choices."""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics

import pytest

from foodmesh.sim.city import build_city
from foodmesh.sim.demand import (
    Arrivals,
    Chooser,
    choose_cart,
    curve,
    demand_multiplier,
    is_open,
    next_arrival,
    peak_multiplier,
    restaurant_weight,
)
from foodmesh.v1 import catalog_pb2

LA = dt.timezone(dt.timedelta(hours=-8))  # a fixed offset: PST, as LA is in November


def hourly(weekday: int) -> list[float]:
    return [curve(weekday, h) for h in range(24)]


def test_the_curve_averages_one_over_a_week() -> None:
    mean = statistics.fmean(curve(d, m / 60) for d in range(7) for m in range(0, 24 * 60, 5))
    assert mean == pytest.approx(1.0, rel=1e-3)


def test_weekdays_peak_at_lunch_and_dinner_with_a_quiet_night_and_afternoon() -> None:
    day = hourly(2)  # a Wednesday
    lunch = max(range(10, 15), key=lambda h: day[h])
    dinner = max(range(16, 22), key=lambda h: day[h])
    assert lunch == 12 and dinner in (18, 19)
    assert day[dinner] > day[lunch] > 1.5  # dinner is the busier peak
    assert day[15] < 0.6 * day[lunch]  # the afternoon lull between them
    assert day[4] < 0.15 and day[4] == min(day)  # 4 am is the quietest hour
    assert max(day) == max(day[lunch], day[dinner])


def test_weekends_have_a_later_wider_midday_and_a_bigger_dinner() -> None:
    wed, sat = hourly(2), hourly(5)
    assert sat[10] > 2 * wed[10]  # brunch
    assert sat[14] > wed[14]  # the midday runs longer
    assert max(sat[16:22]) > max(wed[16:22])
    assert sum(sat) > sum(wed)


def test_the_curve_is_continuous_across_midnight_and_refuses_nonsense() -> None:
    assert curve(2, 24.0) == pytest.approx(curve(2, 0.0), rel=1e-9)
    assert curve(2, 23.99) == pytest.approx(curve(3, 0.0), rel=0.05)  # no step at midnight
    assert max(curve(d, h / 4) for d in range(7) for h in range(96)) <= peak_multiplier()
    for bad in ((7, 1.0), (-1, 1.0), (1, 25.0), (1, math.nan)):
        with pytest.raises(ValueError):
            curve(*bad)


def test_demand_multiplier_reads_the_citys_local_time() -> None:
    noon_utc = dt.datetime(2026, 11, 25, 20, 15, tzinfo=dt.UTC)  # 12:15 in San Francisco
    assert demand_multiplier(noon_utc) == pytest.approx(curve(2, 12.25))


def test_poisson_arrivals_follow_the_rate() -> None:
    rng = random.Random(1)
    t, n = 0.0, 0
    while (t := next_arrival(rng, t, lambda _t: 2.0, 2.0)) < 5000:
        n += 1
    assert n == pytest.approx(10_000, rel=0.05)
    assert next_arrival(rng, 0.0, lambda _t: 0.0, 0.0) == math.inf


def test_arrivals_thin_by_the_curve_between_lunch_and_the_small_hours() -> None:
    def count(local_hour: int) -> int:
        start = dt.datetime(2026, 11, 25, local_hour, 0, tzinfo=LA)
        a = Arrivals(3600.0, start, random.Random(local_hour))
        t, n = 0.0, 0
        while (t := a.next(t)) < 1800:
            n += 1
        return n

    lunch, night = count(12), count(4)
    assert lunch > 5 * night
    expected = 1800 * statistics.fmean(curve(2, 12 + m / 60) for m in range(30))
    assert lunch == pytest.approx(expected, rel=0.15)
    flat = Arrivals(3600.0, dt.datetime(2026, 11, 25, 4, tzinfo=LA), random.Random(9), flat=True)
    t, n = 0.0, 0
    while (t := flat.next(t)) < 1800:
        n += 1
    assert n == pytest.approx(1800, rel=0.1)


def test_restaurants_fade_with_distance_and_follow_popularity() -> None:
    assert restaurant_weight(1.0, 0) > restaurant_weight(1.0, 1000) > restaurant_weight(1.0, 4000)
    assert restaurant_weight(2.0, 1000) == pytest.approx(2 * restaurant_weight(1.0, 1000))
    assert restaurant_weight(-1.0, 0) == 0.0
    rng = random.Random(3)
    chooser = Chooser([1.0, 0.0, 3.0])
    draws = [chooser.draw(rng) for _ in range(8000)]
    assert draws.count(1) == 0
    assert draws.count(2) / draws.count(0) == pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError):
        Chooser([0.0, 0.0])
    with pytest.raises(ValueError):
        Chooser([1.0, math.nan])


def test_open_now_follows_the_weekly_hours_past_midnight_and_the_pause() -> None:
    late = catalog_pb2.OpeningHours(weekday=3, open_minute=11 * 60, close_minute=26 * 60)
    r = catalog_pb2.Restaurant(time_zone="America/Los_Angeles", hours=[late])
    wed_noon = dt.datetime(2026, 11, 25, 12, tzinfo=LA)
    assert is_open(r, wed_noon)
    assert not is_open(r, wed_noon.replace(hour=10))
    assert is_open(r, dt.datetime(2026, 11, 26, 1, 30, tzinfo=LA))  # Thursday 1:30 am
    assert not is_open(r, dt.datetime(2026, 11, 26, 2, 30, tzinfo=LA))
    assert not is_open(r, dt.datetime(2026, 11, 26, 12, tzinfo=LA))  # no Thursday hours
    r.paused = True
    assert not is_open(r, wed_noon)
    city = build_city(seed=7, restaurants=6, drivers=0, customers=1)
    assert all(is_open(s.restaurant, wed_noon.replace(hour=4)) for s in city.restaurants[:5])


def test_a_cart_reaches_the_minimum_or_is_not_made() -> None:
    rng = random.Random(5)
    items = [("a", 500), ("b", 1200), ("c", 899)]
    for _ in range(200):
        cart = choose_cart(rng, items, minimum_minor=2000)
        assert cart is not None and cart.subtotal_minor >= 2000
        assert 1 <= len(cart.lines) <= 5 and all(1 <= c.quantity <= 99 for c in cart.lines)
    one = choose_cart(rng, [("only", 300)], minimum_minor=1000)
    assert one is not None and one.lines[0].quantity >= 4  # more of the one thing there is
    assert choose_cart(rng, [], minimum_minor=0) is None
    assert choose_cart(rng, [("x", 0)], minimum_minor=100) is None
