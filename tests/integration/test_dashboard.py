"""The ops dashboard against real services and real NATS events."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from dashboard import DashboardConfig, serve
from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import common_pb2, location_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._order import order_mesh


async def _until(get: object, check: object, within_s: float = 10.0) -> object:
    deadline = time.monotonic() + within_s
    while True:
        value = await get()  # type: ignore[operator]
        if check(value):  # type: ignore[operator]
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {within_s}s; last: {value!r}"[:2000])
        await asyncio.sleep(0.2)


async def test_the_dashboard_shows_drivers_orders_and_details(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    city = build_city(seed=7, restaurants=12, drivers=0, customers=2)
    async with order_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace, seed=False
    ) as mesh:
        await seed_city(city, catalog_target=mesh.catalog.target)
        config = DashboardConfig(
            port=0, nats_url=nats_url, namespace=namespace, roads="none", tick_s=0.2,
            health_every_s=0.2,
            targets={"catalog": mesh.catalog.target, "order": mesh.order.target},
        )  # fmt: skip
        # The dashboard needs an ops identity (issue 17): every request carries one.
        ops = {"Authorization": f"Bearer {mint_token(DEV_SECRET, subject='ops_1', role='ops')}"}
        async with serve(config) as (_, port), aiohttp.ClientSession(headers=ops) as http:
            base = f"http://127.0.0.1:{port}"

            async def snap() -> dict:  # type: ignore[type-arg]
                async with http.get(f"{base}/api/snapshot") as r:
                    assert r.status == 200
                    return await r.json()  # type: ignore[no-any-return]

            async with http.get(base + "/") as r:
                assert r.status == 200 and '<canvas id="map"' in await r.text()
            async with http.get(base + "/static/dashboard.js") as r:
                assert r.status == 200

            # every restaurant of the city, found through the Catalog's own search
            await _until(snap, lambda s: s["restaurant_count"] == 12)
            async with http.get(base + "/api/map") as r:
                m = await r.json()
            assert {x[0] for x in m["restaurants"]} == {x.restaurant_id for x in city.restaurants}
            await _until(snap, lambda s: s["health"] == {"catalog": "SERVING",
                                                         "order": "SERVING"})  # fmt: skip

            # a driver's fixes, as Location publishes them
            nc = await open_nats(nats_url, name="test")
            try:
                for i in range(3):
                    ev = location_pb2.DriverLocationEvent()
                    ev.position.driver_id = "drv_x"
                    ev.position.lat, ev.position.lon = CENTER[0] + i * 1e-4, CENTER[1]
                    ev.position.status = common_pb2.DRIVER_STATUS_AVAILABLE
                    await nc.publish(Subjects(namespace).subject("location.v1.driver.drv_x"),
                                     ev.SerializeToString())  # fmt: skip
                await nc.flush()
            finally:
                await nc.close()
            s = await _until(snap, lambda s: any(d[0] == "drv_x" for d in s["drivers"]))
            assert s["figures"]["drivers_online"] == 1  # type: ignore[index]
            async with http.get(base + "/api/drivers/drv_x/path") as r:
                assert len((await r.json())["points"]) == 3

            # an order placed through the Order service appears through its outbox events
            spec = city.restaurants[0]
            item = next(i for c in spec.menu for i in c.items if i.available)
            async with mesh.client("customer", city.customers[0].customer_id) as orders:
                placed = await orders.place_order(pb.PlaceOrderRequest(
                    idempotency_key="dash-1", restaurant_id=spec.restaurant_id,
                    items=[pb.OrderItemInput(item_id=item.item_id, quantity=3)],
                    delivery_address=city.customers[0].address, payment_method_id="pm_card_visa",
                ))  # fmt: skip
            oid = placed.order.order_id
            s = await _until(snap, lambda s: any(o[0] == oid for o in s["orders"]))
            assert s["figures"]["orders_last_min"] == 1  # type: ignore[index]
            async with http.get(f"{base}/api/orders/{oid}") as r:
                body = await r.json()
            assert r.status == 200 and body["order_id"] == oid
            assert body["timeline"][0]["status"] == "ORDER_STATUS_PLACED"
            async with http.get(f"{base}/api/orders/ord_nope") as r:
                assert r.status == 404

            # the live stream: a picture per tick
            async with http.get(base + "/api/stream") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
            assert b"event: picture" in first and oid.encode() in first
