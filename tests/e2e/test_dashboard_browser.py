"""The ops dashboard in a real headless Chromium: the map draws, drivers move, orders show.

Real Catalog, Order and Location services; two drivers stream fixes through Location
(which publishes them on NATS, as in production); a customer orders through Order.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from dashboard import DashboardConfig, serve
from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import order_pb2 as pb
from tests.e2e._browser import ARTIFACTS, browser_page
from tests.integration._location import DriverApp, fix, location_service
from tests.integration._order import order_mesh


async def _drive(app: DriverApp, start: tuple[float, float], stop: asyncio.Event) -> None:
    lat, lon = start
    while not stop.is_set():
        lat += 0.0004
        await app.send(fix(lat, lon))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                await stop.wait()


async def test_the_dashboard_draws_moving_drivers_and_orders(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    city = build_city(seed=7, restaurants=10, drivers=0, customers=2)
    common = dict(redis_url=redis_url, nats_url=nats_url, namespace=namespace)
    async with (
        order_mesh(pg_url=pg_url, seed=False, **common) as mesh,  # type: ignore[arg-type]
        location_service(pg_url=pg_url, state_dir=tmp_path, **common) as loc,  # type: ignore[arg-type]
    ):
        await seed_city(city, catalog_target=mesh.catalog.target)
        config = DashboardConfig(
            port=0, nats_url=nats_url, namespace=namespace, roads="", tick_s=0.3,
            health_every_s=0.5,
            targets={"catalog": mesh.catalog.target, "order": mesh.order.target,
                     "location": loc.target},
        )  # fmt: skip
        stop = asyncio.Event()
        async with (
            serve(config) as (_, port),
            DriverApp(loc.target, "drv_a") as a,
            DriverApp(loc.target, "drv_b") as b,
            browser_page() as page,
        ):
            east = (CENTER[0], CENTER[1] + 0.01)
            drivers = [asyncio.create_task(_drive(a, CENTER, stop)),
                       asyncio.create_task(_drive(b, east, stop))]  # fmt: skip
            try:
                spec = city.restaurants[0]
                item = next(i for c in spec.menu for i in c.items if i.available)
                async with mesh.client("customer", city.customers[0].customer_id) as orders:
                    await orders.place_order(pb.PlaceOrderRequest(
                        idempotency_key="browser-1", restaurant_id=spec.restaurant_id,
                        items=[pb.OrderItemInput(item_id=item.item_id, quantity=3)],
                        delivery_address=city.customers[0].address,
                        payment_method_id="pm_card_visa",
                    ))  # fmt: skip
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))  # type: ignore[attr-defined]
                # Logged in as ops the way `foodmesh up`'s link does it: #token= on the page,
                # which the login page turns into the session cookie (issue 17).
                ops = mint_token(DEV_SECRET, subject="ops_1", role="ops")
                await page.goto(f"http://127.0.0.1:{port}/#token={ops}")  # type: ignore[attr-defined]
                # (a selector wait outlives the login page's navigation to the map)
                await page.wait_for_selector("#map", timeout=15_000)  # type: ignore[attr-defined]
                # the live picture arrives and shows both drivers and the order
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => typeof picture !== 'undefined' && picture && "
                    "picture.drivers.length === 2 && picture.orders.length === 1",
                    timeout=15_000,
                )
                first = await page.evaluate(  # type: ignore[attr-defined]
                    "() => picture.drivers.map(d => d[1]).join(',')"
                )
                await page.wait_for_function(  # type: ignore[attr-defined]
                    f"() => picture.drivers.map(d => d[1]).join(',') !== '{first}'",
                    timeout=10_000,
                )  # they move
                online = await page.inner_text("[data-figure=drivers_online] b")  # type: ignore[attr-defined]
                assert online == "2"
                health = await page.inner_text("#health")  # type: ignore[attr-defined]
                assert "SERVING" in health
                # the map has roads drawn (the default city) and restaurants
                roads = await page.evaluate("() => Object.keys(map.roads).length")  # type: ignore[attr-defined]
                assert roads >= 1
                # restaurants come from the Catalog once an ops viewer's token lets the
                # dashboard ask (a reload of the map follows): wait for them, do not race
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => map.restaurants.length === 10", timeout=15_000
                )
                # clicking the order line opens its timeline
                await page.evaluate(  # type: ignore[attr-defined]
                    "() => showDetails({kind: 'order', id: picture.orders[0][0]})"
                )
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => document.getElementById('details').innerText.includes('placed')",
                    timeout=5_000,
                )
                # the demand panel: without Pricing here it says so; given a forecast (as the
                # dashboard's board shapes it) it draws each cell's row and sparkline
                panel = await page.inner_text("#forecast")  # type: ignore[attr-defined]
                assert "no forecast yet" in panel
                await page.evaluate(  # type: ignore[attr-defined]
                    "() => renderForecast({model: 'xgboost', cells: [['9q8yy', 11, 10.0, 13.0, "
                    "10, 17, 9.0, 3, 'high', [[4, null], [6, null], [11, 10.0]]]]})"
                )
                row = await page.inner_text("#forecast tr[data-cell='9q8yy']")  # type: ignore[attr-defined]
                assert "11" in row and "10" in row and "13" in row and "high" in row
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))  # type: ignore[attr-defined]
                assert errors == []
            finally:
                stop.set()
                await asyncio.gather(*drivers, return_exceptions=True)
