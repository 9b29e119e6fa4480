"""Kitchen-timed offers in the live Dispatch: an order is offered when its driver must set off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import (
    REST,
    Driver,
    confirmed_order,
    dispatch_mesh,
    held_for,
    upsert,
)

pytestmark = pytest.mark.timeout(120)


async def test_an_order_is_held_until_the_kitchen_is_nearly_done_then_offered(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        # "No driver" after half a second: a held order has its driver, it is not escalated.
        extra={"FOODMESH_DISPATCH_KITCHEN_RELEASE_S": "60",
               "FOODMESH_DISPATCH_NO_DRIVER_AFTER_S": "0.5",
               "FOODMESH_DISPATCH_ESCALATION_EVERY_S": "0.1"},
    ) as mesh:  # fmt: skip
        await upsert(mesh, "near")
        async with Driver(mesh, "near") as near:
            await near.at(REST[0] + 0.002, REST[1])  # a minute from the counter
            await near.open_session()
            oid = await confirmed_order(mesh, "k-kitchen")
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                row = None
                for _ in range(100):  # the confirmed event reaches Dispatch through NATS
                    cur = await conn.execute(
                        "SELECT extract(epoch FROM ready_at - now()) FROM fleet.assignments"
                        " WHERE order_id = %s",
                        (oid,),
                    )
                    if (row := await cur.fetchone()) is not None:
                        break
                    await asyncio.sleep(0.1)
                assert row is not None and float(row[0]) > 300  # the promise: minutes of prep
                # Ten batches later the driver has been matched, but not sent to wait.
                await asyncio.sleep(2.0)
                cur = await conn.execute(
                    "SELECT status, offers_made, no_driver_at IS NULL,"
                    " extract(epoch FROM ready_at - held_until) FROM fleet.assignments"
                    " WHERE order_id = %s",
                    (oid,),
                )
                row = await cur.fetchone()
                assert row is not None and row[:3] == ("pending", 0, True)
                # Released the driver's minute away plus the margin before the food.
                assert 60 < float(row[3]) < 60 + 300
                # Food ready beyond the planner's horizon (30 min): held until it enters
                # it, not escalated as driverless meanwhile.
                await conn.execute(
                    "UPDATE fleet.assignments SET ready_at = now() + interval '2 hours'"
                    " WHERE order_id = %s",
                    (oid,),
                )
                await asyncio.sleep(1.5)
                cur = await conn.execute(
                    "SELECT status, no_driver_at IS NULL,"
                    " extract(epoch FROM ready_at - held_until) FROM fleet.assignments"
                    " WHERE order_id = %s",
                    (oid,),
                )
                row = await cur.fetchone()
                assert row is not None and row[:2] == ("pending", True)
                assert float(row[2]) == pytest.approx(1800.0, abs=5.0)
                # The kitchen says it is nearly done: now the driver must go.
                await conn.execute(
                    "UPDATE fleet.assignments SET ready_at = now() + interval '90 seconds'"
                    " WHERE order_id = %s",
                    (oid,),
                )
            offer = (await near.expect("offer", within=10)).offer
            assert offer.order_id == oid


async def test_food_ready_sooner_than_estimated_is_offered_at_once(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """The kitchen's ready mark overrides the estimate: the order is not held while it waits."""
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        extra={"FOODMESH_DISPATCH_KITCHEN_RELEASE_S": "60"},
    ) as mesh:
        await upsert(mesh, "near")
        async with Driver(mesh, "near") as near:
            await near.at(REST[0] + 0.002, REST[1])
            await near.open_session()
            oid = await confirmed_order(mesh, "k-early")
            held, _, _, _ = await held_for(pg_url, oid)
            assert held == "pending"  # held for a kitchen minutes from done
            async with mesh.order_client("restaurant", "rest_1") as r:
                for status in (common_pb2.ORDER_STATUS_PREPARING,
                               common_pb2.ORDER_STATUS_READY_FOR_PICKUP):  # fmt: skip
                    await r.update_order_status(
                        opb.UpdateOrderStatusRequest(order_id=oid, status=status)
                    )
            offer = (await near.expect("offer", within=10)).offer
            assert offer.order_id == oid
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT ready_at = food_ready_at, ready_at < now() FROM fleet.assignments"
                    " WHERE order_id = %s",
                    (oid,),
                )
                assert await cur.fetchone() == (True, True)
