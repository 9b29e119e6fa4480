"""A driver's time at the restaurant and their wait for the food, measured apart.

Through the real mesh: the driver arrives, the kitchen marks the food ready a second
later, the handover takes another second. The time at the counter is both; the wait
for the food ends when the kitchen said ready (the services run in this process, so
their metrics are the test's to read).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from servers.dispatch.metrics import food_wait_s
from tests.integration._dispatch import REST, Driver, confirmed_order, dispatch_mesh, upsert

pytestmark = pytest.mark.timeout(120)

NAMES = ("foodmesh_dispatch_driver_wait_seconds", "foodmesh_dispatch_driver_food_wait_seconds")


def _snapshot() -> dict[str, float]:
    return {
        f"{n}_{k}": REGISTRY.get_sample_value(f"{n}_{k}") or 0.0
        for n in NAMES
        for k in ("count", "sum")
    }


def test_the_wait_for_the_food_ends_when_it_is_ready_and_never_after_the_pickup() -> None:
    assert food_wait_s(arrived=100.0, ready=160.0, picked=250.0) == 60.0  # handover apart
    assert food_wait_s(arrived=100.0, ready=40.0, picked=250.0) == 0.0  # ready first
    assert food_wait_s(arrived=100.0, ready=400.0, picked=250.0) == 150.0  # marked late


async def test_time_at_the_counter_and_the_wait_for_the_food_are_both_recorded(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        await upsert(mesh, "waits")
        async with Driver(mesh, "waits") as d:
            await d.at(REST[0] + 0.002, REST[1])
            await d.open_session()
            oid = await confirmed_order(mesh, "k-wait")
            offer = (await d.expect("offer", within=10)).offer
            await d.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await d.expect("assignment_confirmed")
            before = _snapshot()
            await d.act(2, arrived_at_restaurant=dpb.OrderProgress(order_id=oid))
            await d.expect("state")
            await asyncio.sleep(1.0)  # the driver waits for the food
            async with mesh.order_client("restaurant", "rest_1") as r:
                for status in (common_pb2.ORDER_STATUS_PREPARING,
                               common_pb2.ORDER_STATUS_READY_FOR_PICKUP):  # fmt: skip
                    await r.update_order_status(
                        opb.UpdateOrderStatusRequest(order_id=oid, status=status)
                    )
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                for _ in range(100):  # the ready event reaches Dispatch through NATS
                    cur = await conn.execute(
                        "SELECT food_ready_at IS NOT NULL FROM fleet.assignments"
                        " WHERE order_id = %s",
                        (oid,),
                    )
                    if (row := await cur.fetchone()) is not None and row[0]:
                        break
                    await asyncio.sleep(0.05)
                assert row is not None and row[0]
            await asyncio.sleep(1.0)  # the handover at the counter
            await d.act(3, picked_up=dpb.OrderProgress(order_id=oid))
            await d.expect("state")
        after = _snapshot()
        delta = {k: after[k] - before[k] for k in after}
        counter, food = NAMES
        assert delta[f"{counter}_count"] == 1 and delta[f"{food}_count"] == 1
        at_counter, for_food = delta[f"{counter}_sum"], delta[f"{food}_sum"]
        assert at_counter >= 2.0  # the wait and the handover
        assert 1.0 <= for_food <= at_counter - 0.9  # the handover is not waiting
