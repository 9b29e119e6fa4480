"""Kitchen-timed offers on the city's road times: ETA's driver→restaurant time sets the release."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients import EtaClient
from foodmesh.core.geo import haversine_m
from foodmesh.v1 import common_pb2, eta_pb2
from servers.dispatch.roadtimes import RoadTimes
from servers.dispatch.scoring import DETOUR, SPEED_MPS
from servers.dispatch.trips import FreeDriver, TravelRule, TripOrder
from tests.integration._dispatch import (
    REST,
    DispatchMesh,
    Driver,
    confirmed_order,
    dispatch_mesh,
    held_for,
    upsert,
)
from tests.integration._order import token
from tests.integration.test_dispatch_routes import eta_service

pytestmark = pytest.mark.timeout(120)

MARGIN_S = 60.0
LatLon = tuple[float, float]
# The driver, ~3 km south-west of the restaurant across the grid, on the road graph.
AWAY = (37.7580, -122.4380)


def line_s(speed_mps: float = SPEED_MPS[0] / DETOUR) -> float:
    """The straight line's time from the driver to the restaurant (at the planner's default
    speed, or ``speed_mps``)."""
    return haversine_m(*AWAY, *REST) / speed_mps


async def road_time(
    eta: EtaClient, vehicle: common_pb2.VehicleType.ValueType, a: LatLon, b: LatLon
) -> eta_pb2.TravelTime:
    """ETA's answer for the drive from ``a`` to ``b`` in ``vehicle``."""
    leg = eta_pb2.TravelLeg(origin=common_pb2.LatLng(lat=a[0], lon=a[1]),
                            destination=common_pb2.LatLng(lat=b[0], lon=b[1]))  # fmt: skip
    got = await eta.estimate_travel_times(
        eta_pb2.EstimateTravelTimesRequest(legs=[leg], vehicle_type=vehicle)
    )
    (answer,) = got.travel_times
    return answer


async def test_an_order_is_released_by_the_drivers_road_time_from_eta_not_the_straight_line(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta_at,
        EtaClient(eta_at, options=token("ops", "ops")) as eta,
    ):  # fmt: skip
        # What ETA says the drive takes (its traffic follows the city's clock: 243 s at
        # night, 480 s in the morning rush), and a straight line set 5 minutes slower, so
        # the test tells which one set the release at any hour.
        road = await road_time(eta, common_pb2.VEHICLE_TYPE_UNSPECIFIED, AWAY, REST)
        assert road.source == eta_pb2.ESTIMATE_SOURCE_ROAD_GRAPH
        road_s = road.duration_seconds
        line = road_s + 300.0
        speed = haversine_m(*AWAY, *REST) / line
        assert abs(line_s(speed) - line) < 0.01
        async with dispatch_mesh(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
            extra={"FOODMESH_DISPATCH_ETA_TARGET": eta_at,
                   "FOODMESH_DISPATCH_KITCHEN_RELEASE_S": str(MARGIN_S),
                   "FOODMESH_DISPATCH_SPEED_MPS": repr(speed)},
        ) as mesh:  # fmt: skip
            await upsert(mesh, "away")
            await _released_by(mesh, pg_url, road_s=road_s, line=line)


async def _released_by(mesh: DispatchMesh, pg_url: str, *, road_s: float, line: float) -> None:
    """The order is held until the road time plus the margin before its food, not the line's
    (the driver "away", upserted)."""
    async with Driver(mesh, "away") as d:
        await d.at(*AWAY)
        await d.open_session()
        oid = await confirmed_order(mesh, "k-road")
        # Released the road time plus the margin before the food, not the line's (a round
        # ETA misses its deadline keeps the line: the next ones correct it).
        for _ in range(50):
            status, offers, ready_in, before_ready = await held_for(pg_url, oid)
            if abs(before_ready - (road_s + MARGIN_S)) <= 5.0:
                break
            await asyncio.sleep(0.2)
        assert (status, offers) == ("pending", 0)
        assert ready_in > road_s + MARGIN_S + 30  # still held, not yet due
        assert before_ready == pytest.approx(road_s + MARGIN_S, abs=5.0), (
            before_ready, road_s, line)  # fmt: skip


async def test_with_eta_away_the_straight_line_still_times_the_release(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        # Port 1 refuses at once: an ETA service that is configured but away.
        extra={"FOODMESH_DISPATCH_ETA_TARGET": "127.0.0.1:1",
               "FOODMESH_DISPATCH_KITCHEN_RELEASE_S": str(MARGIN_S)},
    ) as mesh:  # fmt: skip
        await upsert(mesh, "away")
        async with Driver(mesh, "away") as d:
            await d.at(*AWAY)
            await d.open_session()
            oid = await confirmed_order(mesh, "k-road-away")
            status, offers, _, before_ready = await held_for(pg_url, oid)
            assert (status, offers) == ("pending", 0)
            assert before_ready == pytest.approx(line_s() + MARGIN_S, abs=5.0)


async def test_a_bicycle_is_released_by_its_own_road_time_and_paced_to_the_doors(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta_at,
        EtaClient(eta_at, options=token("ops", "ops")) as eta,
    ):  # fmt: skip

        async def road(vehicle: common_pb2.VehicleType.ValueType, a: LatLon, b: LatLon) -> float:
            return float((await road_time(eta, vehicle, a, b)).duration_seconds)

        bike, car = common_pb2.VEHICLE_TYPE_BICYCLE, common_pb2.VEHICLE_TYPE_CAR
        bike_s, car_s = await road(bike, AWAY, REST), await road(car, AWAY, REST)
        assert bike_s > car_s + 60.0  # 1.7 times the free flow: minutes more than a car

        # The planner's pace: a vehicle's road time to the pool's doors per second of the
        # straight line, from ETA.
        travel = TravelRule(speed_mps=SPEED_MPS[0] / DETOUR)
        times = RoadTimes(eta)
        orders = [TripOrder("o1", "r", *REST, *AWAY, placed_at=0.0, ready_at=600.0)]
        drivers = [FreeDriver("b", *REST, free_at=0.0, vehicle=bike),
                   FreeDriver("c", *REST, free_at=0.0, vehicle=car)]  # fmt: skip
        paces = await times.paces(orders, drivers, travel)
        line = travel.seconds(haversine_m(*REST, *AWAY))
        assert paces[bike] == pytest.approx(await road(bike, REST, AWAY) / line, rel=1e-3)
        assert paces[car] == pytest.approx(await road(car, REST, AWAY) / line, rel=1e-3)
        assert paces[bike] > paces[car]

        async with dispatch_mesh(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
            extra={"FOODMESH_DISPATCH_ETA_TARGET": eta_at,
                   "FOODMESH_DISPATCH_KITCHEN_RELEASE_S": str(MARGIN_S)},
        ) as mesh:  # fmt: skip
            # The cyclist is released by the bicycle's road time, not the car's.
            await upsert(mesh, "away", vehicle="Trek FX", vehicle_type=bike)
            await _released_by(mesh, pg_url, road_s=bike_s, line=line_s())
