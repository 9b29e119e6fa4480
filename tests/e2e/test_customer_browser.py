"""The customer web page in headless Chromium: search, menu, order, and watch it move.

Only the public HTTP API (the gateway) is used by the page, as a mobile app would;
real Catalog and Order services behind it; the restaurant's steps are played by the
test through the Order service, as a restaurant's tablet would.
"""

from __future__ import annotations

from foodmesh.auth import DEV_SECRET, mint_token
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.e2e._browser import ARTIFACTS, browser_page
from tests.integration._gateway import gateway
from tests.integration._order import order_mesh


async def test_a_customer_orders_on_the_web_page_and_watches_it_progress(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    city = build_city(seed=7, restaurants=8, drivers=0, customers=1)
    async with order_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace, seed=False
    ) as mesh:
        await seed_city(city, catalog_target=mesh.catalog.target)
        targets = {"catalog": mesh.catalog.target, "order": mesh.order.target}
        async with gateway(targets) as http, browser_page(width=1200, height=900) as page:
            customer = city.customers[0].customer_id
            token = mint_token(DEV_SECRET, subject=customer, role="customer")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))  # type: ignore[attr-defined]
            url = f"{http.base}/app/#token={token}&lat={CENTER[0]}&lon={CENTER[1]}"
            await page.goto(url)  # type: ignore[attr-defined]
            # the search at the seed's point lists restaurants nearest first
            await page.wait_for_selector("#results li[data-i]", timeout=10_000)  # type: ignore[attr-defined]
            first = city.restaurants[0]
            await page.click(f'#results li:has-text("{first.restaurant.name}")')  # type: ignore[attr-defined]
            await page.wait_for_selector("#menu button[data-item]", timeout=10_000)  # type: ignore[attr-defined]
            buttons = page.locator("#menu button[data-item]")  # type: ignore[attr-defined]
            for _ in range(3):  # three of the first item: above any minimum order
                await buttons.first.click()
            await page.click("#place")  # type: ignore[attr-defined]
            await page.wait_for_function(  # type: ignore[attr-defined]
                "() => document.getElementById('order-id').textContent.startsWith('ord_')",
                timeout=10_000,
            )
            order_id = await page.inner_text("#order-id")  # type: ignore[attr-defined]
            assert (await page.inner_text("#status")).strip() == "placed"  # type: ignore[attr-defined]

            # the restaurant confirms; the page hears it over the watch stream (SSE)
            async with mesh.client("restaurant", first.restaurant_id) as kitchen:
                await kitchen.update_order_status(pb.UpdateOrderStatusRequest(
                    order_id=order_id, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => document.getElementById('status').textContent === 'confirmed'",
                    timeout=10_000,
                )
                await kitchen.update_order_status(pb.UpdateOrderStatusRequest(
                    order_id=order_id, status=common_pb2.ORDER_STATUS_PREPARING))  # fmt: skip
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => document.getElementById('status').textContent === 'preparing'",
                    timeout=10_000,
                )
            timeline = await page.inner_text("#timeline")  # type: ignore[attr-defined]
            assert "confirmed" in timeline and "preparing" in timeline
            await page.screenshot(path=str(ARTIFACTS / "customer.png"))  # type: ignore[attr-defined]
            assert errors == []
        # the order exists, priced from the menu, not from the page
        async with mesh.client("customer", customer) as orders:
            got = await orders.get_order(pb.GetOrderRequest(order_id=order_id))
        item = next(i for c in first.menu for i in c.items if i.available)
        assert got.order.pricing.subtotal.amount_minor == 3 * item.price.amount_minor
