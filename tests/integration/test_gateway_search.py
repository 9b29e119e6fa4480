"""Search by name, cuisine and dish, autocomplete and real popularity: through the gateway,
against the real Catalog (two replicas) and Order services on PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from psycopg_pool import AsyncConnectionPool

from clients import CatalogClient
from foodmesh.core.events import ORDER_EVENTS
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import order_pb2
from servers import catalog
from servers.catalog.store import CatalogStore
from servers.runtime.config import Settings
from servers.runtime.serve import run_service
from tests.integration._gateway import Http, auth, gateway, violations
from tests.integration._order import Mesh, order_mesh, restaurant, square, token, usd

CUSTOMER = auth("customer", "cus_1")
OPS = auth("ops", "ops_1")
HOME = (37.7749, -122.4194)
AT = f"lat={HOME[0]}&lon={HOME[1]}"


def place(rid: str, name: str, cuisines: list[str], dlat: float) -> cpb.Restaurant:
    r = restaurant(rid)
    r.name = name
    del r.cuisines[:]
    r.cuisines.extend(cuisines)
    r.address.lat += dlat
    del r.zones[:]
    r.zones.add(zone_id="core", polygon=square(r.address.lat, r.address.lon, 0.05),
                delivery_fee=usd(299), minimum_order=usd(0))  # fmt: skip
    r.max_delivery_distance_miles = 10
    return r


def menu(*dishes: tuple[str, str, str]) -> list[cpb.MenuCategory]:
    return [cpb.MenuCategory(category_id="all", name="All", items=[
        cpb.MenuItem(item_id=i, name=n, description=d, price=usd(1499), available=True)
        for i, n, d in dishes])]  # fmt: skip


RESTAURANTS = [
    (place("r_luigi", "Luigi's Pizza", ["italian", "pizza"], 0.004),
     menu(("m1", "Margherita Pizza", "tomato, mozzarella, basil"),
          ("m2", "Caesar Salad", "romaine, parmesan"))),
    (place("r_napoli", "Bella Napoli", ["italian"], 0.001),
     menu(("n1", "Pizza Napoletana", "wood-fired"), ("n2", "Tiramisu", "espresso"))),
    (place("r_tokyo", "Tokyo Ramen", ["japanese"], 0.002),
     menu(("t1", "Tonkotsu Ramen", "pork broth"), ("t2", "Gyoza", "pan-fried dumplings"))),
]  # fmt: skip


@dataclass(slots=True)
class World:
    http: Http
    mesh: Mesh
    second: CatalogClient
    namespace: str
    nats_url: str


@pytest.fixture
async def world(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> AsyncIterator[World]:
    settings = Settings(service="catalog", postgres_url=pg_url, redis_url=redis_url,
                        namespace=namespace, metrics_enabled=False, port=0,
                        health_check_interval_s=0.05, shutdown_grace_s=0.5)  # fmt: skip
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   seed=False) as mesh,
        run_service(catalog.SPEC, settings) as replica,
        CatalogClient(replica.target, options=token("customer", "cus_1")) as second,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target}) as http,
    ):  # fmt: skip
        for r, m in RESTAURANTS:
            async with http.session.put(f"/api/v1/restaurants/{r.restaurant_id}",
                                        data=_json(r), headers=OPS) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
            body = cpb.UpsertMenuRequest(restaurant_id=r.restaurant_id, categories=m)
            async with http.session.put(f"/api/v1/restaurants/{r.restaurant_id}/menu",
                                        data=_json(body, drop="restaurant_id"),
                                        headers=OPS) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
        yield World(http, mesh, second, namespace, nats_url)


def _json(msg: Message, drop: str = "") -> str:
    """``msg`` as a request body, without the field the path carries."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    d.pop(drop, None)
    return json.dumps(d)


