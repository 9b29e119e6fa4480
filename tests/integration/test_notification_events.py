"""Who gets what, from the events the owning services publish: real Catalog, Order,
Location and Dispatch services feeding the real Notification service over JetStream.

- Order: the restaurant warned at 80 % of its confirmation timeout (then the order is
  cancelled); the customer told when a stage's estimate slips more than 10 min past the
  promise (the kitchen's listed prep time went up before it confirmed).
- Dispatch: the customer told nobody took the order yet (escalated), who took it, and that
  the driver is arriving (their live fix under 3 min from the door); a driver who lost the
  order before pickup told it was reassigned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import psycopg
import pytest

from clients import CatalogClient, NotificationClient
from foodmesh.core.events import LOCATION
from foodmesh.core.nats import Subjects, ensure_stream
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2, location_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import notification_pb2 as pb
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import REST, Driver, confirmed_order, dispatch_mesh, upsert
from tests.integration._notification import notify_mesh
from tests.integration._order import HOME, clients, order_mesh, place_request, restaurant, token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

#: About 1.45 km from the customer: 1450 m x 1.35 / 6.9 m/s is 4.7 min away by car.
FAR = (37.7650, -122.4300)
#: About 110 m from the customer's door.
CLOSE = (HOME.lat + 0.001, HOME.lon)


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.1)


async def inbox(c: NotificationClient) -> list[pb.Notification]:
    """Everything in a recipient's inbox, oldest first."""
    page = await c.list_notifications(pb.ListNotificationsRequest(page_size=100))
    return sorted(page.notifications, key=lambda n: n.create_time.ToNanoseconds())


async def kinds(c: NotificationClient, order_id: str) -> list[str]:
    return [n.event_type for n in await inbox(c) if n.order_id == order_id]


async def outbox(pg_url: str, schema: str, like: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT event_id FROM {schema}.outbox WHERE subject LIKE %s ORDER BY id", (like,)
        )
        return [r[0] for r in await cur.fetchall()]


