"""The promise per stage: Order sends the kitchen's live state with each estimate, keeps the
estimate made at placement and again at confirmation, and shows the latest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from clients import OrderClient
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from servers.order.eta_features import KitchenFeatures
from servers.order.eta_stages import report
from tests.integration._fleet import eventually
from tests.integration._order import place_request, token
from tests.integration._pricing import pricing_mesh
from tests.integration.test_dispatch_routes import eta_service


async def _stages(pg_url: str, order_id: str) -> dict[str, tuple[dt.datetime, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        cur = await c.execute(
            "SELECT stage, estimated_delivery_time, lower_time, upper_time"
            " FROM orders.eta_estimates WHERE order_id = %s", (order_id,))  # fmt: skip
        return {r[0]: tuple(r[1:]) for r in await cur.fetchall()}


async def test_each_stage_is_estimated_kept_and_shown(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    common = dict(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace)
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta,
        pricing_mesh(state_dir=tmp_path, with_location=False,
                     order_extra={"FOODMESH_ORDER_ETA_TARGET": eta}, **common) as mesh,  # type: ignore[arg-type]
        mesh.orders("cust_1") as me,
        OrderClient(mesh.order.target, options=token("restaurant", "rest_1")) as kitchen,  # type: ignore[union-attr]
        AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool,
    ):  # fmt: skip
        first = (await me.place_order(place_request("s1"))).order
        second = (await me.place_order(place_request("s2"))).order
        oid = first.order_id

        async def placed() -> bool:
            return "placement" in await _stages(pg_url, oid)

        await eventually(placed, 10, "the placement stage's estimate")
        arrival, lower, upper = (await _stages(pg_url, oid))["placement"]
        assert lower < arrival < upper  # the 80 % interval is kept with the promise
        assert abs((arrival - first.estimated_delivery_time.ToDatetime(dt.UTC)).total_seconds()) < 1

        # The kitchen's live state as Order reads it for the next estimate: two open orders.
        k = await KitchenFeatures(pool, timeout_s=5).of("rest_1")
        assert k is not None and (k.open_orders, k.recent_orders) == (2, 0)

        await kitchen.update_order_status(pb.UpdateOrderStatusRequest(
            order_id=oid, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip

        async def confirmed() -> bool:
            return "confirmation" in await _stages(pg_url, oid)

        await eventually(confirmed, 10, "the confirmation stage's estimate")
        latest = (await _stages(pg_url, oid))["confirmation"][0]
        got = (await me.get_order(pb.GetOrderRequest(order_id=oid))).order
        assert got.estimated_delivery_time.ToDatetime(dt.UTC) == latest  # tracking shows it
        for s in (common_pb2.ORDER_STATUS_PREPARING, common_pb2.ORDER_STATUS_READY_FOR_PICKUP):
            await kitchen.update_order_status(pb.UpdateOrderStatusRequest(order_id=oid, status=s))
        k = await KitchenFeatures(pool, timeout_s=5).of("rest_1")
        assert k is not None and (k.open_orders, k.recent_orders) == (1, 1)
        assert 0 <= k.recent_prep_min < 1  # ready within the test's few seconds
        assert second.order_id != oid
        # Nothing delivered yet: the report has no stage to show.
        now = dt.datetime.now(dt.UTC)
        assert await report(pg_url, since=now - dt.timedelta(hours=1), until=now) == []