async def search(http: Http, query: str) -> dict[str, Any]:
    async with http.session.get(f"/api/v1/restaurants/search?{AT}&{query}",
                                headers=CUSTOMER) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def ids(found: dict[str, Any]) -> list[str]:
    return [r["restaurant_id"] for r in found["restaurants"]]


async def test_text_search_finds_names_cuisines_and_dishes_typos_and_all(world: World) -> None:
    http = world.http
    # A dish, misspelt: only the restaurant that serves it, and the dish it matched.
    found = await search(http, "q=margarita")
    assert ids(found) == ["r_luigi"]
    assert found["restaurants"][0]["matched_dishes"] == ["Margherita Pizza"]
    # The design's field names beside proto's.
    assert found["total"] == found["total_count"] == 1
    assert found["restaurants"][0]["cuisine"] == ["italian", "pizza"]
    # "pizza": in Luigi's name (ranks first) and a dish of Napoli's, though Napoli is nearer.
    assert ids(await search(http, "q=pizza")) == ["r_luigi", "r_napoli"]
    # Combined with the geo filters and sorts: a cuisine filter, a radius too small.
    assert ids(await search(http, "q=pizza&cuisine=pizza")) == ["r_luigi"]
    assert ids(await search(http, "q=pizza&radius=0.1")) == []
    # A word in a description; a cuisine; no match at all.
    assert ids(await search(http, "q=dumplings")) == ["r_tokyo"]
    assert ids(await search(http, "q=japanese")) == ["r_tokyo"]
    assert ids(await search(http, "q=burrito")) == []
    # Pages through the design's cursor.
    first = await search(http, "q=italian&page_size=1")
    assert first["cursor"] and first["cursor"] == first["next_page_token"]
    rest = await search(http, f"q=italian&page_size=1&cursor={first['cursor']}")
    assert ids(first) + ids(rest) == ["r_napoli", "r_luigi"] and rest["cursor"] == ""
    # A query too long is named.
    async with http.session.get(f"/api/v1/restaurants/search?{AT}&q={'x' * 101}",
                                headers=CUSTOMER) as resp:  # fmt: skip
        assert resp.status == 400
        assert "q" in violations(await resp.json())


async def test_autocomplete_completes_dishes_cuisines_and_restaurants(world: World) -> None:
    http = world.http
    async with http.session.get(f"/api/v1/restaurants/autocomplete?q=piz&{AT}",
                                headers=CUSTOMER) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
        got = (await resp.json())["suggestions"]
    kinds = {(s["kind"], s["text"]) for s in got}
    assert ("SUGGESTION_KIND_CUISINE", "pizza") in kinds
    assert ("SUGGESTION_KIND_DISH", "Margherita Pizza") in kinds
    assert ("SUGGESTION_KIND_DISH", "Pizza Napoletana") in kinds
    assert [s["restaurant_id"] for s in got if s["kind"] == "SUGGESTION_KIND_RESTAURANT"] == [
        "r_luigi"
    ]
    async with http.session.get(f"/api/v1/restaurants/autocomplete?q=gyo&{AT}&limit=1",
                                headers=CUSTOMER) as resp:  # fmt: skip
        assert [s["text"] for s in (await resp.json())["suggestions"]] == ["Gyoza"]
    async with http.session.get(f"/api/v1/restaurants/autocomplete?q=&{AT}&limit=50",
                                headers=CUSTOMER) as resp:  # fmt: skip
        assert resp.status == 400
        assert {"q", "limit"} <= set(violations(await resp.json()))
    async with http.session.get(f"/api/v1/restaurants/autocomplete?q=piz&{AT}") as resp:
        assert resp.status == 401


