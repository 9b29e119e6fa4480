"""`foodmesh sim` against the real Catalog, Order and Location behind the real gateway.

A small city (20 restaurants, 10 drivers, customers near the centre) runs for a
few seconds at a high, flat order rate with fast kitchens: orders are placed
through the gateway, kitchens confirm them and make them ready, drivers stream
fixes; bad actors' probes all come back refused and no service logs an
unhandled error; the recorded trace loads back. With Dispatch present, a
simulated driver delivers an order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import ClientOptions, LocationClient, OrderClient
from foodmesh.sim.agents import SimConfig, Stats
from foodmesh.sim.city import CENTER, City, build_city
from foodmesh.sim.demand import distance_m
from foodmesh.sim.run import run_sim
from foodmesh.sim.seed import seed_city
from foodmesh.sim.trace import load_trace
from foodmesh.v1 import common_pb2, location_pb2
from foodmesh.v1 import order_pb2 as opb
from servers.runtime.tasks import stop_tasks
from tests.integration._gateway import gateway
from tests.integration._location import SERVICE, location_service
from tests.integration._order import order_mesh, token

NOWHERE = "127.0.0.1:1"


def small_city() -> City:
    """20 restaurants and 10 drivers; customers within 2 km of the centre, where 5 never close."""
    big = build_city(seed=11, restaurants=20, drivers=10, customers=400)
    near = tuple(c for c in big.customers if distance_m(CENTER, (c.address.lat, c.address.lon))
                 < 2000)[:60]  # fmt: skip
    return dataclasses.replace(big, customers=near)


@dataclass(slots=True)
class Platform:
    gateway: str
    location: str
    order: str
    dispatch: str | None = None


@pytest.fixture
async def platform(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   seed=False) as mesh,
        OrderClient(mesh.order.target, options=token("service", "location")) as feed,
        location_service(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, orders=feed,
                         extra={"FOODMESH_LOCATION_DISPATCH_TARGET": NOWHERE,
                                "FOODMESH_LOCATION_ETA_TARGET": NOWHERE}) as loc,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target,
                 "location": loc.target}) as http,
    ):  # fmt: skip
        await seed_city(small_city(), catalog_target=mesh.catalog.target)
        yield Platform(http.base, loc.target, mesh.order.target)


def config(p: Platform, **changes: object) -> SimConfig:
    base = SimConfig(
        gateway=p.gateway, location_target=p.location, dispatch_target=None, seed=11,
        orders_per_hour=3600.0, flat_demand=True, duration_s=10.0, shifts=False, ramp_s=1.0,
        prep_scale=0.005, travel_scale=0.05, watch_every_s=1.0, roads=False,
        declined_share=0.1, bad_share=0.0, progress_every_s=2.0,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def unhandled(records: list[logging.LogRecord]) -> list[str]:
    """Errors the services' runtime or the gateway logged as bugs."""
    return [f"{r.name}: {r.getMessage()}" for r in records
            if r.levelno >= logging.ERROR and r.name.startswith(("foodmesh.errors",
                                                                "foodmesh.gateway"))]  # fmt: skip


