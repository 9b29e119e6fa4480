"""No driver found, and a driver lost after pickup: through the gateway, against real
Catalog, Order, Location and Dispatch services (limits in seconds, not minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import REST, Driver, confirmed_order, dispatch_mesh, upsert
from tests.integration._gateway import Http, auth, gateway

pytestmark = pytest.mark.timeout(120)
CUSTOMER = auth("customer", "cust_1")
OPS = auth("ops", "ops_1")


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def order_of(http: Http, order_id: str) -> dict[str, Any]:
    async with http.session.get(f"/api/v1/orders/{order_id}", headers=CUSTOMER) as resp:
        assert resp.status == 200
        return dict((await resp.json())["order"])


async def alert_of(http: Http, order_id: str) -> str:
    return str((await order_of(http, order_id)).get("alert", {}).get("kind", ""))


async def outbox_events(pg_url: str, order_id: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT subject FROM orders.outbox WHERE event_id LIKE %s ORDER BY id",
            (order_id + ".%",),
        )
        return [r[0].rsplit(".", 1)[-1] for r in await cur.fetchall()]


async def test_an_order_nobody_takes_is_escalated_and_may_then_be_cancelled_free(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
        state_dir=tmp_path,
        extra={"FOODMESH_DISPATCH_NO_DRIVER_AFTER_S": "1",
               "FOODMESH_DISPATCH_FREE_CANCEL_AFTER_S": "3",
               "FOODMESH_DISPATCH_ESCALATION_EVERY_S": "0.2"},
    ) as mesh, gateway({"order": mesh.orders.order.target}) as http:  # fmt: skip
        oid = await confirmed_order(mesh, "k-nobody")  # no driver is online
        async with mesh.order_client("restaurant", "rest_1") as r:
            await r.update_order_status(opb.UpdateOrderStatusRequest(
                order_id=oid, status=common_pb2.ORDER_STATUS_PREPARING))  # fmt: skip

        async def escalated() -> bool:
            return await alert_of(http, oid) == "ORDER_ALERT_KIND_NO_DRIVER"

        await until(escalated)
        o = await order_of(http, oid)
        # The customer's tracking says so, with the bonus drivers are offered.
        assert "no driver took the order" in o["timeline"][-1]["reason"]
        assert o["status"] == "ORDER_STATUS_PREPARING"  # no status changes for it
        assert int(o["alert"]["driver_bonus"]["amount_minor"]) > 0
        async with mesh.client() as ops:
            a = (await ops.get_assignment(dpb.GetAssignmentRequest(order_id=oid))).assignment
        assert a.status == dpb.ASSIGNMENT_STATUS_ESCALATED
        assert "no_driver" in await outbox_events(pg_url, oid)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT radius_miles FROM fleet.assignments WHERE order_id = %s", (oid,)
            )
            assert await cur.fetchone() == (15.0,)  # searched wider
            cur = await conn.execute(
                "SELECT count(*) FROM fleet.outbox WHERE subject LIKE '%%dispatch.v1.escalated'"
            )
            assert await cur.fetchone() == (1,)  # ops are alerted once

        # After the longer limit the customer may cancel free of charge, even mid-cooking
        # (which otherwise keeps half the food).
        free_at = dt.datetime.fromisoformat(o["free_cancel_after"].replace("Z", "+00:00"))
        await asyncio.sleep(max(0.0, (free_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        async with http.session.post(f"/api/v1/orders/{oid}:cancel", headers=CUSTOMER,
                                     json={"reason": "still no driver"}) as resp:  # fmt: skip
            body = await resp.json()
            assert resp.status == 200, body
        done = body["order"]
        assert done["status"] == "ORDER_STATUS_CANCELLED"
        assert done["timeline"][-1]["reason"].endswith("(no driver found: free cancellation)")
        assert done["refunded"]["amount_minor"] == done["pricing"]["total"]["amount_minor"]


class KeepAlive:
    """A driver's app sending a fix every 0.2 s, until stopped (the driver goes silent).

    Stopping sets a flag the loop checks as well as cancelling it: on Python 3.11 a
    cancellation can be swallowed by a ``wait_for`` finishing at that moment
    (gh-86296), and a bare ``cancel(); await task`` then waits on a loop that beats on
    forever (a CI run hung here for its whole 120 s).
    """

    def __init__(self, driver: Driver, at: tuple[float, float]) -> None:
        self.driver = driver
        self.at = at
        self.task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._stopped = False

        async def beat() -> None:
            while not self._stopped:
                await self.driver.at(*self.at)
                await asyncio.sleep(0.2)

        self.task = asyncio.create_task(beat())

    async def stop(self) -> None:
        self._stopped = True
        await stop_tasks([self.task], timeout_s=10)
        self.task = None


@contextlib.asynccontextmanager
async def beating(driver: Driver, at: tuple[float, float]) -> AsyncIterator[KeepAlive]:
    k = KeepAlive(driver, at)
    k.start()
    try:
        yield k
    finally:
        await k.stop()


async def test_a_driver_lost_after_pickup_alerts_comes_back_and_ops_may_refund(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
        state_dir=tmp_path, location_extra={"FOODMESH_LOCATION_PRESENCE_TIMEOUT_S": "2"},
        order_extra={"FOODMESH_ORDER_LOST_RESOLVE_AFTER_S": "1.5"},
    ) as mesh, gateway({"order": mesh.orders.order.target}) as http:  # fmt: skip
        await upsert(mesh, "drv_l")
        spot = (REST[0] + 0.002, REST[1])
        async with Driver(mesh, "drv_l") as d, beating(d, spot) as beat:
            await asyncio.sleep(0.3)
            await d.open_session()
            oid = await confirmed_order(mesh, "k-lost")
            offer = (await d.expect("offer", within=10)).offer
            await d.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await d.expect("assignment_confirmed")
            await d.act(2, picked_up=dpb.OrderProgress(order_id=oid))

            async def in_transit() -> bool:
                return (await order_of(http, oid))["status"] == "ORDER_STATUS_IN_TRANSIT"

            await until(in_transit)
            # Silence: presence marks the driver offline; the order is at risk.
            await beat.stop()

            async def lost() -> bool:
                return await alert_of(http, oid) == "ORDER_ALERT_KIND_DRIVER_LOST"

            await until(lost)
            o = await order_of(http, oid)
            assert o["alert"]["driver_id"] == "drv_l"
            assert o["alert"]["last_known_location"]["lat"] == pytest.approx(spot[0])
            assert o["timeline"][-1]["reason"].startswith("we lost contact with your driver")
            # Back: the delivery continues.
            beat.start()

            async def back() -> bool:
                return await alert_of(http, oid) == ""

            await until(back)
            o = await order_of(http, oid)
            assert o["timeline"][-1]["reason"] == "your driver is back: the delivery continues"
            assert o["status"] == "ORDER_STATUS_IN_TRANSIT" and o["driver_id"] == "drv_l"
            # Lost again, for good: ops refund the customer.
            await beat.stop()
            await until(lost)
            url = f"/api/v1/orders/{oid}:resolveLostDelivery"
            body = {"action": "LOST_DELIVERY_ACTION_REFUND", "reason": "driver unreachable"}
            async with http.session.post(url, json=body, headers=CUSTOMER) as resp:
                assert resp.status == 403  # ops only
            # A moment's silence is not a lost delivery yet: the driver may come back.
            async with http.session.post(url, json=body, headers=OPS) as resp:
                early = await resp.json()
                assert resp.status in (400, 412), early
                assert "they may come back" in early["message"]
            await asyncio.sleep(1.6)
            async with http.session.post(url, json=body, headers=OPS) as resp:
                got = await resp.json()
                assert resp.status == 200, got
            done = got["order"]
            assert done["status"] == "ORDER_STATUS_CANCELLED"
            assert done["payment_status"] == "PAYMENT_STATUS_VOIDED"
            assert done["cancellation_reason"] == "driver_lost: driver unreachable"
        events = await outbox_events(pg_url, oid)
        assert events.count("driver_lost") == 2 and events.count("driver_back") == 1
        assert events[-1] == "cancelled"


async def test_ops_take_a_lost_delivery_from_its_driver_and_another_driver_brings_it(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
        state_dir=tmp_path, location_extra={"FOODMESH_LOCATION_PRESENCE_TIMEOUT_S": "2"},
        order_extra={"FOODMESH_ORDER_LOST_RESOLVE_AFTER_S": "0"},
    ) as mesh, gateway({"order": mesh.orders.order.target}) as http:  # fmt: skip
        for d in ("drv_a", "drv_b"):
            await upsert(mesh, d)
        near, far = (REST[0] + 0.002, REST[1]), (REST[0] + 0.02, REST[1])
        async with (
            Driver(mesh, "drv_a") as a, Driver(mesh, "drv_b") as b,
            beating(a, near) as beat_a, beating(b, far),
        ):  # fmt: skip
            await asyncio.sleep(0.3)
            await a.open_session()
            await b.open_session()
            oid = await confirmed_order(mesh, "k-reassign")
            offer = (await a.expect("offer", within=10)).offer
            await a.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await a.expect("assignment_confirmed")
            await a.act(2, picked_up=dpb.OrderProgress(order_id=oid))

            async def in_transit_with(driver: str) -> bool:
                o = await order_of(http, oid)
                return bool(o["status"] == "ORDER_STATUS_IN_TRANSIT" and o["driver_id"] == driver)

            await until(lambda: in_transit_with("drv_a"))
            await beat_a.stop()

            async def lost() -> bool:
                return await alert_of(http, oid) == "ORDER_ALERT_KIND_DRIVER_LOST"

            await until(lost)
            url = f"/api/v1/orders/{oid}:resolveLostDelivery"
            body = {"action": "LOST_DELIVERY_ACTION_REASSIGN"}
            async with http.session.post(url, json=body, headers=OPS) as resp:
                got = await resp.json()
                assert resp.status == 200, got
            o = got["order"]
            assert o["status"] == "ORDER_STATUS_PREPARING" and not o.get("driver_id")
            assert "alert" not in o
            # Dispatch offers it to the other driver, who picks up the new batch.
            offer = (await b.expect("offer", within=15)).offer
            assert offer.order_id == oid
            await b.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await b.expect("assignment_confirmed")
            await b.act(2, picked_up=dpb.OrderProgress(order_id=oid))
            await until(lambda: in_transit_with("drv_b"))
        assert "lost_reassigned" in await outbox_events(pg_url, oid)