async def test_a_menu_update_is_searchable_at_once_on_every_replica(world: World) -> None:
    http = world.http
    req = cpb.SearchRestaurantsRequest(lat=HOME[0], lon=HOME[1], q="burrito")
    assert not (await world.second.search_restaurants(req)).restaurants  # the replica loaded
    body = cpb.UpsertMenuRequest(categories=menu(("t3", "Burrito Bowl", "rice, beans")))
    async with http.session.put("/api/v1/restaurants/r_tokyo/menu", data=_json(body),
                                headers=OPS) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
    # No wait: a search that starts after the write returned sees it, on either replica.
    got = await world.second.search_restaurants(req)
    assert [r.restaurant_id for r in got.restaurants] == ["r_tokyo"]
    assert ids(await search(http, "q=burito")) == ["r_tokyo"]
    assert ids(await search(http, "q=gyoza")) == []  # the old menu is gone


async def _order(http: Http, rid: str, item: str, key: str) -> None:
    body = {"restaurant_id": rid, "items": [{"item_id": item, "quantity": 1}],
            "delivery_address": {"street": "456 Mission St", "lat": HOME[0], "lon": HOME[1]},
            "payment_method_id": "pm_card_visa"}  # fmt: skip
    async with http.session.post("/api/v1/orders", json=body,
                                 headers={**CUSTOMER, "Idempotency-Key": key}) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()


async def _counts(http: Http) -> dict[str, str]:
    out = {}
    for r, _ in RESTAURANTS:
        async with http.session.get(f"/api/v1/restaurants/{r.restaurant_id}",
                                    headers=CUSTOMER) as resp:  # fmt: skip
            out[r.restaurant_id] = (await resp.json())["restaurant"]["order_count"]
    return out


async def _until(http: Http, want: dict[str, str]) -> None:
    for _ in range(300):  # the events go through the outbox and NATS: wait, don't time
        if await _counts(http) == want:
            return
        await asyncio.sleep(0.05)
    assert await _counts(http) == want


async def test_popularity_counts_real_orders_once_each(world: World) -> None:
    http = world.http
    before = await search(http, "sort=popularity")
    assert ids(before) == ["r_napoli", "r_tokyo", "r_luigi"]  # no orders: nearest first
    for k in range(3):
        await _order(http, "r_luigi", "m1", f"pop-l{k}")
    await _order(http, "r_tokyo", "t1", "pop-t0")
    await _order(http, "r_tokyo", "t1", "pop-t0")  # a retry: the same order
    await _until(http, {"r_luigi": "3", "r_tokyo": "1", "r_napoli": "0"})
    assert ids(await search(http, "sort=popularity")) == ["r_luigi", "r_tokyo", "r_napoli"]
    # A redelivered event counts once; an old order (three weeks back) counts for the
    # 30-day count but weighs less than a recent one in the ranking.
    nc = await open_nats(world.nats_url, name="test")
    try:
        subject = Subjects(world.namespace).subject(ORDER_EVENTS.subject("placed"))
        js = nc.jetstream()
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=21)
        for n in range(3):
            ev = order_pb2.OrderEvent(event_id=f"ev-old-{n}")
            ev.order.order_id, ev.order.restaurant_id = f"o-old-{n}", "r_napoli"
            ev.event_time.FromDatetime(old)
            for _ in range(2):
                await js.publish(subject, ev.SerializeToString())
    finally:
        await nc.close()
    await _until(http, {"r_luigi": "3", "r_tokyo": "1", "r_napoli": "3"})
    # Napoli: 3 orders three weeks ago (~0.15 now) < Tokyo's one today.
    assert ids(await search(http, "sort=popularity")) == ["r_luigi", "r_tokyo", "r_napoli"]
    # Past the 30-day window an order leaves the count (the service's hourly trim).
    async with AsyncConnectionPool(world.mesh.pg_url, min_size=1, max_size=1, open=False) as pool:
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE catalog.order_events SET placed_at = placed_at - interval '10 days'"
                " WHERE restaurant_id = 'r_napoli'"
            )
        trimmed = await CatalogStore(pool).trim_order_events()
    assert [(r.restaurant_id, r.order_count) for r in trimmed] == [("r_napoli", 0)]
    assert (await _counts(http))["r_napoli"] == "0"