async def test_a_short_simulation_places_cooks_and_tracks_through_the_platform(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    trace_path = tmp_path / "day.json"
    result = await run_sim(config(platform), record=trace_path, city=small_city())
    c = result.stats.counts
    assert c["placed"] >= 3, result.stats.as_json()
    assert c["confirmed"] >= 2 and c["preparing"] >= 1 and c["ready"] >= 1, result.stats.as_json()
    assert c["fixes_accepted"] >= 10, result.stats.as_json()
    assert result.stats.errors.get("agent_crash_AssertionError", 0) == 0
    assert not [k for k in result.stats.errors if k.startswith(("http_5", "agent_crash"))], (
        result.stats.as_json()
    )
    assert unhandled(caplog.records) == []

    # the drivers are where the platform says they are
    async with LocationClient(platform.location, options=_service()) as loc:
        got = await loc.get_driver_location(
            location_pb2.GetDriverLocationRequest(driver_id="drv_00000")
        )
    assert distance_m(CENTER, (got.position.lat, got.position.lon)) < 15_000

    trace = load_trace(trace_path)
    assert len(trace.couriers) == 10
    assert len(trace.orders) == result.orders_recorded >= 3
    assert all(o.ready_s >= o.placed_s for o in trace.orders)
    assert {o.restaurant_id for o in trace.orders} <= {r.id for r in trace.restaurants}


def _service() -> ClientOptions:
    return ClientOptions(metadata=SERVICE)


async def test_bad_actors_are_refused_and_nothing_crashes(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    result = await run_sim(config(platform, bad_share=0.5, duration_s=7.0,
                                  orders_per_hour=5400.0), city=small_city())  # fmt: skip
    s = result.stats
    assert sum(s.defended.values()) >= 3, s.as_json()
    assert s.defended["malformed_fix"] >= 1, s.as_json()
    assert dict(s.breached) == {}, s.as_json()
    assert not [k for k in s.errors if k.startswith(("http_5", "agent_crash"))], s.as_json()
    assert unhandled(caplog.records) == []


@pytest.fixture
async def platform_with_dispatch(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    from servers import dispatch
    from servers.runtime.migrate import load_migrations, migrate
    from servers.runtime.serve import run_service
    from tests.integration._dispatch import dispatch_settings

    assert dispatch.SPEC.migrations is not None
    await migrate(pg_url, service="dispatch", migrations=load_migrations(dispatch.SPEC.migrations))
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   seed=False) as mesh,
        OrderClient(mesh.order.target, options=token("service", "location")) as feed,
        location_service(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, orders=feed,
                         extra={"FOODMESH_LOCATION_DISPATCH_TARGET": NOWHERE,
                                "FOODMESH_LOCATION_ETA_TARGET": NOWHERE}) as loc,
        run_service(dispatch.SPEC, dispatch_settings(
            pg_url=pg_url, nats_url=nats_url, namespace=namespace, location=loc.target,
            order=mesh.order.target)) as dsp,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target,
                 "location": loc.target, "dispatch": dsp.target}) as http,
    ):  # fmt: skip
        await seed_city(small_city(), catalog_target=mesh.catalog.target,
                        dispatch_target=dsp.target)  # fmt: skip
        yield Platform(http.base, loc.target, mesh.order.target, dsp.target)


@pytest.mark.skipif(
    importlib.util.find_spec("servers.dispatch.service") is None,
    reason="the Dispatch service is not in this checkout yet",
)
async def test_with_dispatch_a_simulated_driver_delivers_an_order(
    platform_with_dispatch: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    p = platform_with_dispatch
    stats = Stats()
    stop = asyncio.Event()

    async def until_delivered() -> None:
        while True:
            await asyncio.sleep(0.2)
            if stats.counts["delivered"] >= 1:
                stop.set()
                return

    watcher = asyncio.create_task(until_delivered())
    try:
        result = await run_sim(
            config(p, dispatch_target=p.dispatch, duration_s=45.0, orders_per_hour=1800.0,
                   travel_scale=0.005, stop_s=60.0, silent_share=0.0, declined_share=0.0),
            city=small_city(), stats=stats, stop=stop,
        )  # fmt: skip
    finally:
        await stop_tasks([watcher])
    c = result.stats.counts
    assert c["offers"] >= 1 and c["offers_accepted"] >= 1, result.stats.as_json()
    assert c["delivered"] >= 1, result.stats.as_json()
    async with OrderClient(p.order, options=token("ops", "ops")) as ops:
        done = await ops.list_orders(
            opb.ListOrdersRequest(status=[common_pb2.ORDER_STATUS_DELIVERED], page_size=10)
        )
    assert done.orders and all(o.driver_id.startswith("drv_") for o in done.orders)
    assert not [k for k in result.stats.errors if k.startswith(("http_5", "agent_crash"))], (
        result.stats.as_json()
    )
    assert unhandled(caplog.records) == []
