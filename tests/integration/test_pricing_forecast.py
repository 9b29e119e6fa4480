"""The demand forecast on real servers: history from order events, ForecastDemand, surge ahead."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import grpc
import nats
import psycopg
import pytest
from nats.js.api import StreamConfig

from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2
from foodmesh.v1 import pricing_pb2 as ppb
from servers import pricing
from servers.runtime.migrate import load_migrations, migrate
from tests.integration._location import DriverApp, fix
from tests.integration._order import violations
from tests.integration._pricing import REST_CELL, pricing_mesh
from tests.integration.test_pricing_surge import REST, placed

pytestmark = pytest.mark.integration
BUCKET = 300
QUIET, RUSH = 1, 8


async def seed_history(pg_url: str, now: float) -> None:
    """Three weeks of the cell: one order a bucket, and a rush of an hour each day that
    starts ten minutes after this time of day (today only the quiet hours before now)."""
    assert pricing.SPEC.migrations is not None
    await migrate(pg_url, service="pricing", migrations=load_migrations(pricing.SPEC.migrations))
    b_now = int(now // BUCKET)
    rows = []
    for day in range(22):
        for j in range(-36, 36 if day else 0):
            n = RUSH if 2 <= j < 14 else QUIET
            at = dt.datetime.fromtimestamp((b_now - day * 288 + j) * BUCKET, dt.UTC)
            rows.append((REST_CELL, at, n))
    async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO pricing.demand_counts (cell, bucket, orders) VALUES (%s, %s, %s)", rows
        )


async def test_forecast_learns_the_cells_history_and_surge_moves_before_the_rush(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    now = time.time()
    if now % BUCKET > BUCKET - 30:  # the rush must not start while the test runs
        await asyncio.sleep(BUCKET - now % BUCKET + 1)
        now = time.time()
    await seed_history(pg_url, now)
    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=subjects.stream("ORDERS"),
                                         subjects=[subjects.subject("orders.v1.>")]))  # fmt: skip
        async with (
            pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, with_order=False,
                         extra={"FOODMESH_PRICING_DEMAND_WINDOW_S": "600",
                                "FOODMESH_PRICING_FORECAST_REFRESH_S": "0.5"}) as mesh,
            mesh.client("ops", "ops") as ops,
        ):  # fmt: skip
            assert mesh.location is not None
            d1 = DriverApp(mesh.location.target, "d1")
            d2 = DriverApp(mesh.location.target, "d2")
            async with d1, d2:
                await d1.send(fix(REST[0] + 0.001, REST[1]))
                await d2.send(fix(REST[0], REST[1] + 0.001))
                # one order now, delivered twice: counted once in the history and in demand
                subject = subjects.subject("orders.v1.placed")
                await js.publish(subject, placed("o1"))
                await js.publish(subject, placed("o1"))
                # rain now: kept with when it began, for the models to come
                await ops.set_conditions(ppb.SetConditionsRequest(weather=[ppb.WeatherCondition(
                    area="9q8", kind=common_pb2.WEATHER_KIND_LIGHT_RAIN)]))  # fmt: skip

                async def trained() -> ppb.ForecastDemandResponse:
                    while True:
                        got = await ops.forecast_demand(
                            ppb.ForecastDemandRequest(cells=[REST_CELL]), deadline_s=5
                        )
                        if got.model.kind == "xgboost" and got.cells[0].expected_drivers == 2:
                            return got
                        await asyncio.sleep(0.2)

                got = await asyncio.wait_for(trained(), timeout=90)
                since_trained = time.time()
                assert got.model.rows > 2000 and got.model.validation_wape < 0.2
                assert got.model.baseline_wape >= 0 and 0 < got.model.interval_coverage <= 1
                (c,) = got.cells
                assert (c.cell, c.recent_orders, c.expected_drivers) == (REST_CELL, 6 * QUIET, 2)
                f30, f60 = c.forecasts
                assert (f30.horizon_minutes, f60.horizon_minutes) == (30, 60)
                assert f60.start_time == f30.end_time
                assert f30.start_time == got.forecast_time
                # the next half hour: two quiet buckets, then four of the rush
                assert f30.expected_orders == pytest.approx(2 * QUIET + 4 * RUSH, rel=0.25)
                assert f60.expected_orders == pytest.approx(6 * RUSH, rel=0.25)
                assert f30.low <= f30.expected_orders <= f30.high
                assert f30.surge_risk == ppb.SURGE_RISK_HIGH  # ~34 orders over 2 drivers

                # Surge: one order in the last ten minutes and two drivers is "normal", but
                # the rush forecast for the same window prices it now.
                async def ahead() -> ppb.Surge:
                    while True:
                        s = (await ops.get_surge(ppb.GetSurgeRequest(lat=REST[0], lon=REST[1]))
                             ).surge  # fmt: skip
                        # (a surge computed before the model was trained may still be cached)
                        fresh = s.compute_time.ToNanoseconds() / 1e9 > since_trained
                        if s.demand == 1 and s.supply == 2 and fresh:
                            return s
                        await asyncio.sleep(0.1)

                s = await asyncio.wait_for(ahead(), timeout=10)
                assert s.forecast_demand >= 9  # ~34 / 3
                assert s.multiplier >= 2.0 and "+ rush expected" in s.reason
                assert s.reason.endswith("+ bad weather")

                busiest = await ops.forecast_demand(ppb.ForecastDemandRequest(limit=5))
                assert [x.cell for x in busiest.cells] == [REST_CELL]

            async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                cur = await conn.execute(
                    "SELECT orders FROM pricing.demand_counts WHERE cell = %s AND bucket = %s",
                    (REST_CELL, dt.datetime.fromtimestamp(now - now % BUCKET, dt.UTC)),
                )
                assert await cur.fetchall() == [(1,)]
                cur = await conn.execute("SELECT weather FROM pricing.condition_history")
                assert await cur.fetchall() == [([["9q8", common_pb2.WEATHER_KIND_LIGHT_RAIN]],)]

            for bad, field in ((ppb.ForecastDemandRequest(cells=["9q8y"]), "cells[0]"),
                               (ppb.ForecastDemandRequest(cells=[REST_CELL, "ai!!x"]), "cells[1]"),
                               (ppb.ForecastDemandRequest(limit=201), "limit")):  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ops.forecast_demand(bad)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert field in violations(err.value)
            async with mesh.client("customer", "c1") as cust:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await cust.forecast_demand(ppb.ForecastDemandRequest(cells=[REST_CELL]))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await nc.close()
