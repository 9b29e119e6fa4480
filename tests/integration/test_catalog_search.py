"""SearchRestaurants through the real gRPC port, checked against a brute-force filter.

The brute force knows nothing of the index: it measures haversine distances to every
restaurant the test created, decides zones by their rectangle bounds, and orders by
the documented keys.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from clients import CatalogClient
from foodmesh.core.geo import METERS_PER_MILE, haversine_m
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import common_pb2
from servers.catalog import SPEC
from servers.runtime.config import Settings
from servers.runtime.serve import RunningService, run_service
from tests.integration.test_catalog_service import catalog, ops, token, usd, violations

__all__ = ["catalog", "ops"]  # fixtures, re-exported for pytest

CENTER = (37.76, -122.43)
CUISINES = ["italian", "thai", "mexican", "sushi", "indian", "burgers"]
DEFAULT_RADIUS = 5.0


@dataclass
class Spot:
    """What the test knows of one restaurant it created."""

    rid: str
    lat: float
    lon: float
    cuisines: list[str]
    price: int
    prep: int
    max_miles: float
    #: (fee, minimum, lat_lo, lat_hi, lon_lo, lon_hi), in the order given.
    zones: list[tuple[int, int, float, float, float, float]]
    open_: bool
    minimum: int
    ratings: list[int] = field(default_factory=list)
    orders: int = 0

    @property
    def rating(self) -> float:
        return sum(self.ratings) / len(self.ratings) if self.ratings else 0.0


def grid(v: float) -> float:
    return round(v, 6)  # whole E7 units, so the rectangle test below is exact


def make_spots(n: int, seed: int) -> list[Spot]:
    rng = random.Random(seed)
    spots = []
    for i in range(n):
        lat = grid(CENTER[0] + rng.uniform(-0.25, 0.25))
        lon = grid(CENTER[1] + rng.uniform(-0.3, 0.3))
        zones = []
        for _ in range(rng.choice([1, 1, 2])):
            h, w = rng.uniform(0.02, 0.15), rng.uniform(0.02, 0.15)
            zones.append((rng.randrange(0, 800, 50), rng.randrange(0, 3000, 500),
                          grid(lat - h), grid(lat + h), grid(lon - w), grid(lon + w)))  # fmt: skip
        spots.append(
            Spot(
                rid=f"r{i:04d}", lat=lat, lon=lon,
                cuisines=rng.sample(CUISINES, rng.choice([1, 2])),
                price=rng.randint(1, 4), prep=rng.choice([10, 15, 20, 30]),
                max_miles=rng.choice([3.0, 6.0, 10.0, 25.0]), zones=zones,
                open_=rng.random() < 0.7, minimum=rng.randrange(0, 2000, 250),
            )
        )  # fmt: skip
    return spots


def to_pb(s: Spot) -> pb.Restaurant:
    def rect(z: tuple[int, int, float, float, float, float]) -> list[common_pb2.LatLng]:
        _, _, a0, a1, o0, o1 = z
        return [
            common_pb2.LatLng(lat=a, lon=o) for a, o in ((a0, o0), (a0, o1), (a1, o1), (a1, o0))
        ]

    return pb.Restaurant(
        restaurant_id=s.rid, name=f"Restaurant {s.rid}", cuisines=s.cuisines,
        address=common_pb2.Address(street=f"{s.rid} Main St", city="SF", lat=s.lat, lon=s.lon),
        time_zone="America/Los_Angeles",
        # Open all week round the clock, or never: "open" is then known without a clock.
        hours=[pb.OpeningHours(weekday=d, open_minute=0, close_minute=1440) for d in range(1, 8)]
        if s.open_ else [],
        price_level=s.price, minimum_order=usd(s.minimum), avg_prep_time_min=s.prep,
        max_delivery_distance_miles=s.max_miles,
        zones=[pb.DeliveryZone(zone_id=f"z{k}", polygon=rect(z), delivery_fee=usd(z[0]),
                               minimum_order=usd(z[1])) for k, z in enumerate(s.zones)],
    )  # fmt: skip


@dataclass(frozen=True)
class Expect:
    rid: str
    miles: float
    minutes: int
    fee: int
    minimum: int
    key: tuple[float | int | str, ...]


def brute_force(spots: list[Spot], req: pb.SearchRestaurantsRequest) -> list[Expect]:
    radius = req.radius or DEFAULT_RADIUS
    out = []
    for s in spots:
        miles = haversine_m(req.lat, req.lon, s.lat, s.lon) / METERS_PER_MILE
        if miles > radius or miles > s.max_miles:
            continue
        inside = [z for z in s.zones if z[2] <= req.lat <= z[3] and z[4] <= req.lon <= z[5]]
        if not inside:
            continue
        if req.cuisine and not set(req.cuisine) & set(s.cuisines):
            continue
        if req.price_level and s.price not in req.price_level:
            continue
        if req.min_rating and s.rating < req.min_rating:
            continue
        if req.open_now and not s.open_:
            continue
        minutes = s.prep + math.ceil(miles / 12.0 * 60.0) + 5
        if req.max_delivery_time_min and minutes > req.max_delivery_time_min:
            continue
        zone = min(inside, key=lambda z: z[0])
        key: tuple[float | int | str, ...] = {
            pb.SEARCH_SORT_RATING: (-s.rating, -len(s.ratings), miles, s.rid),
            pb.SEARCH_SORT_DELIVERY_TIME: (minutes, miles, s.rid),
            # No orders are placed here (no NATS): popularity ties at none and reviews
            # decide; real order counts are test_gateway_search's.
            pb.SEARCH_SORT_POPULARITY: (-s.orders, -len(s.ratings), miles, s.rid),
        }.get(req.sort, (miles, s.rid))
        out.append(Expect(s.rid, miles, minutes, zone[0], max(zone[1], s.minimum), key))
    return sorted(out, key=lambda e: e.key)


async def all_pages(
    client: CatalogClient, req: pb.SearchRestaurantsRequest
) -> list[pb.RestaurantSummary]:
    got: list[pb.RestaurantSummary] = []
    token_ = ""
    while True:
        page_req = pb.SearchRestaurantsRequest()
        page_req.CopyFrom(req)
        page_req.page_token = token_
        page = await client.search_restaurants(page_req)
        size = req.page_size or 20
        assert len(page.restaurants) <= size
        got += page.restaurants
        if page.next_page_token:
            assert len(page.restaurants) == size
        assert page.total_count >= len(got)
        token_ = page.next_page_token
        if not token_:
            assert page.total_count == len(got)
            return got


@pytest.fixture
async def seeded(catalog: RunningService) -> AsyncIterator[tuple[CatalogClient, list[Spot]]]:
    spots = make_spots(200, seed=20260305)
    async with CatalogClient(catalog.target, options=token("service")) as client:
        for i in range(0, len(spots), 25):
            await asyncio.gather(*(
                client.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(s)))
                for s in spots[i : i + 25]))  # fmt: skip
        rng = random.Random(5)
        reviews = []
        near = sorted(spots, key=lambda s: haversine_m(*CENTER, s.lat, s.lon))[:90]
        for s in rng.sample(near, 50):
            for k in range(rng.randint(1, 3)):
                s.ratings.append(rng.randint(1, 5))
                reviews.append(client.add_review(pb.AddReviewRequest(review=pb.Review(
                    order_id=f"{s.rid}-o{k}", restaurant_id=s.rid, customer_id="c",
                    rating=s.ratings[-1]))))  # fmt: skip
        await asyncio.gather(*reviews)
        yield client, spots


def random_request(rng: random.Random) -> pb.SearchRestaurantsRequest:
    req = pb.SearchRestaurantsRequest(
        lat=CENTER[0] + rng.uniform(-0.2, 0.2),
        lon=CENTER[1] + rng.uniform(-0.25, 0.25),
        radius=rng.choice([0.0, 1.0, 3.5, 5.0, 12.0, 25.0]),
        sort=rng.choice([0, 1, 2, 3, 4]),  # type: ignore[arg-type]
        page_size=rng.choice([0, 3, 7, 50]),
    )
    if rng.random() < 0.3:
        req.cuisine.extend(rng.sample(CUISINES, rng.randint(1, 2)))
    if rng.random() < 0.3:
        req.price_level.extend(rng.sample([1, 2, 3, 4], rng.randint(1, 2)))
    if rng.random() < 0.2:
        req.min_rating = rng.choice([1.0, 3.0, 4.5])
    if rng.random() < 0.2:
        req.max_delivery_time_min = rng.choice([20, 30, 45])
    req.open_now = rng.random() < 0.3
    return req


def check(got: list[pb.RestaurantSummary], want: list[Expect], spots: list[Spot]) -> None:
    assert [g.restaurant_id for g in got] == [w.rid for w in want], [w.key for w in want]
    by_id = {s.rid: s for s in spots}
    for g, w in zip(got, want, strict=True):
        s = by_id[g.restaurant_id]
        assert g.distance_miles == pytest.approx(w.miles, abs=0.006)
        assert g.delivery_time_min == w.minutes
        assert g.delivery_fee == usd(w.fee) and g.minimum_order == usd(w.minimum)
        assert g.is_open == s.open_
        assert g.rating == pytest.approx(s.rating) and g.review_count == len(s.ratings)
        assert (g.location.lat, g.location.lon) == (s.lat, s.lon)
        assert g.price_level == s.price and list(g.cuisines) == s.cuisines


async def test_search_matches_a_brute_force_filter_on_random_data(
    seeded: tuple[CatalogClient, list[Spot]],
) -> None:
    client, spots = seeded
    rng = random.Random(11)
    nonempty = 0
    for _ in range(40):
        req = random_request(rng)
        want = brute_force(spots, req)
        got = await all_pages(client, req)
        check(got, want, spots)
        nonempty += bool(want)
    assert nonempty >= 25  # the random searches do find things


TWEAKS: list[dict[str, object]] = [
    {"cuisine": ["thai", "sushi"]},
    {"min_rating": 4.0},
    {"max_delivery_time_min": 30},
    {"price_level": [1, 4]},
    {"open_now": True},
    {"sort": pb.SEARCH_SORT_RATING},
    {"sort": pb.SEARCH_SORT_DELIVERY_TIME},
    {"sort": pb.SEARCH_SORT_POPULARITY},
    {"sort": pb.SEARCH_SORT_DISTANCE, "radius": 25.0},
]


async def test_each_filter_and_sort_and_stable_bound_pages(
    seeded: tuple[CatalogClient, list[Spot]],
) -> None:
    client, spots = seeded
    base = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=10, page_size=9)
    unfiltered = brute_force(spots, base)
    for tweak in TWEAKS:
        req = pb.SearchRestaurantsRequest()
        req.CopyFrom(base)
        for k, v in tweak.items():
            if isinstance(v, list):
                getattr(req, k).extend(v)
            else:
                setattr(req, k, v)
        want = brute_force(spots, req)
        if "sort" not in tweak:
            assert 0 < len(want) < len(unfiltered), tweak  # the filter bites, leaves something
        got = await all_pages(client, req)
        check(got, want, spots)

    # The same page twice is the same page; a token is only good for its own search.
    req = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=8, page_size=10,
                                      sort=pb.SEARCH_SORT_RATING)  # fmt: skip
    first = await client.search_restaurants(req)
    assert first == await client.search_restaurants(req)
    assert first.next_page_token
    other = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=8, page_size=10,
                                        page_token=first.next_page_token)  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.search_restaurants(other)
    assert "page_token" in violations(err.value)


async def test_bad_search_requests_name_their_fields(ops: CatalogClient) -> None:
    client = ops
    req = pb.SearchRestaurantsRequest(lat=91, lon=-200, radius=26, min_rating=6, page_size=-1,
                                      max_delivery_time_min=-5, price_level=[0],
                                      cuisine=[""], sort=9)  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.search_restaurants(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == {
        "lat", "lon", "radius", "min_rating", "page_size", "max_delivery_time_min",
        "price_level[0]", "cuisine[0]", "sort",
    }  # fmt: skip


def replica_settings(pg_url: str, redis_url: str, namespace: str) -> Settings:
    """Another Catalog replica on the same PostgreSQL, Redis and namespace."""
    return Settings(
        service="catalog",
        postgres_url=pg_url,
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        shutdown_grace_s=0.5,
    )


async def test_a_write_on_one_replica_is_found_by_a_search_on_another_at_once(
    catalog: RunningService, pg_url: str, redis_url: str, namespace: str
) -> None:
    async with (
        run_service(SPEC, replica_settings(pg_url, redis_url, namespace)) as second,
        CatalogClient(catalog.target, options=token("ops")) as a,
        CatalogClient(second.target, options=token("ops")) as b,
    ):
        spots = make_spots(60, seed=3)
        await asyncio.gather(*(
            a.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(s)))
            for s in spots))  # fmt: skip
        wide = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=25,
                                           page_size=100)  # fmt: skip
        by_id = {s.rid: s for s in spots}
        first = brute_force(spots, wide)[0].rid
        kind = by_id[first].cuisines[0]
        req = pb.SearchRestaurantsRequest()
        req.CopyFrom(wide)
        req.cuisine.append(kind)
        # Both replicas now hold the regions in memory.
        for client in (a, b):
            check(await all_pages(client, req), brute_force(spots, req), spots)

        async def both_see(want_on: CatalogClient, r: pb.SearchRestaurantsRequest) -> None:
            check(await all_pages(want_on, r), brute_force(spots, r), spots)

        # A changes a restaurant's cuisine and opens a new one: B finds both changes.
        by_id[first].cuisines = ["somethingelse"]
        await a.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(by_id[first])))
        new = Spot("new", CENTER[0], CENTER[1], [kind], 2, 10, 25.0,
                   [(100, 0, CENTER[0] - 0.1, CENTER[0] + 0.1, CENTER[1] - 0.1, CENTER[1] + 0.1)],
                   True, 0)  # fmt: skip
        spots.append(new)
        await a.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(new)))
        after = await all_pages(b, req)
        check(after, brute_force(spots, req), spots)
        assert "new" in {g.restaurant_id for g in after}
        assert first not in {g.restaurant_id for g in after}

        # B pauses it: A's open-now search drops it.
        await b.set_restaurant_paused(
            pb.SetRestaurantPausedRequest(restaurant_id="new", paused=True)
        )
        new.open_ = False
        req.open_now = True
        assert "new" not in {g.restaurant_id for g in await all_pages(a, req)}
        req.open_now = False

        # A review through A: B shows the new rating and sorts by it.
        new.ratings.append(5)
        await a.add_review(pb.AddReviewRequest(review=pb.Review(
            order_id="o-new", restaurant_id="new", customer_id="c", rating=5)))  # fmt: skip
        req.sort = pb.SEARCH_SORT_RATING
        await both_see(b, req)

        # A moves a restaurant 0.7 degrees (~60 km) east, into another region and out of the
        # 25 miles around the centre: B finds it there only.
        found = {e.rid for e in brute_force(spots, wide)}
        mover = next(s for s in spots if s.rid in found and s.rid != "new" and s.lon > CENTER[1])
        mover.lon += 0.7
        mover.zones = [(z[0], z[1], z[2], z[3], z[4] + 0.7, z[5] + 0.7) for z in mover.zones]
        await a.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(mover)))
        assert mover.rid not in {g.restaurant_id for g in await all_pages(b, wide)}
        there = pb.SearchRestaurantsRequest(lat=mover.lat, lon=mover.lon, radius=2,
                                            page_size=100)  # fmt: skip
        assert [g.restaurant_id for g in await all_pages(b, there)] == [mover.rid]
        for client in (a, b):
            await both_see(client, wide)
            await both_see(client, there)

        # Many searches at once on a replica that holds nothing yet: all exact.
        async with (
            run_service(SPEC, replica_settings(pg_url, redis_url, namespace)) as third,
            CatalogClient(third.target, options=token("customer")) as c,
        ):
            rng = random.Random(4)
            reqs = [random_request(rng) for _ in range(12)]
            got = await asyncio.gather(*(all_pages(c, r) for r in reqs))
            for r, g in zip(reqs, got, strict=True):
                check(g, brute_force(spots, r), spots)


async def test_a_lost_index_is_rebuilt_from_postgres_at_start(
    catalog: RunningService,
    redis_client: aioredis.Redis,
    namespace: str,
    pg_url: str,
    redis_url: str,
) -> None:
    spots = make_spots(30, seed=8)
    async with CatalogClient(catalog.target, options=token("ops")) as client:
        for s in spots:
            await client.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(s)))
        req = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=25, page_size=100)
        check(await all_pages(client, req), brute_force(spots, req), spots)
    keys = [k async for k in redis_client.scan_iter(match=f"{namespace}:*")]
    assert keys
    await redis_client.delete(*keys)  # Redis restarted empty
    settings = Settings(
        service="catalog",
        postgres_url=pg_url,
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        shutdown_grace_s=0.5,
    )
    async with (
        run_service(SPEC, settings) as second,
        CatalogClient(second.target, options=token("customer")) as client,
        CatalogClient(catalog.target, options=token("customer")) as old,
    ):
        req = pb.SearchRestaurantsRequest(lat=CENTER[0], lon=CENTER[1], radius=25, page_size=100)
        check(await all_pages(client, req), brute_force(spots, req), spots)
        # The replica that held the regions from before Redis lost them reloads them.
        check(await all_pages(old, req), brute_force(spots, req), spots)


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("foodmesh_catalog_search_cache_total",
                                     {"result": result}) or 0.0  # fmt: skip


@st.composite
def search_requests(draw: st.DrawFn, spots: list[Spot]) -> pb.SearchRestaurantsRequest:
    """Any point of the area; or one exactly on a zone's edge or corner, or on a restaurant."""
    where = draw(st.sampled_from(["any", "edge", "corner", "restaurant"]))
    s = spots[draw(st.integers(0, len(spots) - 1))]
    z = s.zones[draw(st.integers(0, len(s.zones) - 1))]
    if where == "edge":
        lat = draw(st.sampled_from([z[2], z[3]]))
        lon = grid(draw(st.floats(z[4], z[5])))
    elif where == "corner":
        lat, lon = draw(st.sampled_from([z[2], z[3]])), draw(st.sampled_from([z[4], z[5]]))
    elif where == "restaurant":
        lat, lon = s.lat, s.lon
    else:
        lat = draw(st.floats(CENTER[0] - 0.25, CENTER[0] + 0.25))
        lon = draw(st.floats(CENTER[1] - 0.3, CENTER[1] + 0.3))
    return pb.SearchRestaurantsRequest(
        lat=lat, lon=lon, radius=draw(st.sampled_from([0.0, 0.5, 2.0, 5.0, 12.0, 25.0])),
        cuisine=draw(st.lists(st.sampled_from(CUISINES), max_size=2, unique=True)),
        price_level=draw(st.lists(st.integers(1, 4), max_size=2, unique=True)),
        min_rating=draw(st.sampled_from([0.0, 0.0, 1.0, 3.0, 4.5])),
        max_delivery_time_min=draw(st.sampled_from([0, 0, 20, 30, 45])),
        open_now=draw(st.booleans()),
        sort=draw(st.sampled_from([0, 1, 2, 3, 4])),  # type: ignore[arg-type]
        page_size=draw(st.sampled_from([0, 3, 50])),
    )  # fmt: skip


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
async def test_search_matches_the_brute_force_on_hypothesis_points_and_zone_edges(
    seeded: tuple[CatalogClient, list[Spot]], data: st.DataObject
) -> None:
    client, spots = seeded  # read only: the same restaurants for every example
    req = data.draw(search_requests(spots))
    check(await all_pages(client, req), brute_force(spots, req), spots)


