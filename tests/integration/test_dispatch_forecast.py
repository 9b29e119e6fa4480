"""Dispatch's opportunity demand from the real Pricing service's ForecastDemand, and without it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import psycopg
import pytest

from clients import ClientOptions, PricingClient
from foodmesh.core.geo import geohash_encode
from foodmesh.v1 import pricing_pb2 as ppb
from servers import pricing
from servers.dispatch.demand import Forecasts, ForecastsConfig
from servers.dispatch.matching import PendingOrder
from servers.runtime.migrate import load_migrations, migrate
from tests.integration._pricing import REST_CELL, pricing_mesh

pytestmark = pytest.mark.integration
REST = (37.7755, -122.4183)
FAR = (37.70, -122.30)  # another geohash-5 cell, with no history


def order(order_id: str, at: tuple[float, float]) -> PendingOrder:
    return PendingOrder(order_id=order_id, pickup_lat=REST[0], pickup_lon=REST[1],
                        dropoff_lat=at[0], dropoff_lon=at[1], ready_at=time.time())  # fmt: skip


async def recent_history(pg_url: str, now: float) -> None:
    """Three orders a five-minute bucket in the cell over the last half hour."""
    assert pricing.SPEC.migrations is not None
    await migrate(pg_url, service="pricing", migrations=load_migrations(pricing.SPEC.migrations))
    b_now = int(now // 300)
    rows = [(REST_CELL, dt.datetime.fromtimestamp((b_now - j) * 300, dt.UTC), 3)
            for j in range(1, 7)]  # fmt: skip
    async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO pricing.demand_counts (cell, bucket, orders) VALUES (%s, %s, %s)", rows
        )


async def test_demand_is_pricings_forecast_cached_and_the_pool_when_pricing_is_away(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    assert geohash_encode(*REST, 5) == REST_CELL != geohash_encode(*FAR, 5)
    await recent_history(pg_url, time.time())
    extra = {"FOODMESH_PRICING_FORECAST_REFRESH_S": "0.5"}
    async with pricing_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                            namespace=namespace, state_dir=tmp_path,
                            with_order=False, extra=extra) as mesh:  # fmt: skip
        async with mesh.client() as pr:  # a service's token, as Dispatch's

            async def expected() -> float:
                while True:
                    got = await pr.forecast_demand(ppb.ForecastDemandRequest(cells=[REST_CELL]))
                    f30 = next(f for f in got.cells[0].forecasts if f.horizon_minutes == 30)
                    if f30.expected_orders > 0:
                        return f30.expected_orders
                    await asyncio.sleep(0.2)

            want = await asyncio.wait_for(expected(), timeout=30)
            clock = [0.0]
            fc = Forecasts(pr, clock=lambda: clock[0])
            pending = [order("o1", REST), order("o2", FAR), order("o3", FAR)]
            got = await fc.demand(pending)
            # The forecast of each drop-off's cell, not the pool (o1 is alone in its cell,
            # o2 and o3 share theirs: the pool would say 0 and 1).
            assert got == {"o1": want, "o2": 0.0, "o3": 0.0}
            assert (fc.calls, fc.failures) == (1, 0)
            clock[0] = 30.0  # within the minute: the cache answers
            assert await fc.demand(pending) == got and fc.calls == 1
            clock[0] = 61.0  # stale: asked again
            assert await fc.demand(pending[:1]) == {"o1": want} and fc.calls == 2

    # Pricing away (nothing listens there): the pool stands in, and it is not asked again
    # before the back-off, so matching never waits on it batch after batch.
    away = PricingClient("127.0.0.1:1", options=ClientOptions())
    try:
        fc = Forecasts(away, config=ForecastsConfig(deadline_s=0.3), clock=lambda: 0.0)
        assert await fc.demand(pending) == {"o1": 0.0, "o2": 1.0, "o3": 1.0}
        assert await fc.demand(pending) == {"o1": 0.0, "o2": 1.0, "o3": 1.0}
        assert (fc.calls, fc.failures) == (1, 1)
    finally:
        await away.close()
    # No Pricing configured at all: the pool.
    assert await Forecasts(None).demand(pending) == {"o1": 0.0, "o2": 1.0, "o3": 1.0}
