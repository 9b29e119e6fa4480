"""The customer web page in headless Chromium: search, menu, order, and watch it move;
save a wallet and pay with it; rate the restaurant, its food and the driver apart.

Only the public HTTP API (the gateway) is used by the page, as a mobile app would.
First with real Catalog and Order services behind it, the restaurant's steps played by
the test through the Order service, as a restaurant's tablet would; then on the whole
platform (Location and Dispatch too) with the simulated city's kitchens and drivers,
who cook and deliver the order the page placed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg
import pytest

from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.sim.agents import SimConfig
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.run import run_sim
from foodmesh.sim.seed import seed_city
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.e2e._browser import ARTIFACTS, browser_page
from tests.integration._gateway import gateway
from tests.integration._order import order_mesh
from tests.integration._platform import platform, small_city


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
            # the search at the design's point lists restaurants nearest first
            await page.wait_for_selector("#results li[data-i]", timeout=10_000)  # type: ignore[attr-defined]
            # the customer saves an Apple Pay wallet: listed, the default, chosen at checkout
            await page.click("#wallet-box summary")  # type: ignore[attr-defined]
            await page.select_option("#new-method", "pm_wallet_apple_pay")  # type: ignore[attr-defined]
            await page.click("#add-method")  # type: ignore[attr-defined]
            await page.wait_for_selector('#methods li:has-text("Apple Pay")', timeout=10_000)  # type: ignore[attr-defined]
            assert "(default)" in await page.inner_text("#methods")  # type: ignore[attr-defined]
            wallet = await page.get_attribute("#methods li[data-pm]", "data-pm")  # type: ignore[attr-defined]
            assert await page.input_value("#card") == wallet  # type: ignore[attr-defined]
            first = city.restaurants[0]
            # search by dish: a few letters typed, the dish suggested, chosen; every
            # restaurant listed then has it, the first restaurant among them
            dish = next(i for c in first.menu for i in c.items if i.available).name
            await page.fill("#q", dish[:5].lower())  # type: ignore[attr-defined]
            choice = f'#suggestions li[data-text="{dish}"]'
            await page.wait_for_selector(choice, timeout=10_000)  # type: ignore[attr-defined]
            await page.click(choice)  # type: ignore[attr-defined]
            await page.wait_for_selector(  # type: ignore[attr-defined]
                f'#results li:has-text("{first.restaurant.name}") .dishes', timeout=10_000
            )
            listed = await page.locator("#results li[data-i]").all_inner_texts()  # type: ignore[attr-defined]
            assert listed and all(f"has {dish}" in t for t in listed), listed
            await page.click(f'#results li:has-text("{first.restaurant.name}")')  # type: ignore[attr-defined]
            # the restaurant's page shows its rating and its food's rating apart
            await page.wait_for_function(  # type: ignore[attr-defined]
                "() => document.getElementById('menu-rating').textContent.includes('Food')",
                timeout=10_000,
            )
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
            paid = await page.inner_text("#paid")  # type: ignore[attr-defined]
            assert paid == "Paid with Apple Pay · Visa •••• 4242", paid

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
            # ... ops carry it to the door; the delivered order is rated on the page: the
            # restaurant, its food and (skipped) the driver, each apart
            async with mesh.client("ops", "ops_1") as ops:
                for s in (common_pb2.ORDER_STATUS_READY_FOR_PICKUP,
                          common_pb2.ORDER_STATUS_PICKED_UP, common_pb2.ORDER_STATUS_IN_TRANSIT,
                          common_pb2.ORDER_STATUS_DELIVERED):  # fmt: skip
                    await ops.update_order_status(
                        pb.UpdateOrderStatusRequest(order_id=order_id, status=s)
                    )
            await page.wait_for_selector("#rate-box:not([hidden])", timeout=10_000)  # type: ignore[attr-defined]
            await page.select_option("#rate-restaurant", "4")  # type: ignore[attr-defined]
            await page.select_option("#rate-food", "2")  # type: ignore[attr-defined]
            await page.fill("#rate-comment", "friendly, but the food was cold")  # type: ignore[attr-defined]
            await page.click("#rate")  # type: ignore[attr-defined]
            await page.wait_for_function(  # type: ignore[attr-defined]
                "() => document.getElementById('rated').textContent.includes('Food')",
                timeout=10_000,
            )
            rated = await page.inner_text("#rated")  # type: ignore[attr-defined]
            assert "Restaurant ★ 4.0 (1)" in rated and "Food ★ 2.0 (1)" in rated, rated
            assert await page.is_hidden("#rate-box")  # type: ignore[attr-defined]
            await page.screenshot(path=str(ARTIFACTS / "customer-rated.png"))  # type: ignore[attr-defined]
            assert errors == []
        # the order exists, priced from the menu, not from the page
        async with mesh.client("customer", customer) as orders:
            got = await orders.get_order(pb.GetOrderRequest(order_id=order_id))
        item = next(i for c in first.menu for i in c.items if i.available)
        assert got.order.pricing.subtotal.amount_minor == 3 * item.price.amount_minor
        # ... and paid with the saved wallet, as the processor recorded it
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute("SELECT payment_method, status FROM orders.sandbox_payments"
                                     " WHERE reference = %s", (order_id,))  # fmt: skip
            assert await cur.fetchone() == (wallet, "captured")


async def test_a_customer_orders_on_the_web_page_and_simulated_drivers_deliver_it(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    city = small_city()
    person = city.customers[0]
    async with (
        platform(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                 state_dir=tmp_path, with_dispatch=True, city=city) as p,
        browser_page(width=1200, height=900) as page,
    ):  # fmt: skip
        # The city lives (kitchens, drivers on their streams); nobody simulated orders.
        config = SimConfig(
            gateway=p.gateway, location_target=p.location, dispatch_target=p.dispatch, seed=11,
            orders_per_hour=0.0, flat_demand=True, duration_s=0.0, shifts=False, ramp_s=1.0,
            prep_scale=0.005, travel_scale=0.005, stop_s=60.0, roads=False, silent_share=0.0,
            declined_share=0.0, bad_share=0.0, progress_every_s=5.0,
        )  # fmt: skip
        stop = asyncio.Event()
        sim = asyncio.create_task(run_sim(config, city=city, stop=stop))
        try:
            token = mint_token(DEV_SECRET, subject=person.customer_id, role="customer")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))  # type: ignore[attr-defined]
            where = f"lat={person.address.lat}&lon={person.address.lon}"
            await page.goto(f"{p.gateway}/app/#token={token}&{where}")  # type: ignore[attr-defined]
            await page.wait_for_selector("#results li[data-i]", timeout=10_000)  # type: ignore[attr-defined]
            results = page.locator("#results li[data-i]")  # type: ignore[attr-defined]
            # the nearest restaurant that takes the order (open, delivering here)
            for i in range(min(await results.count(), 6)):
                await results.nth(i).click()
                await page.wait_for_selector("#menu button[data-item]", timeout=10_000)  # type: ignore[attr-defined]
                buttons = page.locator("#menu button[data-item]")  # type: ignore[attr-defined]
                for _ in range(4):
                    await buttons.first.click()
                await page.click("#place")  # type: ignore[attr-defined]
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "() => document.getElementById('order-id').textContent.startsWith('ord_')"
                    " || document.getElementById('error').textContent !== ''",
                    timeout=10_000,
                )
                if (await page.inner_text("#order-id")).startswith("ord_"):  # type: ignore[attr-defined]
                    break
                await page.evaluate("() => { document.getElementById('error').textContent = ''; }")  # type: ignore[attr-defined]
            order_id = await page.inner_text("#order-id")  # type: ignore[attr-defined]
            assert order_id.startswith("ord_"), await page.inner_text("#error")  # type: ignore[attr-defined]
            # the customer sees the PIN to tell the driver (the simulated one reads it too)
            pin = (await page.inner_text("#pin")).strip()  # type: ignore[attr-defined]
            assert len(pin) == 4 and pin.isdigit(), pin
            # a simulated driver takes it: the page shows who is coming ...
            await page.wait_for_function(  # type: ignore[attr-defined]
                "() => document.getElementById('driver').textContent.includes('drv_') ||"
                " document.getElementById('driver').textContent.includes('★')",
                timeout=60_000,
            )
            # ... and, the food cooked by the simulated kitchen, delivers it
            await page.wait_for_function(  # type: ignore[attr-defined]
                "() => document.getElementById('status').textContent === 'delivered'",
                timeout=90_000,
            )
            timeline = await page.inner_text("#timeline")  # type: ignore[attr-defined]
            for step in ("confirmed", "ready for pickup", "picked up", "delivered"):
                assert step in timeline, timeline
            assert "driver drv_" in timeline, timeline  # why an entry repeats a status
            await page.screenshot(path=str(ARTIFACTS / "customer-delivered.png"))  # type: ignore[attr-defined]
            assert errors == []
        finally:
            stop.set()
            result = await sim
    assert result.stats.counts["adopted"] == 1, result.stats.as_json()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            and r.name.startswith(("foodmesh.errors", "foodmesh.gateway"))] == []  # fmt: skip
