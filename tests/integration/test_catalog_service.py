"""The Catalog service through its real gRPC port: writes, reads, validation, ownership,
delivery checks and reviews, on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients import CatalogClient, ClientOptions
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.v1 import catalog_pb2 as pb
from foodmesh.v1 import common_pb2
from servers.catalog import SPEC
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service


def token(role: str, subject: str = "tests") -> ClientOptions:
    return ClientOptions(metadata=bearer(mint_token(DEV_SECRET, subject=subject, role=role)))


@pytest.fixture
async def catalog(
    pg_url: str, redis_url: str, namespace: str, redis_client: aioredis.Redis
) -> AsyncIterator[RunningService]:
    assert SPEC.migrations is not None
    await migrate(pg_url, service="catalog", migrations=load_migrations(SPEC.migrations))
    settings = Settings(
        service="catalog",
        postgres_url=pg_url,
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.05,
        shutdown_grace_s=0.5,
    )
    async with run_service(SPEC, settings) as running:
        yield running


@pytest.fixture
async def ops(catalog: RunningService) -> AsyncIterator[CatalogClient]:
    async with CatalogClient(catalog.target, options=token("ops")) as c:
        yield c


def square(lat: float, lon: float, half: float) -> list[common_pb2.LatLng]:
    return [
        common_pb2.LatLng(lat=lat - half, lon=lon - half),
        common_pb2.LatLng(lat=lat - half, lon=lon + half),
        common_pb2.LatLng(lat=lat + half, lon=lon + half),
        common_pb2.LatLng(lat=lat + half, lon=lon - half),
    ]


def usd(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency_code="USD")


def luigis(rid: str = "rest_1", **overrides: object) -> pb.Restaurant:
    r = pb.Restaurant(
        restaurant_id=rid,
        name="Luigi's Pizza",
        cuisines=["Italian", "pizza"],
        address=common_pb2.Address(street="123 Market St", city="San Francisco", state="CA",
                                   zip="94103", country="US", lat=37.7755, lon=-122.4183),
        time_zone="America/Los_Angeles",
        hours=[pb.OpeningHours(weekday=d, open_minute=0, close_minute=1440) for d in range(1, 8)],
        closures=[pb.Closure(date="2026-12-25", reason="Christmas")],
        price_level=2,
        minimum_order=usd(1500),
        avg_prep_time_min=18,
        image_url="https://cdn.example/rest_1.jpg",
        zones=[pb.DeliveryZone(zone_id="core", polygon=square(37.7755, -122.4183, 0.05),
                               delivery_fee=usd(299), minimum_order=usd(1000))],
        max_delivery_distance_miles=4.0,
        owner_id="user_9",
    )  # fmt: skip
    for k, v in overrides.items():
        setattr(r, k, v)
    return r


MENU = [
    pb.MenuCategory(
        category_id="pizza",
        name="Pizza",
        items=[
            pb.MenuItem(
                item_id="margherita", name="Margherita", description="Tomato, mozzarella",
                price=usd(1499), available=True,
                customizations=[pb.CustomizationGroup(
                    group_id="size", name="Size", min_choices=1, max_choices=1,
                    options=[pb.CustomizationOption(option_id="s", name="Small",
                                                    price_delta=usd(-200), available=True),
                             pb.CustomizationOption(option_id="l", name="Large",
                                                    price_delta=usd(300), available=False)])],
            ),
            pb.MenuItem(item_id="marinara", name="Marinara", price=usd(1199), available=False),
        ],
    ),
    pb.MenuCategory(
        category_id="drinks", name="Drinks",
        items=[pb.MenuItem(item_id="cola", name="Cola", price=usd(299), available=True)],
    ),
]  # fmt: skip


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            found.update({v.field: v.description for v in br.field_violations})
    return found


async def test_upserted_restaurant_and_menu_read_back_as_stored(catalog: RunningService) -> None:
    async with CatalogClient(catalog.target, options=token("restaurant", "rest_1")) as owner:
        put = await owner.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis()))
        got = await owner.get_restaurant(pb.GetRestaurantRequest(restaurant_id="rest_1"))
        assert got.restaurant == put.restaurant
        r = got.restaurant
        assert r.cuisines == ["italian", "pizza"]  # lower-cased
        assert r.is_open and not r.paused
        assert r.rating == 0 and r.review_count == 0
        assert r.zones[0].delivery_fee == usd(299)
        # Stored on the 1e-7 degree grid (about a centimetre).
        assert [(p.lat, p.lon) for p in r.zones[0].polygon] == [
            (round(p.lat, 7), round(p.lon, 7)) for p in square(37.7755, -122.4183, 0.05)
        ]
        assert r.update_time.seconds > 0
        empty = await owner.get_menu(pb.GetMenuRequest(restaurant_id="rest_1"))
        assert list(empty.menu.categories) == []
        stored = await owner.upsert_menu(
            pb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU)
        )
        menu = (await owner.get_menu(pb.GetMenuRequest(restaurant_id="rest_1"))).menu
        assert menu == stored.menu
        assert list(menu.categories) == MENU
        # A second upsert replaces the whole menu, in one piece.
        await owner.upsert_menu(pb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU[1:]))
        menu = (await owner.get_menu(pb.GetMenuRequest(restaurant_id="rest_1"))).menu
        assert [c.category_id for c in menu.categories] == ["drinks"]

        paused = await owner.set_restaurant_paused(
            pb.SetRestaurantPausedRequest(restaurant_id="rest_1", paused=True)
        )
        assert paused.restaurant.paused and not paused.restaurant.is_open


async def test_a_zone_given_as_geojson_is_stored_as_vertices(ops: CatalogClient) -> None:
    geo = ('{"type":"Polygon","coordinates":[[[-122.5,37.7],[-122.3,37.7],[-122.3,37.9],'
           '[-122.5,37.9],[-122.5,37.7]]]}')  # fmt: skip
    r = luigis()
    del r.zones[:]
    r.zones.append(pb.DeliveryZone(zone_id="geo", geojson=geo, delivery_fee=usd(100)))
    put = await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=r))
    assert [(p.lat, p.lon) for p in put.restaurant.zones[0].polygon] == [
        (37.7, -122.5), (37.7, -122.3), (37.9, -122.3), (37.9, -122.5)
    ]  # fmt: skip


async def test_bad_restaurant_fields_are_all_named_and_nothing_is_written(
    ops: CatalogClient,
) -> None:
    bad = luigis()
    bad.name = ""
    bad.price_level = 7
    bad.time_zone = "Mars/Base"
    bad.hours.append(pb.OpeningHours(weekday=8, open_minute=0, close_minute=60))
    bad.closures.append(pb.Closure(date="2026-02-30"))
    bad.zones[0].polygon[2].lat = 123.0
    bad.zones.append(pb.DeliveryZone(zone_id="core", polygon=square(37.7, -122.4, 0.01)))
    bad.zones.append(pb.DeliveryZone(zone_id="bow", polygon=[
        common_pb2.LatLng(lat=0, lon=0), common_pb2.LatLng(lat=1, lon=1),
        common_pb2.LatLng(lat=0, lon=1), common_pb2.LatLng(lat=1, lon=0)]))  # fmt: skip
    bad.minimum_order.currency_code = "EUR"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violations(err.value)
    assert {
        "restaurant.name",
        "restaurant.price_level",
        "restaurant.time_zone",
        "restaurant.hours[7].weekday",
        "restaurant.closures[1].date",
        "restaurant.zones[0].polygon[2].lat",
        "restaurant.zones[1].zone_id",
        "restaurant.zones[2].polygon",
        # The restaurant's currency is its minimum order's: the zone in USD is out of line.
        "restaurant.zones[0].delivery_fee.currency_code",
    } <= set(fields), fields
    assert "cross" in fields["restaurant.zones[2].polygon"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.get_restaurant(pb.GetRestaurantRequest(restaurant_id="rest_1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.upsert_restaurant(pb.UpsertRestaurantRequest())
    assert set(violations(err.value)) == {"restaurant"}


async def test_bad_menu_fields_are_named_by_path_and_the_old_menu_stays(ops: CatalogClient) -> None:
    await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis()))
    await ops.upsert_menu(pb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU))
    bad = [pb.MenuCategory() for _ in MENU]
    for b, good in zip(bad, MENU, strict=True):
        b.CopyFrom(good)
    bad[1].items[0].ClearField("price")
    bad[0].items[0].customizations[0].options[0].price_delta.amount_minor = -5000
    bad[0].items[1].item_id = "margherita"
    bad[0].items[1].price.currency_code = "EUR"
    bad[1].category_id = "pizza"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.upsert_menu(pb.UpsertMenuRequest(restaurant_id="rest_1", categories=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violations(err.value)
    assert {
        "categories[1].items[0].price",
        "categories[0].items[0].customizations[0].options[0].price_delta.amount_minor",
        "categories[0].items[1].item_id",
        "categories[0].items[1].price.currency_code",
        "categories[1].category_id",
    } <= set(fields), fields
    menu = (await ops.get_menu(pb.GetMenuRequest(restaurant_id="rest_1"))).menu
    assert list(menu.categories) == MENU


async def test_only_the_owner_or_ops_may_write(catalog: RunningService, ops: CatalogClient) -> None:
    await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis()))
    async with (
        CatalogClient(catalog.target, options=token("restaurant", "rest_2")) as other,
        CatalogClient(catalog.target, options=token("customer", "cust_1")) as customer,
    ):
        for call in (
            other.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis())),
            other.upsert_menu(pb.UpsertMenuRequest(restaurant_id="rest_1", categories=MENU)),
            other.set_restaurant_paused(pb.SetRestaurantPausedRequest(restaurant_id="rest_1")),
            customer.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis())),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Reads are open to customers; the write left nothing behind.
        menu = await customer.get_menu(pb.GetMenuRequest(restaurant_id="rest_1"))
        assert list(menu.menu.categories) == []


async def test_unknown_restaurants_are_not_found(ops: CatalogClient) -> None:
    calls = [
        ops.get_restaurant(pb.GetRestaurantRequest(restaurant_id="nope")),
        ops.get_menu(pb.GetMenuRequest(restaurant_id="nope")),
        ops.upsert_menu(pb.UpsertMenuRequest(restaurant_id="nope", categories=MENU)),
        ops.set_restaurant_paused(pb.SetRestaurantPausedRequest(restaurant_id="nope")),
        ops.check_delivery(pb.CheckDeliveryRequest(
            restaurant_id="nope", location=common_pb2.LatLng(lat=1, lon=1))),
        ops.list_reviews(pb.ListReviewsRequest(restaurant_id="nope")),
        ops.add_review(pb.AddReviewRequest(review=pb.Review(
            order_id="o1", restaurant_id="nope", customer_id="c1", rating=5))),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_check_delivery_follows_concave_zones_edges_and_the_distance_cap(
    ops: CatalogClient,
) -> None:
    # A "U" zone around the restaurant (notch to the north) plus a dear outer ring zone
    # whose far corner lies beyond the 4 mile cap.
    lat0, lon0 = 37.70, -122.45
    u = [(0.0, 0.0), (0.0, 0.03), (0.03, 0.03), (0.03, 0.02), (0.01, 0.02), (0.01, 0.01),
         (0.03, 0.01), (0.03, 0.0)]  # fmt: skip
    r = luigis()
    r.address.lat, r.address.lon = lat0 + 0.005, lon0 + 0.015
    del r.zones[:]
    r.zones.append(pb.DeliveryZone(
        zone_id="u", delivery_fee=usd(199), minimum_order=usd(2000),
        polygon=[common_pb2.LatLng(lat=lat0 + a, lon=lon0 + o) for a, o in u]))  # fmt: skip
    r.zones.append(pb.DeliveryZone(
        zone_id="far", delivery_fee=usd(899), polygon=square(lat0, lon0, 0.1)))  # fmt: skip
    await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=r))

    async def check(dlat: float, dlon: float) -> pb.CheckDeliveryResponse:
        return await ops.check_delivery(pb.CheckDeliveryRequest(
            restaurant_id="rest_1",
            location=common_pb2.LatLng(lat=lat0 + dlat, lon=lon0 + dlon)))  # fmt: skip

    floor = await check(0.005, 0.015)
    assert floor.deliverable and floor.zone_id == "u"
    assert floor.delivery_fee == usd(199) and floor.minimum_order == usd(2000)
    edge = await check(0.02, 0.01)  # on the notch's west wall
    assert edge.deliverable and edge.zone_id == "u"
    corner = await check(0.01, 0.02)  # the notch's inner corner vertex
    assert corner.deliverable and corner.zone_id == "u"
    notch = await check(0.02, 0.015)  # in the notch: only the dear outer zone
    assert notch.deliverable and notch.zone_id == "far" and notch.delivery_fee == usd(899)
    assert notch.minimum_order == usd(1500)  # the restaurant's own minimum is the floor
    too_far = await check(-0.09, -0.09)  # inside "far" but ~8 miles away
    assert not too_far.deliverable and "maximum" in too_far.reason
    assert too_far.distance_miles > 4
    outside = await check(0.02, 0.2)
    assert not outside.deliverable


async def test_reviews_count_once_per_order_and_move_the_average(ops: CatalogClient) -> None:
    await ops.upsert_restaurant(pb.UpsertRestaurantRequest(restaurant=luigis()))

    def review(order: str, rating: int, text: str = "") -> pb.AddReviewRequest:
        return pb.AddReviewRequest(review=pb.Review(
            order_id=order, restaurant_id="rest_1", customer_id="c_" + order, rating=rating,
            text=text))  # fmt: skip

    ratings = [5, 4, 4, 2, 5, 3, 1, 5]
    for i, rating in enumerate(ratings):
        got = await ops.add_review(review(f"o{i}", rating, f"meal {i}"))
        assert got.review_count == i + 1
        assert got.rating == pytest.approx(sum(ratings[: i + 1]) / (i + 1))
    # The Order service retrying (even concurrently) changes nothing.
    again = await asyncio.gather(*(ops.add_review(review("o3", 2, "meal 3")) for _ in range(5)))
    assert {(a.review_count, a.rating) for a in again} == {(8, sum(ratings) / 8)}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.add_review(review("o3", 5, "changed my mind"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    r = (await ops.get_restaurant(pb.GetRestaurantRequest(restaurant_id="rest_1"))).restaurant
    assert (r.review_count, r.rating) == (8, sum(ratings) / 8)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.add_review(review("", 6))
    assert set(violations(err.value)) >= {"review.order_id", "review.rating"}

    seen: list[str] = []
    token_ = ""
    while True:
        page = await ops.list_reviews(
            pb.ListReviewsRequest(restaurant_id="rest_1", page_size=3, page_token=token_)
        )
        assert len(page.reviews) <= 3
        seen += [rv.order_id for rv in page.reviews]
        token_ = page.next_page_token
        if not token_:
            break
    assert seen == [f"o{i}" for i in reversed(range(8))]  # newest first, each once
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ops.list_reviews(pb.ListReviewsRequest(restaurant_id="rest_1", page_token="zz"))
    assert "page_token" in violations(err.value)
