"""Restaurants that hear about orders, and nothing left waiting: through the gateway,
against the real Catalog and Order services.

- a restaurant's live feed (SSE), resumed from Last-Event-ID, closed to other restaurants;
- auto-confirm set by the restaurant; an order nobody confirms cancelled and its hold
  voided, also when the service that wrote it stopped before the deadline came.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from tests.integration._gateway import Http, auth, gateway, sse_events
from tests.integration._order import Mesh, order_mesh

CUSTOMER = auth("customer", "cus_1")
KITCHEN = auth("restaurant", "rest_1")
PLACE: dict[str, Any] = {
    "restaurant_id": "rest_1",
    "items": [{"item_id": "margherita", "quantity": 1}, {"item_id": "salad", "quantity": 1}],
    "delivery_address": {"street": "456 Mission St", "city": "San Francisco",
                         "lat": 37.7749, "lon": -122.4194},
    "payment_method_id": "pm_card_visa",
}  # fmt: skip
FEED = "/api/v1/restaurants/rest_1/orders:watch"


@asynccontextmanager
async def world(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, **extra: str
) -> AsyncIterator[tuple[Http, Mesh]]:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   extra={"FOODMESH_ORDER_SWEEP_EVERY_S": "0.2",
                          "FOODMESH_ORDER_FEED_POLL_S": "0.1", **extra}) as mesh,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target}) as http,
    ):  # fmt: skip
        yield http, mesh


async def place(http: Http, key: str) -> dict[str, Any]:
    headers = {**CUSTOMER, "Idempotency-Key": key}
    async with http.session.post("/api/v1/orders", json=PLACE, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return dict(body["order"])


async def get_order(http: Http, order_id: str) -> dict[str, Any]:
    async with http.session.get(f"/api/v1/orders/{order_id}", headers=CUSTOMER) as resp:
        assert resp.status == 200
        return dict((await resp.json())["order"])


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def next_data(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    while True:
        ev = await asyncio.wait_for(anext(events), 10)
        if "data" in ev:
            return ev


async def test_a_restaurant_hears_its_orders_live_and_resumes_where_it_left(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with world(pg_url, redis_url, nats_url, namespace) as (http, _):
        sse = {**KITCHEN, "Accept": "text/event-stream"}
        # Another restaurant cannot listen in.
        other = {**auth("restaurant", "rest_2"), "Accept": "text/event-stream"}
        async with http.session.get(FEED, headers=other) as resp:
            assert resp.status == 403
        open_before = await place(http, "before")  # open when the tablet connects
        async with http.session.get(FEED, headers=sse) as resp:
            assert resp.status == 200
            events = sse_events(resp)
            first = await next_data(events)
            assert first["data"]["order"]["order_id"] == open_before["order_id"]
            assert "change" not in first["data"]  # a snapshot of an open order
            snapshot_id = first["id"]
            placed = await place(http, "live")
            got = await next_data(events)
            assert got["data"]["event"] == "placed"
            assert got["data"]["order"]["order_id"] == placed["order_id"]
            assert got["data"]["change"]["status"] == "ORDER_STATUS_PLACED"
            assert got["data"]["order"].get("delivery_pin", "") == ""  # the customer's only
            assert int(got["id"]) == int(snapshot_id) + 1
            placed_id = got["id"]
            async with http.session.post(f"/api/v1/orders/{placed['order_id']}/status",
                                         json={"status": "ORDER_STATUS_CONFIRMED"},
                                         headers=KITCHEN) as step:  # fmt: skip
                assert step.status == 200
            confirmed = await next_data(events)
            assert confirmed["data"]["event"] == "confirmed"
            assert int(confirmed["id"]) == int(placed_id) + 1
        # The tablet reconnects: it gets what followed the last event it saw, nothing else.
        async with http.session.get(FEED, headers={**sse, "Last-Event-ID": placed_id}) as resp:
            again = await next_data(sse_events(resp))
            assert again["id"] == confirmed["id"]
            assert again["data"]["change"]["status"] == "ORDER_STATUS_CONFIRMED"


async def test_auto_confirm_confirms_new_orders_for_the_restaurant(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with world(pg_url, redis_url, nats_url, namespace) as (http, _):
        url = "/api/v1/restaurants/rest_1/order-settings"
        body = {"restaurant_id": "rest_1", "auto_confirm": True}
        async with http.session.put(url, json=body, headers=auth("restaurant", "rest_2")) as r:
            assert r.status == 403  # not its own
        async with http.session.put(url, json={**body, "confirm_timeout_seconds": 99999},
                                    headers=KITCHEN) as r:  # fmt: skip
            assert r.status == 400
        async with http.session.put(url, json=body, headers=KITCHEN) as r:
            assert r.status == 200, await r.text()
        async with http.session.get(url, headers=KITCHEN) as r:
            assert (await r.json())["settings"]["auto_confirm"] is True
        placed = await place(http, "auto")

        async def confirmed() -> bool:
            o = await get_order(http, placed["order_id"])
            return bool(o["status"] == "ORDER_STATUS_CONFIRMED")

        await until(confirmed)
        o = await get_order(http, placed["order_id"])
        assert [(e["status"], e["actor"]) for e in o["timeline"]] == [
            ("ORDER_STATUS_PLACED", "cus_1"),
            ("ORDER_STATUS_CONFIRMED", "auto-confirm"),
        ]


async def test_an_order_nobody_confirms_is_cancelled_and_its_hold_voided_across_a_restart(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    # Written by a service that stops before the deadline: the next one (another
    # process, a replica) finds the deadline in PostgreSQL and keeps it.
    async with world(pg_url, redis_url, nats_url, namespace,
                     FOODMESH_ORDER_CONFIRM_TIMEOUT_S="2") as (http, _):  # fmt: skip
        placed = await place(http, "forgotten")
    async with world(pg_url, redis_url, nats_url, namespace,
                     FOODMESH_ORDER_CONFIRM_TIMEOUT_S="2") as (http, _):  # fmt: skip
        order_id = placed["order_id"]

        async def cancelled() -> bool:
            o = await get_order(http, order_id)
            return bool(o["status"] == "ORDER_STATUS_CANCELLED"
                        and o["payment_status"] == "PAYMENT_STATUS_VOIDED")  # fmt: skip

        await until(cancelled)
        o = await get_order(http, order_id)
        assert o["cancellation_reason"].startswith("confirm_timeout:")
        last = o["timeline"][-1]
        assert last["reason"] == "the restaurant did not confirm the order within 2 s (full refund)"
        assert o["refunded"]["amount_minor"] == o["pricing"]["total"]["amount_minor"]
        # Too late for the kitchen now.
        async with http.session.post(f"/api/v1/orders/{order_id}/status",
                                     json={"status": "ORDER_STATUS_CONFIRMED"},
                                     headers=KITCHEN) as step:  # fmt: skip
            assert step.status == 400 or step.status == 409 or step.status == 412
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM orders.confirm_deadlines")
            assert await cur.fetchone() == (0,)
            cur = await conn.execute(
                "SELECT event_id FROM orders.outbox WHERE subject LIKE '%%orders.v1.cancelled'"
            )
            assert [r[0] for r in await cur.fetchall()] == [f"{order_id}.2"]
