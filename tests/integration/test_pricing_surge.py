"""Surge from live demand (order events) and supply (the Location index), and without Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as opb
from foodmesh.v1 import pricing_pb2 as ppb
from tests.integration._location import DriverApp, fix
from tests.integration._pricing import REST_CELL, pricing_mesh, quote_request

pytestmark = pytest.mark.integration
REST = (37.7755, -122.4183)
AT = ppb.GetSurgeRequest(lat=REST[0], lon=REST[1])


def placed(order_id: str, *, at: float | None = None) -> bytes:
    ev = opb.OrderEvent(event_id=f"{order_id}.1", order=opb.Order(
        order_id=order_id, customer_id="c", restaurant_id="rest_1",
        restaurant_location=common_pb2.LatLng(lat=REST[0], lon=REST[1])))  # fmt: skip
    ev.event_time.FromNanoseconds(int((at or time.time()) * 1e9))
    return ev.SerializeToString()


async def test_surge_rises_when_orders_outnumber_drivers_and_falls_back_after(
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
            d1 = DriverApp(mesh.location.target, "d1")
            d2 = DriverApp(mesh.location.target, "d2")
            async with d1, d2:
                await d1.send(fix(REST[0] + 0.001, REST[1]))
                await d2.send(fix(REST[0], REST[1] + 0.001))
                calm = (await ops.get_surge(ppb.GetSurgeRequest(lat=REST[0], lon=REST[1]))).surge
                assert (calm.multiplier, calm.demand, calm.cell) == (1.0, 0, REST_CELL)
                subject = subjects.subject("orders.v1.placed")
                for i in range(6):
                    await js.publish(subject, placed(f"o{i}"))
                await js.publish(subject, placed("o0"))  # redelivered: counted once
                await js.publish(subject, placed("old", at=time.time() - 3600))  # outside window
                await js.publish(subjects.subject("orders.v1.confirmed"), placed("o1"))

                async def busy() -> ppb.Surge:
                    while True:
                        s = (await ops.get_surge(AT)).surge
                        if s.demand >= 6 and s.supply == 2:
                            return s
                        await asyncio.sleep(0.05)

                s = await asyncio.wait_for(busy(), timeout=10)
                assert (s.demand, s.supply, s.ratio) == (6, 2, 3.0)
                assert s.multiplier == pytest.approx(2.3)  # 2 + (3 − 2) × 0.3
                assert s.reason == "High demand" and not s.fallback
                async with mesh.client("customer", "c1") as cust:
                    q = (await cust.quote_order(quote_request("c1"))).quote
                assert q.surge.multiplier == pytest.approx(2.3)
                assert q.delivery_fee.amount_minor == 688  # 299 × 2.3 = 687.7 → 688
                assert any("busy-area surge" in ln.label for ln in q.lines)

                async def calm_again() -> ppb.Surge:
                    while True:
                        s = (await ops.get_surge(AT)).surge
                        if s.demand == 0:
                            return s
                        await asyncio.sleep(0.1)

                after = await asyncio.wait_for(calm_again(), timeout=10)  # the window is 4 s
                assert after.multiplier == 1.0 and after.reason == "Normal demand"

                async def calm_recorded() -> list[ppb.SurgePoint]:
                    # The history is written beside the answer (in the background): the calm
                    # point lands a moment after GetSurge returned it.
                    while True:
                        req = ppb.GetSurgeHistoryRequest(cell=REST_CELL)
                        points = list((await ops.get_surge_history(req)).points)
                        if points and round(points[-1].multiplier, 1) == 1.0:
                            return points
                        await asyncio.sleep(0.1)

                hist = await asyncio.wait_for(calm_recorded(), timeout=10)
            seen = [round(p.multiplier, 1) for p in hist]
            assert 2.3 in seen and seen[-1] == 1.0
            assert [p.timestamp.ToNanoseconds() for p in hist] == sorted(
                p.timestamp.ToNanoseconds() for p in hist)  # fmt: skip
    finally:
        await nc.close()


async def test_without_redis_surge_is_1_flagged_and_quotes_still_work(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                     state_dir=tmp_path, with_order=False, with_location=False,
                     pricing_redis_url="redis://127.0.0.1:1") as mesh,
        mesh.client("customer", "c1") as cust,
        mesh.client("ops", "ops") as ops,
    ):  # fmt: skip
        s = (await cust.get_surge(ppb.GetSurgeRequest(lat=REST[0], lon=REST[1]))).surge
        assert (s.multiplier, s.fallback) == (1.0, True) and "unavailable" in s.reason
        assert s.weather == common_pb2.WEATHER_KIND_UNSPECIFIED
        # Blind to demand, Pricing still names the weather in force (its conditions are its own).
        snow = ppb.WeatherCondition(area="9q8", kind=common_pb2.WEATHER_KIND_SNOW)
        await ops.set_conditions(ppb.SetConditionsRequest(weather=[snow]))
        s = (await cust.get_surge(ppb.GetSurgeRequest(lat=REST[0], lon=REST[1]))).surge
        assert s.fallback and s.weather == common_pb2.WEATHER_KIND_SNOW
        q = (await cust.quote_order(quote_request("c1"), deadline_s=5)).quote
        assert q.surge.fallback and q.delivery_fee.amount_minor == 299
        assert sum(ln.amount.amount_minor for ln in q.lines) == q.total.amount_minor
