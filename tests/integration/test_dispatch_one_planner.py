"""Live and replay decide with one planner: a live round against ``plan_trips`` on its state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from foodmesh.v1 import dispatch_pb2 as dpb
from servers.dispatch.engine import EngineConfig
from servers.dispatch.live import free_driver
from servers.dispatch.matching import Candidate
from servers.dispatch.trips import TripOrder, plan_trips
from tests.integration._dispatch import REST, Driver, confirmed_order, dispatch_mesh, upsert

pytestmark = pytest.mark.timeout(120)

WHERE = {
    "choosy": (REST[0] + 0.003, REST[1]),  # nearest, but declines most offers
    "keen": (REST[0] + 0.006, REST[1]),
    "far": (REST[0] + 0.03, REST[1]),
}
ACCEPTANCE = {"choosy": 0.3, "keen": 1.0, "far": 1.0}


async def first_offer(drivers: dict[str, Driver]) -> tuple[str, dpb.Offer]:
    tasks = {asyncio.create_task(d.expect("offer", within=15)): n for n, d in drivers.items()}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    got = done.pop()
    return tasks[got], got.result().offer


async def test_the_live_engine_offers_what_the_replay_planner_decides_on_the_same_state(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        for name in WHERE:
            await upsert(mesh, name)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            # Acceptance: the share of the last offers accepted (3 of 10 for "choosy").
            for name, rate in ACCEPTANCE.items():
                answers = [i < round(rate * 10) for i in range(10)]
                await conn.execute(
                    "INSERT INTO fleet.stats (driver_id, recent_offers) VALUES (%s, %s)"
                    " ON CONFLICT (driver_id) DO UPDATE SET recent_offers = EXCLUDED.recent_offers",
                    (name, answers),
                )
        async with (
            Driver(mesh, "choosy") as choosy,
            Driver(mesh, "keen") as keen,
            Driver(mesh, "far") as far,
        ):
            drivers = {"choosy": choosy, "keen": keen, "far": far}
            for name, d in drivers.items():
                await d.at(*WHERE[name])
                await d.open_session()
            oid = await confirmed_order(mesh, "k-one-planner")
            who, offer = await first_offer(drivers)
            now = time.time()
            assert offer.order_id == oid

            # The same state, built by hand: the order as the store holds it, the three
            # drivers where they are; the planner replay runs, with the service's config.
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT pickup_lat, pickup_lon, dropoff_lat, dropoff_lon,"
                    " extract(epoch FROM created_at), extract(epoch FROM ready_at)"
                    " FROM fleet.assignments WHERE order_id = %s",
                    (oid,),
                )
                row = await cur.fetchone()
            assert row is not None
            plat, plon, dlat, dlon, placed, ready = (float(x) for x in row)
            order = TripOrder(oid, "rest_1", plat, plon, dlat, dlon, placed_at=placed,
                              ready_at=ready)  # fmt: skip
            cfg = EngineConfig.from_extra(mesh.settings.extra)
            free = [
                free_driver(
                    Candidate(n, *WHERE[n], acceptance=ACCEPTANCE[n]),
                    now=now,
                    expiry_s=cfg.rules.expiry_s,
                )  # fmt: skip
                for n in WHERE
            ]
            rnd = plan_trips([order], free, now=now, interval_s=cfg.batch_interval_s,
                             travel=cfg.travel(), config=cfg.trip_config())  # fmt: skip
            [plan] = rnd.plans
            assert plan.commit and plan.order_ids == (oid,)
            # One decision: the planner's driver is the one offered (not the nearest, who
            # would likely decline), with the planner's expected times and cost.
            assert who == plan.driver_id == "keen"
            delivery = offer.why.estimated_delivery_time.ToNanoseconds() / 1e9
            assert delivery == pytest.approx(plan.legs[-1].depart_at, abs=5.0)
            # The cost moves with the clock (minutes to the doors, the order's age).
            assert offer.why.cost_minutes == pytest.approx(plan.why.cost, abs=0.5)
            assert offer.why.alternatives == plan.why.alternatives == 3
