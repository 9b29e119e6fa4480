"""The simulated city's drivers carry two orders of one restaurant in one trip, and finish
the whole trip when their session is cut halfway (a Dispatch restart, as the soak does)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients import OrderClient
from foodmesh.sim.agents import SimConfig
from foodmesh.sim.city import City
from foodmesh.sim.demand import distance_m
from foodmesh.sim.run import run_sim
from foodmesh.soak.proxy import Route, serve
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as opb
from tests.integration._fleet import rows
from tests.integration._order import token
from tests.integration._platform import platform, small_city

pytestmark = pytest.mark.timeout(180)


def _config(gateway: str, location: str, dispatch: str, *, prep_scale: float) -> SimConfig:
    """A city that places no orders of its own, with fast kitchens and roads."""
    return SimConfig(
        gateway=gateway, location_target=location, dispatch_target=dispatch, seed=11,
        orders_per_hour=0.0, flat_demand=True, duration_s=0.0, shifts=False, ramp_s=1.0,
        prep_scale=prep_scale, travel_scale=0.01, watch_every_s=1.0, roads=False,
        declined_share=0.0, bad_share=0.0, silent_share=0.0, stop_s=60.0,
        progress_every_s=2.0,
    )  # fmt: skip


async def _two_orders_of_one_restaurant(
    order_target: str, city: City, *, key: str
) -> list[tuple[OrderClient, str]]:
    """The city's first two customers each order from the restaurant nearest the first."""
    a, b = city.customers[0], city.customers[1]
    here = (a.address.lat, a.address.lon)
    rest = min(city.restaurants, key=lambda r: distance_m(here, r.location))
    item = next(i for c in rest.menu for i in c.items if i.available)
    placed: list[tuple[OrderClient, str]] = []
    for who in (a, b):
        c = OrderClient(order_target, options=token("customer", who.customer_id))
        got = await c.place_order(opb.PlaceOrderRequest(
            idempotency_key=f"{key}-{who.customer_id}", restaurant_id=rest.restaurant_id,
            items=[opb.OrderItemInput(item_id=item.item_id, quantity=2)],
            delivery_address=who.address, payment_method_id="pm_card_visa",
        ))  # fmt: skip
        placed.append((c, got.order.order_id))
    return placed


async def _all_delivered(placed: list[tuple[OrderClient, str]]) -> list[opb.Order]:
    """The orders once every one is delivered (two minutes at most)."""
    async with asyncio.timeout(120):
        while True:
            got = [(await c.get_order(opb.GetOrderRequest(order_id=o))).order for c, o in placed]
            if all(o.status == common_pb2.ORDER_STATUS_DELIVERED for o in got):
                return got
            await asyncio.sleep(0.5)


async def test_one_simulated_driver_delivers_two_orders_of_one_restaurant_in_one_trip(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    base = small_city()
    city = dataclasses.replace(base, drivers=base.drivers[:1])
    async with platform(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                        namespace=namespace, state_dir=tmp_path, with_dispatch=True, city=city,
                        dispatch_extra={"FOODMESH_DISPATCH_MAX_ORDERS": "2"}) as p:  # fmt: skip
        stop = asyncio.Event()
        sim = asyncio.create_task(
            run_sim(_config(p.gateway, p.location, p.dispatch or "", prep_scale=0.02),
                    city=city, stop=stop)
        )  # fmt: skip
        try:
            placed = await _two_orders_of_one_restaurant(p.order, city, key="trip")
            got_all = await _all_delivered(placed)
            assert {o.driver_id for o in got_all} == {city.drivers[0].driver_id}
            for client, _ in placed:
                await client.close()
        finally:
            stop.set()
            result = await sim
    counts = result.stats.counts
    assert counts["stacked"] == 1 and counts["delivered"] == 2, result.stats.as_json()


@contextlib.asynccontextmanager
async def _cuttable(target: str, control: Path,
                    capsys: pytest.CaptureFixture[str]) -> AsyncIterator[str]:  # fmt: skip
    """The soak's fault proxy in front of ``target``: yields the address to dial instead."""
    await asyncio.to_thread(control.write_text, "{}")
    stop = asyncio.Event()
    routes = {"dispatch": Route(name="dispatch", upstream_port=int(target.rsplit(":", 1)[1]))}
    task = asyncio.create_task(serve(routes, control, stop=stop))
    try:
        while True:  # serve prints its ports, then listens
            out = capsys.readouterr().out
            if out:
                break
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{json.loads(out.splitlines()[0])['dispatch']}"
    finally:
        stop.set()
        await task


async def test_a_two_order_trip_is_finished_whole_after_the_drivers_session_is_cut(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Every Dispatch connection reset while the driver holds two orders of one trip.

    The reconnected session names one assignment (the one worked on next) and the trip's
    stops: the driver must carry on with both, or the other order is left at the counter
    or in the car (the soak's orders stuck in transit or ready for pickup).
    """
    caplog.set_level(logging.WARNING)
    base = small_city()
    city = dataclasses.replace(base, drivers=base.drivers[:1])
    driver = city.drivers[0].driver_id
    async with (
        platform(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                 state_dir=tmp_path, with_dispatch=True, city=city,
                 dispatch_extra={"FOODMESH_DISPATCH_MAX_ORDERS": "2"}) as p,
        _cuttable(p.dispatch or "", tmp_path / "cut.json", capsys) as through,
    ):  # fmt: skip
        stop = asyncio.Event()
        sim = asyncio.create_task(
            run_sim(_config(p.gateway, p.location, through, prep_scale=0.05), city=city, stop=stop)
        )
        try:
            placed = await _two_orders_of_one_restaurant(p.order, city, key="cut")
            ids = [o for _, o in placed]
            held = ("SELECT status FROM fleet.assignments"
                    " WHERE driver_id = %s AND order_id = ANY(%s)")  # fmt: skip
            async with asyncio.timeout(60):  # both on the driver's trip, not yet delivered
                while True:
                    statuses = [str(s) for (s,) in await rows(pg_url, held, driver, ids)]
                    if len(statuses) == 2 and "delivered" not in statuses:
                        break
                    await asyncio.sleep(0.05)
            (tmp_path / "cut.json").write_text(json.dumps({"cut": {"dispatch": 1}}))
            got_all = await _all_delivered(placed)
            assert {o.driver_id for o in got_all} == {driver}
            for client, _ in placed:
                await client.close()
        finally:
            stop.set()
            result = await sim
    counts = result.stats.counts
    # Whether the simulated driver counts the second order's stacked offer as taken depends
    # on timing around the cut (a CI run on a loaded machine counted 2 offers, 1 taken, with
    # both orders on the driver's trip and delivered): what matters is one trip, resumed
    # whole, both delivered by its driver.
    assert counts["delivered"] == 2 and counts["stacked"] <= 1, result.stats.as_json()
    assert counts["trips_resumed"] == 1, result.stats.as_json()
