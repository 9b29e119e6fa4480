"""Scheduled orders: paid at once, held, released to the kitchen exactly once even with
several replicas running the release pass."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import nats
import psycopg
import pytest

from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from servers import order
from servers.runtime.serve import run_service
from tests.integration._order import clients, order_mesh, place_request, reason

OS = common_pb2.OrderStatus


def scheduled(key: str, ahead: dt.timedelta) -> pb.PlaceOrderRequest:
    req = place_request(key, delivery_option=pb.DELIVERY_OPTION_SCHEDULED)
    req.scheduled_time.FromDatetime(dt.datetime.now(dt.UTC) + ahead)
    return req


async def subjects_of(nats_url: str, namespace: str, want: int) -> list[tuple[str, str]]:
    s = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(s.subject("orders.v1.>"), durable=None,
                                      stream=s.stream("ORDERS"))  # fmt: skip
        out: list[tuple[str, str]] = []
        try:
            for m in await sub.fetch(want + 1, timeout=1.5):
                out.append(
                    (m.subject.rsplit(".", 1)[-1], pb.OrderEvent.FromString(m.data).event_id)
                )
        except (nats.errors.TimeoutError, TimeoutError):  # nats.py raises either
            pass
        return out
    finally:
        await nc.close()


async def test_a_scheduled_order_is_held_then_released_once_by_many_replicas(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace,
                          extra={"FOODMESH_ORDER_RELEASE_EVERY_S": "0.05"}) as mesh:  # fmt: skip
        async with clients(mesh, ("customer", "cus_1"), ("restaurant", "rest_1")) as (me, rest):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await me.place_order(scheduled("soon", dt.timedelta(minutes=10)))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            o = (await me.place_order(scheduled("later", dt.timedelta(hours=2)))).order
            assert o.payment_status == pb.PAYMENT_STATUS_AUTHORIZED
            assert o.estimated_delivery_time == o.scheduled_time
            assert o.ready_time.ToSeconds() < o.scheduled_time.ToSeconds()
            confirm = pb.UpdateOrderStatusRequest(order_id=o.order_id,
                                                  status=OS.ORDER_STATUS_CONFIRMED)  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await rest.update_order_status(confirm)
            assert reason(err.value) == "NOT_RELEASED"
            # A second replica runs the release pass too.
            async with run_service(order.SPEC, mesh.order.settings):
                async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
                    await c.execute("UPDATE orders.orders SET release_at = now()")  # time passes
                for _ in range(100):
                    async with await psycopg.AsyncConnection.connect(pg_url) as c:
                        cur = await c.execute("SELECT released FROM orders.orders")
                        if await cur.fetchone() == (True,):
                            break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # both replicas make more passes
            events = await subjects_of(nats_url, namespace, 2)
            assert events == [("scheduled", f"{o.order_id}.1"),
                              ("placed", f"{o.order_id}.released")]  # fmt: skip
            confirmed = (await rest.update_order_status(confirm)).order
            assert confirmed.status == OS.ORDER_STATUS_CONFIRMED
