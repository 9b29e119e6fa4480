"""Pricing's surge gauge follows the surge computed for a cell, through the real service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from prometheus_client import REGISTRY

from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as opb
from foodmesh.v1 import pricing_pb2 as ppb
from servers.pricing.metrics import SURGE
from tests.integration._location import DriverApp, fix
from tests.integration._pricing import REST_CELL, pricing_mesh

pytestmark = pytest.mark.timeout(60)
REST = (37.7755, -122.4183)
AT = ppb.GetSurgeRequest(lat=REST[0], lon=REST[1])


def _gauge(cell: str) -> float | None:
    return REGISTRY.get_sample_value("foodmesh_pricing_surge_multiplier", {"cell": cell})


def _placed(order_id: str) -> bytes:
    ev = opb.OrderEvent(event_id=f"{order_id}.1", order=opb.Order(
        order_id=order_id, customer_id="c", restaurant_id="rest_1",
        restaurant_location=common_pb2.LatLng(lat=REST[0], lon=REST[1])))  # fmt: skip
    ev.event_time.FromNanoseconds(int(time.time() * 1e9))
    return ev.SerializeToString()


async def test_surge_gauge_shows_each_cells_computed_multiplier(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=subjects.stream("ORDERS"),
                                         subjects=[subjects.subject("orders.v1.>")]))  # fmt: skip
        async with (
            pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, with_order=False) as mesh,
            mesh.client("ops", "ops") as ops,
        ):  # fmt: skip
            assert mesh.location is not None
            SURGE.labels(REST_CELL).set(-1.0)  # whatever an earlier test left: not ours
            async with (
                DriverApp(mesh.location.target, "d1") as d1,
                DriverApp(mesh.location.target, "d2") as d2,
            ):
                await d1.send(fix(REST[0] + 0.001, REST[1]))
                await d2.send(fix(REST[0], REST[1] + 0.001))
                calm = (await ops.get_surge(AT)).surge
                assert calm.cell == REST_CELL and calm.multiplier == 1.0
                assert _gauge(REST_CELL) == 1.0
                for i in range(6):
                    await js.publish(subjects.subject("orders.v1.placed"), _placed(f"o{i}"))

                async def busy() -> ppb.Surge:
                    while True:
                        s = (await ops.get_surge(AT)).surge
                        if s.demand >= 6 and s.supply == 2:
                            return s
                        await asyncio.sleep(0.05)

                s = await asyncio.wait_for(busy(), timeout=10)
                assert s.multiplier == pytest.approx(2.3)
                assert _gauge(REST_CELL) == pytest.approx(2.3)
            # Another cell has its own series; the first keeps its value.
            far = (await ops.get_surge(ppb.GetSurgeRequest(lat=40.7128, lon=-74.006))).surge
            assert far.cell != REST_CELL
            assert _gauge(far.cell) == far.multiplier
            assert _gauge(REST_CELL) == pytest.approx(2.3)
    finally:
        await nc.close()
