"""Request size limits of the gRPC services: bytes per method, elements per repeated field.

A request over a limit is refused whole, with a clear status naming the field (or the
size), before the handler does any work per element.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients import CatalogClient, ClientOptions, EtaClient, LocationClient
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import eta_pb2, location_pb2
from foodmesh.v1 import order_pb2 as opb
from servers import eta
from servers.runtime.config import Settings
from servers.runtime.serve import RunningService, run_service
from tests.integration._location import SERVICE, DriverApp, fix, location_service
from tests.integration._order import Mesh, place_request, reason, token, violations

SF = (37.7749, -122.4194)


@pytest.fixture
async def location(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[RunningService]:
    async with location_service(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                                namespace=namespace, state_dir=tmp_path) as running:  # fmt: skip
        yield running


async def test_a_location_message_over_the_fix_limit_is_refused_whole(
    location: RunningService,
) -> None:
    async with DriverApp(location.target, "drv_many") as app:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await app.send(*[fix(*SF, seq=i) for i in range(1, 102)])
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == {"fixes": "at most 100 items"}


async def test_a_location_message_over_its_byte_limit_is_resource_exhausted_not_internal(
    location: RunningService,
) -> None:
    # ~2 bytes per empty fix: 100,000 of them are 200 KB, over the 64 KiB of a location stream.
    empty = location_pb2.LocationFix()
    async with DriverApp(location.target, "drv_huge") as app:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await app.send(*[empty] * 100_000)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(caught.value) == "MESSAGE_TOO_LARGE"
    assert "65536" in (caught.value.details() or "")


async def test_a_method_without_a_declared_size_takes_small_requests_only(
    location: RunningService,
) -> None:
    async with LocationClient(location.target, options=ClientOptions(metadata=SERVICE)) as ops:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ops.get_driver_location(
                location_pb2.GetDriverLocationRequest(driver_id="d" * 100_000)
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(caught.value) == "MESSAGE_TOO_LARGE"


async def test_an_order_over_the_item_limit_is_refused_naming_only_the_field(mesh: Mesh) -> None:
    # Every line is bad too: a service that went on checking each one would name them all.
    lines = [opb.OrderItemInput(item_id="", quantity=0)] * 5_000
    async with mesh.client("customer", "cus_1") as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.place_order(place_request("big", items=lines))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == {"items": "at most 100 items"}
        many = opb.OrderItemInput(item_id="margherita", quantity=1, customizations=["x"] * 51)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.place_order(place_request("opts", items=[many]))
        assert violations(caught.value) == {"items[0].customizations": "at most 50 items"}


async def test_a_menu_write_over_the_item_limit_is_refused_naming_only_the_field(
    mesh: Mesh,
) -> None:
    items = [cpb.MenuItem(item_id="", name="")] * 2_001
    request = cpb.UpsertMenuRequest(
        restaurant_id="rest_1", categories=[cpb.MenuCategory(category_id="c", items=items)]
    )
    async with CatalogClient(mesh.catalog.target, options=token("ops", "ops")) as ops:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ops.upsert_menu(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == {"categories[0].items": "at most 2000 items"}


async def test_a_batch_eta_over_the_leg_limit_is_refused_naming_only_the_field(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(service="eta", redis_url=redis_url, namespace=namespace,
                        metrics_enabled=False, health_check_interval_s=0.2, shutdown_grace_s=1.0,
                        extra={"FOODMESH_ETA_MODEL_DIR": str(tmp_path)})  # fmt: skip
    # Every leg is empty too: a service that went on checking each one would name them all.
    request = eta_pb2.EstimateTravelTimesRequest(legs=[eta_pb2.TravelLeg()] * 5_001)
    async with run_service(eta.SPEC, settings) as running:
        async with EtaClient(running.target, options=ClientOptions(metadata=SERVICE)) as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.estimate_travel_times(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == {"legs": "at most 5000 items"}
