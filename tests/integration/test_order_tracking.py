"""The Location service's TrackOrder fed by the real Order service's GetOrder + WatchOrder."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients import LocationClient, OrderClient
from foodmesh.v1 import common_pb2, location_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._location import location_service
from tests.integration._order import clients, order_mesh, place_request, token

OS = common_pb2.OrderStatus
NOWHERE = "127.0.0.1:1"  # Dispatch and ETA are not running: tracking does without them


async def test_track_order_follows_the_real_order_until_delivery(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                   namespace=namespace) as mesh,
        OrderClient(mesh.order.target, options=token("service", "location")) as feed,
        location_service(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, orders=feed,
                         extra={"FOODMESH_LOCATION_DISPATCH_TARGET": NOWHERE,
                                "FOODMESH_LOCATION_ETA_TARGET": NOWHERE}) as loc,
        clients(mesh, ("customer", "cus_1"), ("ops", "ops_1")) as (me, ops),
        LocationClient(loc.target, options=token("customer", "cus_1")) as tracker,
    ):  # fmt: skip
        o = (await me.place_order(place_request())).order
        stream = tracker.track_order(location_pb2.TrackOrderRequest(order_id=o.order_id))
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.order_status == OS.ORDER_STATUS_PLACED
        await ops.assign_driver(pb.AssignDriverRequest(order_id=o.order_id, driver_id="drv_1"))
        chain = [OS.ORDER_STATUS_CONFIRMED, OS.ORDER_STATUS_PREPARING,
                 OS.ORDER_STATUS_READY_FOR_PICKUP, OS.ORDER_STATUS_PICKED_UP,
                 OS.ORDER_STATUS_IN_TRANSIT, OS.ORDER_STATUS_DELIVERED]  # fmt: skip
        for s in chain:
            await ops.update_order_status(pb.UpdateOrderStatusRequest(order_id=o.order_id,
                                                                      status=s))  # fmt: skip
        seen = [first]
        async with asyncio.timeout(10):
            async for update in stream:  # ends by itself once delivered
                seen.append(update)
    assert seen[-1].order_status == OS.ORDER_STATUS_DELIVERED
    assert any(u.driver.driver_id == "drv_1" for u in seen)
    statuses = [u.order_status for u in seen]
    assert statuses == sorted(statuses)  # never goes backwards
