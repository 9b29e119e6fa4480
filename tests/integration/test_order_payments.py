"""Payment operations that the provider does not confirm stay pending and are retried."""

from __future__ import annotations

import asyncio

import psycopg

from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from servers.order.payments import Authorization, ProviderUnavailable, RefundOutcome
from servers.order.sandbox import SandboxProvider
from tests.integration._order import clients, order_mesh, place_request

OS = common_pb2.OrderStatus


class Flaky:
    """The sandbox, unreachable for its first ``outages`` captures."""

    name = "sandbox"

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.inner: SandboxProvider | None = None

    def bind(self, pg_url: str) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
        self.inner = SandboxProvider(self.pool)

    async def authorize(self, **kw: object) -> Authorization:
        assert self.inner is not None
        return await self.inner.authorize(**kw)  # type: ignore[arg-type]

    async def capture(self, *, key: str, payment_id: str, amount_minor: int) -> None:
        assert self.inner is not None
        if self.outages > 0:
            self.outages -= 1
            raise ProviderUnavailable("processor away")
        await self.inner.capture(key=key, payment_id=payment_id, amount_minor=amount_minor)

    async def refund(self, *, key: str, payment_id: str, amount_minor: int) -> RefundOutcome:
        assert self.inner is not None
        return await self.inner.refund(key=key, payment_id=payment_id, amount_minor=amount_minor)


async def test_a_capture_the_provider_missed_is_retried_until_it_is_taken(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    flaky = Flaky(outages=2)
    flaky.bind(pg_url)
    await flaky.pool.open(wait=True)
    try:
        async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                              namespace=namespace, payments=flaky,
                              extra={"FOODMESH_ORDER_SETTLE_EVERY_S": "0.1"}) as mesh:  # fmt: skip
            async with clients(mesh, ("customer", "cus_1"), ("ops", "ops")) as (me, ops):
                o = (await me.place_order(place_request())).order
                for s in (OS.ORDER_STATUS_CONFIRMED, OS.ORDER_STATUS_PREPARING,
                          OS.ORDER_STATUS_READY_FOR_PICKUP, OS.ORDER_STATUS_PICKED_UP,
                          OS.ORDER_STATUS_IN_TRANSIT, OS.ORDER_STATUS_DELIVERED):  # fmt: skip
                    req = pb.UpdateOrderStatusRequest(order_id=o.order_id, status=s)
                    last = (await ops.update_order_status(req)).order
                # Delivered and committed, but the capture did not get through.
                assert last.status == OS.ORDER_STATUS_DELIVERED
                assert last.payment_status == pb.PAYMENT_STATUS_AUTHORIZED
                for _ in range(100):  # the settler retries in the background
                    got = (await me.get_order(pb.GetOrderRequest(order_id=o.order_id))).order
                    if got.payment_status == pb.PAYMENT_STATUS_CAPTURED:
                        break
                    await asyncio.sleep(0.05)
                assert got.payment_status == pb.PAYMENT_STATUS_CAPTURED
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute("SELECT status, captured_minor FROM orders.sandbox_payments")
            assert await cur.fetchall() == [("captured", o.pricing.total.amount_minor)]
            cur = await conn.execute("SELECT count(*) FROM orders.sandbox_operations")
            assert await cur.fetchone() == (1,)  # captured once, whatever the retries
    finally:
        await flaky.pool.close()
