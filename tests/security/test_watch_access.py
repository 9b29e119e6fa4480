"""WatchOrder re-checks who may watch at each change: a driver taken off an order stops
seeing it (issue 17, low items). Real gateway and Order service."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._gateway import auth, gateway, sse_events
from tests.integration._order import clients, order_mesh, place_request

pytestmark = pytest.mark.timeout(120)
OS = common_pb2.OrderStatus


async def test_a_reassigned_driver_stops_watching_the_order(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                   namespace=namespace) as mesh,
        gateway({"order": mesh.order.target}) as http,
        clients(mesh, ("customer", "cus_w"), ("service", "dispatch"),
                ("restaurant", "rest_1")) as (me, svc, rest),
    ):  # fmt: skip
        o = (await me.place_order(place_request("watch-1"))).order
        oid = o.order_id
        await svc.assign_driver(pb.AssignDriverRequest(order_id=oid, driver_id="drv_old"))
        seen: list[dict[str, Any]] = []
        async with http.session.get(f"/api/v1/orders/{oid}/watch",
                                    headers={**auth("driver", "drv_old"),
                                             "Accept": "text/event-stream"}) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
            events = sse_events(resp)
            first = await asyncio.wait_for(anext(events), 10)
            assert first["data"]["order"]["driver_id"] == "drv_old"
            # Dispatch gives the order to another driver, and the order moves on.
            again = pb.AssignDriverRequest(order_id=oid, driver_id="drv_new", reason="silent")
            await svc.assign_driver(again)
            await rest.update_order_status(
                pb.UpdateOrderStatusRequest(order_id=oid, status=OS.ORDER_STATUS_CONFIRMED)
            )
            async with asyncio.timeout(30):  # the stream ends: it does not go on for ever
                async for ev in events:
                    seen.append(ev)
                    text = json.dumps(ev)  # nothing of the order after it was taken away
                    assert "drv_new" not in text and "ORDER_STATUS_CONFIRMED" not in text, seen
        # What ends the stream is the answer to an order this driver cannot see.
        assert any("NOT_FOUND" in json.dumps(ev) or "5" == str(ev.get("data", {}).get("code"))
                   for ev in seen), seen  # fmt: skip