async def test_searches_in_one_cell_share_an_entry_stay_exact_and_an_update_invalidates(
    seeded: tuple[CatalogClient, list[Spot]],
) -> None:
    client, spots = seeded
    # Points of the cell (37.76, -122.43): its middle, near its corners, on its edges.
    cell = [(37.76, -122.43), (37.7649, -122.4251), (37.7551, -122.4349), (37.7551, -122.43),
            (37.7649, -122.4349), (37.76, -122.4251)]  # fmt: skip
    hits, misses, calls = cache_count("hit"), cache_count("miss"), 0
    for sort in (pb.SEARCH_SORT_DISTANCE, pb.SEARCH_SORT_DELIVERY_TIME):
        for lat, lon in cell:
            req = pb.SearchRestaurantsRequest(lat=lat, lon=lon, radius=3, page_size=2, sort=sort)
            got = await all_pages(client, req)
            calls += (len(got) + 1) // 2 or 1
            check(got, brute_force(spots, req), spots)  # each point's own distances
    # One entry for the cell, radius and filters, whatever the point, sort or page.
    assert cache_count("miss") - misses == 1
    assert cache_count("hit") - hits == calls - 1 > 20

    # A restaurant opens in the middle of the cell, another's zone no longer covers it.
    invalidations = cache_count("invalidation")
    new = Spot("cell-new", 37.7601, -122.4301, ["thai"], 2, 10, 25.0,
               [(0, 0, 37.70, 37.80, -122.50, -122.40)], True, 0)  # fmt: skip
    spots.append(new)
    await client.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(new)))
    req = pb.SearchRestaurantsRequest(lat=37.7649, lon=-122.4251, radius=3, page_size=7)
    found = brute_force(spots, req)
    other = next(s for s in spots if s.rid == found[-1].rid and s.rid != "cell-new")
    other.zones = [(z[0], z[1], z[2] + 1.0, z[3] + 1.0, z[4], z[5]) for z in other.zones]
    await client.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=to_pb(other)))
    for lat, lon in cell:
        req = pb.SearchRestaurantsRequest(lat=lat, lon=lon, radius=3, page_size=7)
        got = await all_pages(client, req)
        check(got, brute_force(spots, req), spots)
        ids = {g.restaurant_id for g in got}
        assert "cell-new" in ids and other.rid not in ids
    assert cache_count("invalidation") > invalidations