async def test_a_restaurant_is_warned_before_its_deadline_and_a_customer_of_a_late_estimate(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   extra={"FOODMESH_ORDER_CONFIRM_TIMEOUT_S": "4",
                          "FOODMESH_ORDER_SWEEP_EVERY_S": "0.1",
                          "FOODMESH_ORDER_CATALOG_CACHE_S": "0"}) as mesh,
        notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace, tmp=tmp_path,
                    extra={"FOODMESH_NOTIFICATION_ORDER_TARGET": mesh.order.target}) as m,
        clients(mesh, ("customer", "cust_1"), ("restaurant", "rest_1")) as (me, kitchen),
        m.client("restaurant", "rest_1") as r_inbox,
        m.client("customer", "cust_1") as c_inbox,
    ):  # fmt: skip
        forgotten = (await me.place_order(place_request("forgotten"))).order
        late = (await me.place_order(place_request("late"))).order
        # The kitchen is slower than it said at placement (18 min): now 50.
        async with CatalogClient(mesh.catalog.target, options=token("ops", "ops")) as ops:
            slow = restaurant()
            slow.avg_prep_time_min = 50
            await ops.upsert_restaurant(cpb.UpsertRestaurantRequest(restaurant=slow))
        await kitchen.update_order_status(opb.UpdateOrderStatusRequest(
            order_id=late.order_id, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip

        async def told_late() -> bool:
            return "delayed" in await kinds(c_inbox, late.order_id)

        await until(told_late, "the customer told the order is late")
        notice = next(n for n in await inbox(c_inbox)
                      if n.order_id == late.order_id and n.event_type == "delayed")  # fmt: skip
        assert "later than promised" in notice.body
        slipped = (await me.get_order(opb.GetOrderRequest(order_id=late.order_id))).order
        promised = late.estimated_delivery_time.ToSeconds()
        assert slipped.estimated_delivery_time.ToSeconds() - promised > 600  # shown too

        async def cancelled() -> bool:
            return "order_cancelled" in await kinds(r_inbox, forgotten.order_id)

        await until(cancelled, "the unconfirmed order cancelled")
        # Warned first (at 80 % of 4 s), then cancelled: each once; the confirmed order is
        # not warned.
        assert await kinds(r_inbox, forgotten.order_id) == [
            "new_order", "confirm_due_soon", "order_cancelled"]  # fmt: skip
        assert await kinds(r_inbox, late.order_id) == ["new_order"]
        warn = next(n for n in await inbox(r_inbox) if n.event_type == "confirm_due_soon")
        assert "or it is cancelled" in warn.body
        assert await outbox(pg_url, "orders", "%orders.v1.confirm_due_soon") == [
            f"{forgotten.order_id}.confirm_due_soon"]  # fmt: skip
        assert await outbox(pg_url, "orders", "%orders.v1.delayed") == [
            f"{late.order_id}.delayed"]  # fmt: skip


async def _presence_offline(nats_url: str, namespace: str, driver_id: str, order_id: str) -> None:
    """Location's presence says the driver went silent (as its sweep does after 30 s)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subjects = Subjects(namespace)
        await ensure_stream(js, LOCATION.config(subjects))
        ev = location_pb2.DriverPresenceEvent(event_id=f"{driver_id}:off", driver_id=driver_id,
                                              online=False, order_id=order_id)  # fmt: skip
        await js.publish(subjects.subject(LOCATION.subjects[0]), ev.SerializeToString(),
                         timeout=2)  # fmt: skip
    finally:
        await nc.close()


async def test_the_customer_hears_no_driver_yet_then_arriving_and_a_lost_driver_of_reassignment(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        dispatch_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                      namespace=namespace, state_dir=tmp_path,
                      extra={"FOODMESH_DISPATCH_NO_DRIVER_AFTER_S": "1",
                             "FOODMESH_DISPATCH_ESCALATION_EVERY_S": "0.2"}) as mesh,
        notify_mesh(pg_url=pg_url, nats_url=nats_url, namespace=namespace, tmp=tmp_path,
                    extra={"FOODMESH_NOTIFICATION_ORDER_TARGET": mesh.orders.order.target,
                           "FOODMESH_NOTIFICATION_DISPATCH_TARGET": mesh.dispatch.target}) as m,
        m.client("customer", "cust_1") as customer,
        m.client("driver", "gone") as gone_inbox,
    ):  # fmt: skip
        oid = await confirmed_order(mesh, "k-wait")  # nobody is online

        async def no_driver_yet() -> bool:
            return "no_driver_yet" in await kinds(customer, oid)

        await until(no_driver_yet, "the customer told no driver took it yet")
        for d in ("gone", "next"):
            await upsert(mesh, d)

        # The first driver takes it, then goes silent before pickup: told it was reassigned.
        async with Driver(mesh, "gone") as gone:
            await gone.at(REST[0] + 0.001, REST[1])
            await gone.open_session()
            offer = (await gone.expect("offer", within=15)).offer
            await gone.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await gone.expect("assignment_confirmed")

            async def assigned() -> bool:
                return "driver_assigned" in await kinds(customer, oid)

            await until(assigned, "the customer told who took it")
            await gone.close_session()
            await _presence_offline(nats_url, namespace, "gone", oid)

            async def reassigned() -> bool:
                return "order_reassigned" in await kinds(gone_inbox, oid)

            await until(reassigned, "the lost driver told the order went to another")

        # The next driver takes it, picks it up far from the door: not arriving yet; their
        # fix near the door: arriving, once.
        async with Driver(mesh, "next") as nxt:
            await nxt.at(*FAR)
            await nxt.open_session()
            offer = (await nxt.expect("offer", within=15)).offer
            await nxt.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await nxt.expect("assignment_confirmed")
            await nxt.act(2, picked_up=dpb.OrderProgress(order_id=oid))
            state = await nxt.expect("state")
            while state.ack_seq != 2:  # the answer to the acceptance came first
                state = await nxt.expect("state")
            assert state.state.assignment.status == dpb.ASSIGNMENT_STATUS_PICKED_UP
            await nxt.at(*FAR)
            await asyncio.sleep(1.5)  # the navigator's passes see the far fix
            assert "arriving" not in await kinds(customer, oid)
            await nxt.at(*CLOSE)

            async def arriving() -> bool:
                return "arriving" in await kinds(customer, oid)

            await until(arriving, "the customer told the driver is arriving")
            await nxt.at(CLOSE[0] + 0.0002, CLOSE[1])
            await asyncio.sleep(1.0)
        notice = next(n for n in await inbox(customer) if n.event_type == "arriving")
        assert "min away" in notice.body
        got = await kinds(customer, oid)
        assert got.count("arriving") == 1 and got.count("no_driver_yet") == 1
        assert len(await outbox(pg_url, "fleet", "%dispatch.v1.arriving")) == 1
