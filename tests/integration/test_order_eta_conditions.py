"""ETA live conditions end to end: Pricing's surge of the restaurant's cell (free drivers,
the weather kind, the event factor) kept with the order at placement, sent with its estimates."""

from __future__ import annotations

from pathlib import Path

import grpc
import psycopg
import pytest

from clients import OrderClient
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from foodmesh.v1 import pricing_pb2 as ppb
from tests.integration._fleet import eventually
from tests.integration._location import DriverApp, fix
from tests.integration._order import REST, place_request, token
from tests.integration._pricing import REST_CELL, pricing_mesh
from tests.integration.test_dispatch_routes import eta_service
from tests.integration.test_eta_service import estimate_request, eta_client, violations

pytestmark = pytest.mark.integration
RAIN = common_pb2.WEATHER_KIND_HEAVY_RAIN


async def _kept(pg_url: str, order_id: str) -> tuple[object, ...]:
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        cur = await c.execute(
            "SELECT eta_drivers_nearby, eta_weather, eta_event_multiplier FROM orders.orders"
            " WHERE order_id = %s", (order_id,))  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def _stages(pg_url: str, order_id: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        cur = await c.execute("SELECT stage FROM orders.eta_estimates WHERE order_id = %s",
                              (order_id,))  # fmt: skip
        return {r[0] for r in await cur.fetchall()}


async def test_an_order_keeps_its_restaurant_cells_conditions_and_is_estimated_with_them(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    common = dict(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace)
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta,
        pricing_mesh(state_dir=tmp_path, order_extra={"FOODMESH_ORDER_ETA_TARGET": eta},
                     **common) as mesh,  # type: ignore[arg-type]
        mesh.client("ops", "ops") as ops,
        mesh.orders("cust_1") as me,
        OrderClient(mesh.order.target, options=token("restaurant", "rest_1")) as kitchen,  # type: ignore[union-attr]
    ):  # fmt: skip
        assert mesh.location is not None
        # Heavy rain over the restaurant's cell and a 20,000-seat game next door (factor 1.5).
        game = ppb.LocalEvent(event_id="game", attendance=20_000,
                              location=common_pb2.LatLng(lat=REST[0], lon=REST[1]))  # fmt: skip
        rain = ppb.WeatherCondition(area=REST_CELL, kind=RAIN)
        await ops.set_conditions(ppb.SetConditionsRequest(events=[game], weather=[rain]))
        d1, d2 = DriverApp(mesh.location.target, "d1"), DriverApp(mesh.location.target, "d2")
        async with d1, d2:
            await d1.send(fix(REST[0] + 0.001, REST[1]))
            await d2.send(fix(REST[0], REST[1] + 0.001))
            at_rest = ppb.GetSurgeRequest(lat=REST[0], lon=REST[1])

            async def two_free() -> bool:
                return (await ops.get_surge(at_rest)).surge.supply == 2

            await eventually(two_free, 10, "both drivers counted in the restaurant's cell")
            s = (await ops.get_surge(at_rest)).surge
            # Pricing names the weather kind in force beside its factor.
            assert (s.cell, s.weather, s.weather_multiplier, s.event_multiplier) == (
                REST_CELL, RAIN, 1.5, 1.5)  # fmt: skip

            placed = (await me.place_order(place_request("k1"))).order
            oid = placed.order_id
            # Kept with the order, in the placement's own transaction: the row has them at once.
            assert await _kept(pg_url, oid) == (2, RAIN, 1.5)

            # The weather cleared and the game over: a new order keeps that; the first
            # keeps what it was placed under (its re-estimates send the same).
            await ops.set_conditions(ppb.SetConditionsRequest())

            async def calm() -> bool:
                got = (await ops.get_surge(at_rest)).surge
                return got.weather == 0 and got.event_multiplier == 1.0 and got.supply == 2

            await eventually(calm, 10, "the conditions cleared")
            later = (await me.place_order(place_request("k2"))).order
            assert await _kept(pg_url, later.order_id) == (2, 0, 1.0)
        # A real ETA service took the placement's request carrying them (a field it refused
        # would have failed the placement) and, from the kept row, the confirmation's.
        await kitchen.update_order_status(pb.UpdateOrderStatusRequest(
            order_id=oid, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip

        async def both() -> bool:
            return {"placement", "confirmation"} <= await _stages(pg_url, oid)

        await eventually(both, 10, "the placement's and confirmation's estimates")
        assert await _kept(pg_url, oid) == (2, RAIN, 1.5)


async def test_estimate_delivery_refuses_bad_conditions_by_field(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.estimate_delivery(estimate_request(drivers_nearby=-1, event_multiplier=10.5))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {"drivers_nearby", "event_multiplier"} <= set(violations(e.value))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.estimate_delivery(estimate_request(event_multiplier=float("nan")))
        assert set(violations(e.value)) == {"event_multiplier"}
        # In range (0 drivers is known, not unknown; 0 as the factor means "not sent").
        for ok in ({"drivers_nearby": 0, "event_multiplier": 1.8}, {"event_multiplier": 0.0}):
            got = await c.estimate_delivery(estimate_request(**ok))
            assert got.total_minutes > 0
