"""The simulated city: deterministic, realistic enough, and the design's example point works."""

from __future__ import annotations

import math

import pytest

from foodmesh.sim.city import CENTER, CUISINES, build_city


def _miles(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 3958.8 * math.asin(math.sqrt(h))


def test_the_same_seed_gives_the_same_city_and_a_bigger_city_extends_it() -> None:
    a = build_city(seed=3, restaurants=60, drivers=20, customers=30)
    b = build_city(seed=3, restaurants=60, drivers=20, customers=30)
    assert a == b
    bigger = build_city(seed=3, restaurants=120, drivers=40, customers=30)
    assert bigger.restaurants[:60] == a.restaurants
    assert bigger.drivers[:20] == a.drivers
    other = build_city(seed=4, restaurants=60, drivers=20, customers=30)
    assert other.restaurants != a.restaurants


def test_ids_are_unique_and_menus_are_well_formed() -> None:
    city = build_city(restaurants=300, drivers=50, customers=50)
    ids = [r.restaurant_id for r in city.restaurants]
    assert len(set(ids)) == len(ids)
    assert len({d.driver_id for d in city.drivers}) == 50
    for r in city.restaurants:
        assert set(r.restaurant.cuisines) <= set(CUISINES)
        assert 1 <= r.restaurant.price_level <= 4
        items = [i for c in r.menu for i in c.items]
        assert len({i.item_id for i in items}) == len(items) >= 6
        assert all(99 <= i.price.amount_minor <= 6000 for i in items)
        assert all(len(z.polygon) == 8 for z in r.restaurant.zones)
        assert 5 <= r.prep_mean_min <= 30 and r.prep_sd_min > 0
        assert r.restaurant.hours and all(
            0 <= h.open_minute < h.close_minute <= 26 * 60 for h in r.restaurant.hours
        )


def test_the_seed_example_point_has_restaurants_open_around_the_clock_nearby() -> None:
    city = build_city(restaurants=50)
    near = [r for r in city.restaurants if _miles(r.location, CENTER) < 0.5]
    assert len(near) >= 5
    always = [r for r in near if {(h.open_minute, h.close_minute) for h in r.restaurant.hours}
              == {(0, 1440)} and len(r.restaurant.hours) == 7]  # fmt: skip
    assert len(always) >= 5
    assert city.customers[0].address.lat == CENTER[0]
    # the city has a real spread: some restaurants are miles from the centre
    far = max(_miles(r.location, CENTER) for r in build_city(restaurants=500).restaurants)
    assert 2.0 < far < 8.0


def test_a_city_needs_restaurants_and_customers() -> None:
    with pytest.raises(ValueError):
        build_city(restaurants=0)
