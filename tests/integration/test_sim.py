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
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients import ClientOptions, LocationClient, OrderClient
from foodmesh.core.tasks import stop_tasks
from foodmesh.sim.agents import SimConfig, Stats
from foodmesh.sim.city import CENTER, City, CustomerSpec
from foodmesh.sim.demand import distance_m
from foodmesh.sim.run import format_progress, run_sim
from foodmesh.sim.trace import load_trace
from foodmesh.v1 import common_pb2, location_pb2
from foodmesh.v1 import order_pb2 as opb
from tests.integration._location import SERVICE
from tests.integration._order import token
from tests.integration._platform import Platform, small_city
from tests.integration._platform import platform as run_platform


@pytest.fixture
async def platform(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    async with run_platform(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                            namespace=namespace, state_dir=tmp_path) as p:  # fmt: skip
        yield p


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


async def test_two_runs_of_one_seed_place_the_same_orders(
    platform: Platform, tmp_path: Path
) -> None:
    # Each arrival draws from its own stream: a second run (another run id, its own
    # order keys) places the same customers' orders at the same restaurants, so two
    # platforms fed one seed compare on the same orders.
    def placed(path: Path) -> list[tuple[str, float, float]]:
        return sorted((o.restaurant_id, round(o.dropoff_lat, 6), round(o.dropoff_lon, 6))
                      for o in load_trace(path).orders)  # fmt: skip

    runs = []
    for name in ("one", "two"):
        await run_sim(config(platform, duration_s=6.0), record=tmp_path / f"{name}.json",
                      city=small_city())  # fmt: skip
        runs.append(placed(tmp_path / f"{name}.json"))
    # The same orders, but for one still being placed when a run ended.
    one, two = Counter(runs[0]), Counter(runs[1])
    assert len(runs[0]) >= 3
    assert (one & two).total() >= max(len(runs[0]), len(runs[1])) - 1, (runs[0], runs[1])
    other = await run_sim(config(platform, duration_s=6.0, seed=12),
                          record=tmp_path / "other.json", city=small_city())  # fmt: skip
    assert other.orders_recorded >= 3
    assert (one & Counter(placed(tmp_path / "other.json"))).total() <= len(runs[0]) // 2


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
    async with run_platform(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                            namespace=namespace, state_dir=tmp_path,
                            with_dispatch=True) as p:  # fmt: skip
        yield p


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


async def test_the_city_cooks_and_delivers_an_order_a_person_placed(
    platform_with_dispatch: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody simulated orders; a person does (as on the customer page): the simulated
    kitchens take it up, a simulated driver is offered it and delivers it."""
    caplog.set_level(logging.WARNING)
    p = platform_with_dispatch
    city = small_city()
    person = city.customers[0]
    stop = asyncio.Event()
    sim = asyncio.create_task(run_sim(
        config(p, dispatch_target=p.dispatch, duration_s=0.0, orders_per_hour=0.0,
               travel_scale=0.005, stop_s=60.0, silent_share=0.0),
        city=city, stop=stop,
    ))  # fmt: skip
    try:
        async with OrderClient(p.order, options=token("customer", person.customer_id)) as me:
            order_id = await place_somewhere(me, city, person)
            status = common_pb2.ORDER_STATUS_PLACED
            async with asyncio.timeout(90):
                while status != common_pb2.ORDER_STATUS_DELIVERED:
                    await asyncio.sleep(0.5)
                    got = await me.get_order(opb.GetOrderRequest(order_id=order_id))
                    status = got.order.status
        assert got.order.driver_id.startswith("drv_")
        steps = [e.status for e in got.order.timeline]
        assert steps[:4] == [common_pb2.ORDER_STATUS_PLACED, common_pb2.ORDER_STATUS_CONFIRMED,
                             common_pb2.ORDER_STATUS_PREPARING,
                             common_pb2.ORDER_STATUS_READY_FOR_PICKUP], steps  # fmt: skip
    finally:
        stop.set()
        result = await sim
    assert result.stats.counts["adopted"] == 1, result.stats.as_json()
    assert result.stats.counts["placed"] == 0  # the simulated customers placed nothing
    assert unhandled(caplog.records) == []


async def place_somewhere(client: OrderClient, city: City, person: CustomerSpec) -> str:
    """Places an order at the nearest restaurant that takes it (open, delivering there)."""
    here = (person.address.lat, person.address.lon)
    for spec in sorted(city.restaurants, key=lambda r: distance_m(here, r.location)):
        item = next(i for c in spec.menu for i in c.items if i.available)
        try:
            reply = await client.place_order(opb.PlaceOrderRequest(
                idempotency_key=f"person-{spec.restaurant_id}", restaurant_id=spec.restaurant_id,
                items=[opb.OrderItemInput(item_id=item.item_id, quantity=4)],
                delivery_address=person.address, payment_method_id="pm_card_visa",
            ))  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.INVALID_ARGUMENT):  # fmt: skip
                continue  # closed, or not delivering to this address
            raise
        return reply.order.order_id
    raise AssertionError("no restaurant of the city takes an order to the person's address")


async def test_the_city_exercises_auto_confirm_the_confirmation_timeout_and_escalation(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Kitchens hear their orders on their feeds; some confirm by themselves, some never
    (the platform cancels those); no driver works, so Dispatch escalates what is confirmed.
    The progress line counts each."""
    caplog.set_level(logging.WARNING)
    # Every kitchen open whatever the hour: at night only the five 24-hour diners take
    # orders, and with this seed none of them is absent (no timeout to see: a CI failure).
    city = small_city(always_open=20)
    async with run_platform(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
        state_dir=tmp_path, with_dispatch=True, city=city,
        order_extra={"FOODMESH_ORDER_CONFIRM_TIMEOUT_S": "1",
                     "FOODMESH_ORDER_SWEEP_EVERY_S": "0.2"},
        dispatch_extra={"FOODMESH_DISPATCH_NO_DRIVER_AFTER_S": "1",
                        "FOODMESH_DISPATCH_ESCALATION_EVERY_S": "0.2"},
    ) as p:  # fmt: skip
        stats = Stats()
        stop = asyncio.Event()

        async def until_all_seen() -> None:
            c = stats.counts
            while True:
                await asyncio.sleep(0.2)
                if c["auto_confirmed"] and c["confirm_timeout"] and c["no_driver"]:
                    stop.set()
                    return

        watcher = asyncio.create_task(until_all_seen())
        try:
            result = await run_sim(
                config(p, dispatch_target=None, duration_s=40.0, orders_per_hour=7200.0,
                       auto_confirm_share=0.45, absent_kitchen_share=0.45, declined_share=0.0,
                       cancel_share=0.0),
                city=city, stats=stats, stop=stop,
            )  # fmt: skip
        finally:
            await stop_tasks([watcher])
    c = result.stats.counts
    assert c["auto_confirmed"] >= 1 and c["confirm_timeout"] >= 1, result.stats.as_json()
    assert c["no_driver"] >= 1 and c["adopted"] == 0, result.stats.as_json()
    line = format_progress(result.stats)
    assert "auto_confirmed" in line and "confirm_timeout" in line and "no_driver" in line
    assert not [k for k in result.stats.errors if k.startswith(("http_5", "agent_crash"))], (
        result.stats.as_json()
    )
    assert unhandled(caplog.records) == []
