"""The ETA service through gRPC on real Redis, with a small model trained on generated history."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients import ClientOptions, EtaClient
from foodmesh.roads import RoadGraph, decode_polyline
from foodmesh.sim import history
from foodmesh.v1 import common_pb2, eta_pb2
from servers import eta
from servers.eta.reroute import deviation_m
from servers.eta.training import TrainConfig, TrainResult, train
from servers.runtime.config import Settings
from servers.runtime.serve import run_service
from tests.integration._location import FreshServiceToken

pytestmark = pytest.mark.integration

SERVICE = FreshServiceToken()
ES = eta_pb2.EstimateSource
SEED_POINT = (37.7749, -122.4194)
RESTAURANT = (37.7790, -122.4140)
CUSTOMER = (37.7600, -122.4350)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    h = history.generate(RoadGraph.default(), orders=3000, seed=11, restaurants=30,
                         progress=lambda _: None)  # fmt: skip
    out = tmp_path_factory.mktemp("trained")
    return train(h, out_dir=out, config=TrainConfig(rounds=60, nthread=1), progress=lambda _: None)


@asynccontextmanager
async def eta_client(
    *, redis_url: str, namespace: str, model_dir: Path, extra: dict[str, str] | None = None
) -> AsyncIterator[EtaClient]:
    settings = Settings(
        service="eta",
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.2,
        shutdown_grace_s=1.0,
        extra={
            "FOODMESH_ETA_MODEL_DIR": str(model_dir),
            "FOODMESH_ETA_MODEL_POLL_S": "0.1",
            **(extra or {}),
        },
    )
    async with run_service(eta.SPEC, settings) as running:
        client = EtaClient(running.target, options=ClientOptions(metadata=SERVICE))
        try:
            yield client
        finally:
            await client.close()


def ll(p: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=p[0], lon=p[1])


def estimate_request(**kw: object) -> eta_pb2.EstimateDeliveryRequest:
    req = eta_pb2.EstimateDeliveryRequest(
        restaurant_id="rest_00003",
        restaurant_location=ll(RESTAURANT),
        delivery_location=ll(CUSTOMER),
        item_count=3,
        subtotal=common_pb2.Money(amount_minor=4200, currency_code="USD"),
        weather=common_pb2.WEATHER_KIND_CLEAR,
        restaurant_active_orders=4,
    )
    for k, v in kw.items():
        if isinstance(v, common_pb2.LatLng):
            getattr(req, k).CopyFrom(v)
        else:
            setattr(req, k, v)
    return req


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            found.update({v.field: v.description for v in br.field_violations})
    return found


async def eventually(check: object, *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_estimate_delivery_with_a_trained_model_reports_parts_that_add_up(
    trained: TrainResult, redis_url: str, namespace: str
) -> None:
    assert trained.path is not None
    async with eta_client(redis_url=redis_url, namespace=namespace,
                          model_dir=trained.path.parent) as c:  # fmt: skip
        r = await c.estimate_delivery(estimate_request())
        assert r.source == ES.ESTIMATE_SOURCE_MODEL
        assert r.model_version == trained.model.version
        assert r.prep_minutes > 0 and r.delivery_minutes > 0 and r.pickup_minutes > 0
        assert r.total_minutes == pytest.approx(
            r.prep_minutes + r.pickup_minutes + r.delivery_minutes, abs=1e-6
        )
        assert r.lower_minutes < r.total_minutes < r.upper_minutes
        assert 0 < r.eta_confidence < 1
        arrival = r.estimated_delivery_time.seconds - time.time()
        assert arrival == pytest.approx(r.total_minutes * 60, abs=5)

        # A driver already there: pickup is the counter; confidence rises (driver known).
        near = await c.estimate_delivery(
            estimate_request(
                driver_location=ll(RESTAURANT),
                driver_id="drv_00001",
                vehicle_type=common_pb2.VEHICLE_TYPE_CAR,
            )  # fmt: skip
        )
        assert near.pickup_minutes < r.pickup_minutes + 3
        assert near.eta_confidence != r.eta_confidence
        # Picked up: only the drive from where the driver is remains.
        gone = await c.estimate_delivery(
            estimate_request(
                driver_location=ll(SEED_POINT), order_status=common_pb2.ORDER_STATUS_PICKED_UP
            )  # fmt: skip
        )
        assert gone.prep_minutes == 0 and gone.pickup_minutes == 0
        assert gone.total_minutes == pytest.approx(gone.delivery_minutes)
        # A bigger, busier order takes longer to cook.
        big = await c.estimate_delivery(
            estimate_request(item_count=12, restaurant_active_orders=20)
        )
        assert big.prep_minutes > r.prep_minutes

        # What the Order service sends (servers/order/eta.py) gets an answer.
        req = eta_pb2.EstimateDeliveryRequest(
            restaurant_id="rest_00001", restaurant_location=ll(RESTAURANT),
            delivery_location=ll(CUSTOMER), item_count=2,
            subtotal=common_pb2.Money(amount_minor=2500, currency_code="USD"),
        )  # fmt: skip
        req.order_time.GetCurrentTime()
        o = await c.estimate_delivery(req, deadline_s=2.0)
        assert o.total_minutes > o.prep_minutes > 0


async def test_route_is_cached_in_redis_after_the_first_call(
    redis_url: str, namespace: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        req = eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=ll(CUSTOMER),
                                   include_steps=True)  # fmt: skip
        first = await c.route(req)
        assert not first.cached and first.source == ES.ESTIMATE_SOURCE_ROAD_GRAPH
        keys = [k async for k in redis_client.scan_iter(match=f"{namespace}:eta:route:*")]
        assert len(keys) == 1
        ttl = await redis_client.pttl(keys[0])
        assert 0 < ttl <= 300_000
        second = await c.route(req)
        assert second.cached
        assert second.polyline == first.polyline
        assert second.duration_seconds == pytest.approx(first.duration_seconds)
        assert [s.street_name for s in second.steps] == [s.street_name for s in first.steps]
        assert first.steps[0].maneuver == eta_pb2.MANEUVER_DEPART
        assert first.steps[-1].maneuver == eta_pb2.MANEUVER_ARRIVE
        path = decode_polyline(first.polyline)
        assert path[0] == pytest.approx(RESTAURANT, abs=0.01)
        assert 0.5 <= first.traffic_multiplier <= 2.5  # the hour's (night is below 1)
        # A point a few metres away snaps to the same road point: the same cache entry.
        nudged = eta_pb2.RouteRequest(origin=ll((RESTAURANT[0] + 2e-6, RESTAURANT[1])),
                                      destination=ll(CUSTOMER))  # fmt: skip
        assert (await c.route(nudged)).cached
        # A bicycle is slower on the same path.
        bike = await c.route(eta_pb2.RouteRequest(
            origin=ll(RESTAURANT), destination=ll(CUSTOMER),
            vehicle_type=common_pb2.VEHICLE_TYPE_BICYCLE))  # fmt: skip
        assert bike.duration_seconds > first.duration_seconds * 0.9


async def test_replicas_share_routes_through_redis_and_keep_recent_ones_in_memory(
    redis_url: str, namespace: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    req = eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=ll(CUSTOMER))
    common = dict(redis_url=redis_url, namespace=namespace, model_dir=tmp_path)
    async with eta_client(**common) as a, eta_client(**common) as b:  # type: ignore[arg-type]
        assert not (await a.route(req)).cached
        assert (await b.route(req)).cached  # computed by the other replica, found in Redis
        async for key in redis_client.scan_iter(match=f"{namespace}:eta:route:*"):
            await redis_client.delete(key)
        # Redis lost it (evicted, flushed): each replica still has it in memory ...
        assert (await a.route(req)).cached and (await b.route(req)).cached
    async with eta_client(**common) as c:  # type: ignore[arg-type]
        # ... but a new replica has only Redis to ask, and computes it again.
        assert not (await c.route(req)).cached


async def test_no_model_serves_the_baseline_then_hot_loads_a_new_model_and_refuses_a_corrupt_one(
    trained: TrainResult, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    assert trained.path is not None
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        r = await c.estimate_delivery(estimate_request())
        assert r.model_version == "baseline" and r.source == ES.ESTIMATE_SOURCE_ROAD_GRAPH
        assert r.total_minutes == pytest.approx(
            r.prep_minutes + r.pickup_minutes + r.delivery_minutes
        )

        shutil.copy(trained.path, tmp_path / trained.path.name)

        async def loaded() -> bool:
            got = await c.estimate_delivery(estimate_request())
            return got.model_version == trained.model.version

        await eventually(loaded)

        # A newer file that is corrupt is refused; the loaded model stays in service.
        (tmp_path / "eta-29990101T000000000000Z.json").write_text('{"format": "foodmesh-')
        await asyncio.sleep(0.5)  # several polls
        after = await c.estimate_delivery(estimate_request())
        assert after.model_version == trained.model.version
        assert after.source == ES.ESTIMATE_SOURCE_MODEL


async def test_bad_input_is_refused_by_field_and_off_map_points_fall_back(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.estimate_delivery(eta_pb2.EstimateDeliveryRequest(item_count=-1))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        v = violations(e.value)
        assert {"restaurant_location", "delivery_location", "item_count"} <= set(v)

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.route(eta_pb2.RouteRequest(origin=common_pb2.LatLng(lat=95, lon=0),
                                               destination=ll(CUSTOMER)))  # fmt: skip
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "origin.lat" in violations(e.value)

        # New York is not on this map: refused by name, not routed.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.route(eta_pb2.RouteRequest(origin=ll(RESTAURANT),
                                               destination=ll((40.7128, -74.0060))))  # fmt: skip
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "km from the nearest road" in violations(e.value)["destination"]

        # A few km out at sea: a straight line, flagged.
        sea = ll((37.7749, -122.75))
        r = await c.route(eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=sea))
        assert r.source == ES.ESTIMATE_SOURCE_STRAIGHT_LINE and r.duration_seconds > 0
        d = await c.estimate_delivery(estimate_request(delivery_location=sea))
        assert d.source == ES.ESTIMATE_SOURCE_STRAIGHT_LINE and d.total_minutes > 0

        with pytest.raises(grpc.aio.AioRpcError) as e:
            legs = [
                eta_pb2.TravelLeg(origin=ll(RESTAURANT)),
                eta_pb2.TravelLeg(origin=ll(RESTAURANT), destination=ll(CUSTOMER)),
            ]
            await c.estimate_travel_times(eta_pb2.EstimateTravelTimesRequest(legs=legs))
        assert "legs[0].destination" in violations(e.value)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            legs = [
                eta_pb2.TravelLeg(origin=ll(RESTAURANT), destination=ll(CUSTOMER)),
                eta_pb2.TravelLeg(origin=ll(RESTAURANT), destination=ll((40.7128, -74.0060))),
            ]
            await c.estimate_travel_times(eta_pb2.EstimateTravelTimesRequest(legs=legs))
        assert "km from the nearest road" in violations(e.value)["legs[1].destination"]

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.check_reroute(eta_pb2.CheckRerouteRequest(
                driver_location=ll(RESTAURANT), destination=ll(CUSTOMER),
                current_polyline="\x01\x02"))  # fmt: skip
        assert "current_polyline" in violations(e.value)

        with pytest.raises(grpc.aio.AioRpcError) as e:
            bad = eta_pb2.RoadOverride(location=ll(RESTAURANT), slowdown=0.5)
            await c.set_road_overrides(eta_pb2.SetRoadOverridesRequest(overrides=[bad]))
        assert "overrides[0].slowdown" in violations(e.value)


async def test_batch_travel_times_match_single_routes(
    trained: TrainResult, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        drivers = [(37.7749 + 0.002 * i, -122.4194 + 0.0015 * (i % 7)) for i in range(40)]
        req = eta_pb2.EstimateTravelTimesRequest(
            legs=[eta_pb2.TravelLeg(origin=ll(p), destination=ll(RESTAURANT)) for p in drivers]
        )
        req.departure_time.FromSeconds(int(time.time()))
        got = await c.estimate_travel_times(req)
        assert len(got.travel_times) == 40
        for p, t in list(zip(drivers, got.travel_times, strict=True))[:5]:
            r = await c.route(eta_pb2.RouteRequest(origin=ll(p), destination=ll(RESTAURANT),
                                                   departure_time=req.departure_time))  # fmt: skip
            assert t.source == ES.ESTIMATE_SOURCE_ROAD_GRAPH
            assert t.duration_seconds == pytest.approx(r.duration_seconds, rel=1e-6)
            assert t.distance_meters == pytest.approx(r.distance_meters, rel=1e-6)


async def test_check_reroute_and_a_closure_that_forces_a_detour(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path) as c:
        route = await c.route(eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=ll(CUSTOMER)))
        path = decode_polyline(route.polyline)
        on_route = path[len(path) // 2]
        now = int(time.time())
        req = eta_pb2.CheckRerouteRequest(driver_location=ll(on_route), destination=ll(CUSTOMER),
                                          current_polyline=route.polyline)  # fmt: skip
        req.current_eta.FromSeconds(now + int(route.duration_seconds))
        stay = await c.check_reroute(req)
        assert stay.reason == eta_pb2.REROUTE_REASON_UNSPECIFIED and stay.deviation_meters < 50
        assert stay.polyline == ""

        off = eta_pb2.CheckRerouteRequest()
        off.CopyFrom(req)
        away = next(
            p
            for p in ((on_route[0] + 0.012, on_route[1]), (on_route[0], on_route[1] + 0.015),
                      (on_route[0] - 0.012, on_route[1]), (on_route[0], on_route[1] - 0.015))
            if deviation_m(p[0], p[1], path) > 700
        )  # fmt: skip
        off.driver_location.CopyFrom(ll(away))
        moved = await c.check_reroute(off)
        assert moved.reason == eta_pb2.REROUTE_REASON_OFF_ROUTE
        assert moved.deviation_meters > 500 and moved.polyline and moved.duration_seconds > 0

        late = eta_pb2.CheckRerouteRequest()
        late.CopyFrom(req)
        late.current_eta.FromSeconds(now - 1200)  # the driver was told 20 min less
        assert (await c.check_reroute(late)).reason == eta_pb2.REROUTE_REASON_ETA_CHANGED

        # Close the road in the middle of the route: the next answer detours, not the cache's.
        closed = await c.set_road_overrides(eta_pb2.SetRoadOverridesRequest(
            overrides=[eta_pb2.RoadOverride(override_id="x", location=ll(on_route),
                                            closed=True)]))  # fmt: skip
        assert closed.edges_affected >= 1
        detour = await c.route(eta_pb2.RouteRequest(origin=ll(RESTAURANT),
                                                    destination=ll(CUSTOMER)))  # fmt: skip
        assert not detour.cached
        assert detour.polyline != route.polyline
        assert detour.duration_seconds >= route.duration_seconds
        cleared = await c.set_road_overrides(eta_pb2.SetRoadOverridesRequest())
        assert cleared.edges_affected == 0
        back = await c.route(eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=ll(CUSTOMER)))
        assert back.polyline == route.polyline


async def test_road_overrides_reach_every_replica_and_lapse_when_they_expire(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    fast = {"FOODMESH_ETA_OVERRIDES_SYNC_S": "0.05"}
    async with (
        eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path, extra=fast) as a,
        eta_client(redis_url=redis_url, namespace=namespace, model_dir=tmp_path, extra=fast) as b,
    ):
        req = eta_pb2.RouteRequest(origin=ll(RESTAURANT), destination=ll(CUSTOMER))
        before = await b.route(req)
        path = decode_polyline(before.polyline)
        slow = eta_pb2.RoadOverride(override_id="crash", location=ll(path[len(path) // 2]),
                                    slowdown=50.0)  # fmt: skip
        slow.expire_time.FromSeconds(int(time.time()) + 3)
        await a.set_road_overrides(eta_pb2.SetRoadOverridesRequest(overrides=[slow]))

        async def b_sees_it() -> bool:
            r = await b.route(req)
            return r.polyline != before.polyline or r.duration_seconds > before.duration_seconds

        await eventually(b_sees_it, within=5.0)

        async def lapsed() -> bool:
            r = await b.route(req)
            return r.polyline == before.polyline and r.duration_seconds == pytest.approx(
                before.duration_seconds
            )

        await eventually(lapsed, within=8.0)
