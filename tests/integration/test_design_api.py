"""The design's five API examples, sent as written, through the gateway to real services.

Each request is the design's text: method, path, query and body verbatim (the body as JSON,
its ``// or "scheduled"`` comments dropped). What the examples take for granted exists:
restaurant ``rest_123`` (Luigi's Pizza) with ``item_456`` and ``item_789``, payment method
``pm_123`` saved for the customer, promo ``SUMMER20`` (20 % off), driver ``driver_456``
(John Smith, Toyota Prius) online near the restaurant. Only ids the server makes are
substituted: the placed order's id for ``order_789`` in the tracking path, and the
driver's fix time, whose "2026-02-02T19:32:15Z" is the design's *now* (Location refuses
fixes more than 10 minutes old), sent as now. Each reply is
checked for the fields the design documents (money is protobuf's Money object here, enum
values their full names; the fields are there under the design's names).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from clients import CatalogClient, OrderClient, PricingClient
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import pricing_pb2 as ppb
from servers import catalog, dispatch, location, order, pricing
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import run_service
from tests.integration._dispatch import DispatchMesh, Driver, dispatch_settings
from tests.integration._gateway import Http, gateway
from tests.integration._location import location_service
from tests.integration._order import Mesh, _common, square, token, usd
from tests.integration._pricing import PRICING_EXTRA, promo

NOWHERE = "127.0.0.1:1"
CUSTOMER = "user_1"
REST = (37.7755, -122.4183)

SEARCH = "/api/v1/restaurants/search?lat=37.7749&lon=-122.4194&radius=5&cuisine=italian&sort=rating"
PLACE_BODY = """
{
  "restaurant_id": "rest_123",
  "items": [
    {
      "item_id": "item_456",
      "name": "Margherita Pizza",
      "quantity": 1,
      "price": 14.99,
      "customizations": ["extra cheese", "no onions"]
    },
    {
      "item_id": "item_789",
      "name": "Caesar Salad",
      "quantity": 1,
      "price": 8.99
    }
  ],
  "delivery_address": {
    "lat": 37.7749,
    "lon": -122.4194,
    "street": "456 Mission St",
    "city": "San Francisco",
    "state": "CA",
    "zip": "94105",
    "instructions": "Ring doorbell"
  },
  "payment_method_id": "pm_123",
  "delivery_option": "standard",
  "scheduled_time": null,
  "promo_code": "SUMMER20"
}
"""
MATCH_BODY = """
{
  "order_id": "order_789",
  "restaurant_location": {
    "lat": 37.7755,
    "lon": -122.4183
  },
  "delivery_location": {
    "lat": 37.7749,
    "lon": -122.4194
  },
  "ready_time": "2026-02-02T19:20:00Z"
}
"""
LOCATION_BODY = """
{
  "driver_id": "driver_456",
  "lat": 37.7765,
  "lon": -122.4180,
  "accuracy": 10,
  "heading": 45,
  "speed": 25,
  "timestamp": "2026-02-02T19:32:15Z"
}
"""


def headers(role: str, subject: str, json_body: bool = False) -> dict[str, str]:
    (_, value), *_ = token(role, subject).metadata
    out = {"Authorization": value}
    if json_body:
        out["Content-Type"] = "application/json"
    return out


def luigis() -> cpb.Restaurant:
    return cpb.Restaurant(
        restaurant_id="rest_123", name="Luigi's Pizza", cuisines=["italian", "pizza"],
        address=common_pb2.Address(street="123 Market St", city="San Francisco", state="CA",
                                   zip="94103", country="US", lat=REST[0], lon=REST[1]),
        time_zone="America/Los_Angeles",
        hours=[cpb.OpeningHours(weekday=d, open_minute=0, close_minute=1440) for d in range(1, 8)],
        price_level=2, minimum_order=usd(1500), avg_prep_time_min=15,
        image_url="https://cdn.ubereats.com/rest_123.jpg",
        zones=[cpb.DeliveryZone(zone_id="core", polygon=square(*REST, 0.03),
                                delivery_fee=usd(299), minimum_order=usd(1500))],
        max_delivery_distance_miles=5,
    )  # fmt: skip


MENU = [cpb.MenuCategory(category_id="mains", name="Mains", items=[
    cpb.MenuItem(item_id="item_456", name="Margherita Pizza", price=usd(1499), available=True,
                 customizations=[cpb.CustomizationGroup(
                     group_id="extras", name="Extras", min_choices=0, max_choices=2, options=[
                         cpb.CustomizationOption(option_id="cheese", name="Extra cheese",
                                                 price_delta=usd(0), available=True),
                         cpb.CustomizationOption(option_id="no_onion", name="No onions",
                                                 price_delta=usd(0), available=True)])]),
    cpb.MenuItem(item_id="item_789", name="Caesar Salad", price=usd(899), available=True),
])]  # fmt: skip


@dataclass(slots=True)
class World:
    http: Http
    drivers: DispatchMesh


@pytest.fixture
async def world(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[World]:
    for spec in (catalog.SPEC, order.SPEC, pricing.SPEC, location.SPEC, dispatch.SPEC):
        assert spec.migrations is not None
        await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
    common = _common(pg_url, redis_url, nats_url, namespace)
    async with contextlib.AsyncExitStack() as stack:

        async def serve(name: str, spec: Any, extra: dict[str, str]) -> Any:
            settings = Settings(service=name, extra=extra, **common)  # type: ignore[arg-type]
            return await stack.enter_async_context(run_service(spec, settings))

        cat = await serve("catalog", catalog.SPEC, {})
        pr = await serve("pricing", pricing.SPEC, {
            "FOODMESH_PRICING_CATALOG_TARGET": cat.target,
            "FOODMESH_PRICING_LOCATION_TARGET": NOWHERE, **PRICING_EXTRA})  # fmt: skip
        od = await serve(
            "order",
            order.SPEC,
            {
                "FOODMESH_ORDER_CATALOG_TARGET": cat.target,
                "FOODMESH_ORDER_PRICING_TARGET": pr.target,
            },
        )
        feed = await stack.enter_async_context(
            OrderClient(od.target, options=token("service", "location"))
        )
        loc = await stack.enter_async_context(location_service(
            pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
            state_dir=tmp_path, orders=feed, migrated=True))  # fmt: skip
        settings = dispatch_settings(pg_url=pg_url, nats_url=nats_url, namespace=namespace,
                                     location=loc.target, order=od.target)  # fmt: skip
        dsp = await stack.enter_async_context(run_service(dispatch.SPEC, settings))
        http = await stack.enter_async_context(gateway({
            "catalog": cat.target, "order": od.target, "location": loc.target,
            "dispatch": dsp.target, "pricing": pr.target}))  # fmt: skip
        async with CatalogClient(cat.target, options=token("ops", "ops")) as ops:
            await ops.upsert_restaurant(cpb.UpsertRestaurantRequest(restaurant=luigis()))
            await ops.upsert_menu(cpb.UpsertMenuRequest(restaurant_id="rest_123",
                                                        categories=MENU))  # fmt: skip
        async with PricingClient(pr.target, options=token("ops", "ops")) as p:
            await p.upsert_promo_code(ppb.UpsertPromoCodeRequest(promo=promo("SUMMER20")))
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("INSERT INTO orders.sandbox_payment_methods (payment_method_id,"
                               " customer_id, card) VALUES ('pm_123', %s, 'pm_card_visa')",
                               (CUSTOMER,))  # fmt: skip
        drivers = DispatchMesh(Mesh(cat, od, pg_url), loc, dsp, settings)
        async with drivers.client() as dsp_ops:
            await dsp_ops.upsert_driver(dpb.UpsertDriverRequest(driver=dpb.Driver(
                driver_id="driver_456", name="John Smith", vehicle="Toyota Prius",
                vehicle_type=common_pb2.VEHICLE_TYPE_CAR)))  # fmt: skip
        yield World(http, drivers)


def has(doc: dict[str, Any], *paths: str) -> None:
    """Every dotted path is in ``doc`` (a list step checks its first element)."""
    for path in paths:
        node: Any = doc
        for name in path.split("."):
            if isinstance(node, list):
                assert node, f"{path}: empty list"
                node = node[0]
            assert isinstance(node, dict) and name in node, f"{path} missing in {json.dumps(doc)}"
            node = node[name]


async def test_the_designs_five_examples_work_as_written(world: World) -> None:
    http = world.http
    # 1. Search Restaurants.
    async with http.session.get(SEARCH, headers=headers("customer", CUSTOMER)) as resp:
        assert resp.status == 200, await resp.text()
        found = await resp.json()
    has(found, "total", "cursor", *(f"restaurants.{f}" for f in (
        "restaurant_id", "name", "cuisine", "rating", "review_count", "distance_miles",
        "delivery_time_min", "delivery_fee", "minimum_order", "is_open", "image_url",
        "location.lat", "location.lon", "location.address")))  # fmt: skip
    hit = found["restaurants"][0]
    assert hit["restaurant_id"] == "rest_123" and hit["cuisine"] == ["italian", "pizza"]
    assert hit["location"]["address"] == "123 Market St, San Francisco, CA 94103"
    assert found["total"] == 1 and found["cursor"] == ""

    # 2. Place Order: the client's prices are checked against the menu's, options by name.
    async with http.session.post("/api/v1/orders", data=PLACE_BODY,
                                 headers=headers("customer", CUSTOMER, True)) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()
        placed = await resp.json()
    has(
        placed,
        "order_id",
        "status",
        "restaurant.restaurant_id",
        "restaurant.name",
        "items",
        "pricing.subtotal",
        "pricing.delivery_fee",
        "pricing.service_fee",
        "pricing.tax",
        "pricing.discount",
        "pricing.total",
        "estimated_delivery_time",
        "created_at",
    )
    assert placed["restaurant"] == {"restaurant_id": "rest_123", "name": "Luigi's Pizza"}
    p = placed["pricing"]
    assert p["subtotal"]["amount_minor"] == "2398" and p["discount"]["amount_minor"] == "-480"
    assert placed["items"][0]["customizations"] == ["cheese", "no_onion"]
    assert placed["order"]["order_id"] == placed["order_id"]  # proto's shape stays
    order_id = placed["order_id"]

    # 3. Match Driver (internal): driver_456 is online by the restaurant.
    async with Driver(world.drivers, "driver_456") as d:
        await d.at(REST[0] + 0.001, REST[1] + 0.001)
        await d.open_session()
        async with http.session.post("/api/internal/v1/dispatch/match", data=MATCH_BODY,
                                     headers=headers("ops", "ops_1", True)) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
            match = await resp.json()
        has(
            match,
            "driver_id",
            "driver_name",
            "driver_location.lat",
            "driver_location.lon",
            "rating",
            "vehicle",
            "eta_to_restaurant",
            "estimated_pickup_time",
            "estimated_delivery_time",
            "match_score",
        )
        assert (match["driver_id"], match["driver_name"], match["vehicle"]) == (
            "driver_456",
            "John Smith",
            "Toyota Prius",
        )

    # 4. Update Location (driver app): 204, no body.
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fix = LOCATION_BODY.replace("2026-02-02T19:32:15Z", now)
    driver = headers("driver", "driver_456", True)
    async with http.session.post("/api/v1/drivers/location", data=fix, headers=driver) as resp:
        assert resp.status == 204, await resp.text()
        assert await resp.read() == b""

    # 5. Track Order, the placed order's id for order_789.
    async with http.session.get(f"/api/v1/orders/{order_id}/track",
                                headers=headers("customer", CUSTOMER),
                                timeout=aiohttp.ClientTimeout(total=20)) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
        track = await resp.json()
    has(
        track,
        "order_id",
        "status",
        "timeline.status",
        "timeline.timestamp",
        "eta",
        "eta_confidence",
    )
    assert track["order_id"] == order_id
