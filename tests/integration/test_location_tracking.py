"""TrackOrder through the real Location gRPC port, following a driver over real NATS.

The Order service is not built yet (issue 4); until it is, its contract is served
here by a scripted OrderService on a real gRPC server, reached by Location
through the real ``clients.OrderClient`` — the same path the Order service takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients import ClientOptions, EtaClient, LocationClient, OrderClient
from foodmesh.core.errors import NotFound
from foodmesh.v1 import common_pb2, eta_pb2, eta_pb2_grpc, location_pb2, order_pb2, order_pb2_grpc
from servers.runtime.config import Settings
from servers.runtime.serve import Resources, RunningService, ServiceSpec, run_service
from tests.integration._location import SERVICE, DriverApp, fix, location_service, token

OS = common_pb2.OrderStatus
SF = (37.7749, -122.4194)


class ScriptedOrders(order_pb2_grpc.OrderServiceServicer):
    """One order whose changes the test makes, served over the OrderService contract."""

    def __init__(self, order: order_pb2.Order) -> None:
        self.order = order
        self.watchers: list[asyncio.Queue[order_pb2.Order]] = []

    def change(self, status: int, *, driver_id: str | None = None) -> None:
        self.order.status = status  # type: ignore[assignment]
        if driver_id is not None:
            self.order.driver_id = driver_id
        entry = self.order.timeline.add(seq=len(self.order.timeline) + 1, status=status)  # type: ignore[arg-type]
        entry.timestamp.GetCurrentTime()
        for q in self.watchers:
            q.put_nowait(order_pb2.Order.FromString(self.order.SerializeToString()))

    async def GetOrder(  # noqa: N802
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> order_pb2.GetOrderResponse:
        if request.order_id != self.order.order_id:
            raise NotFound(f"order {request.order_id} not found")
        return order_pb2.GetOrderResponse(order=self.order)

    async def WatchOrder(  # noqa: N802
        self, request: order_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        q: asyncio.Queue[order_pb2.Order] = asyncio.Queue()
        self.watchers.append(q)
        try:
            yield order_pb2.WatchOrderResponse(order=self.order)
            while True:
                o = await q.get()
                yield order_pb2.WatchOrderResponse(order=o)
                if o.status in (OS.ORDER_STATUS_DELIVERED, OS.ORDER_STATUS_CANCELLED):
                    return
        finally:
            self.watchers.remove(q)


class ScriptedEta(eta_pb2_grpc.EtaServiceServicer):
    """Answers the EtaService contract: each estimate one minute later than the last."""

    def __init__(self) -> None:
        self.estimates = 0
        self.routes: list[tuple[float, float, float, float]] = []
        self.order_times: list[int] = []

    async def EstimateDelivery(  # noqa: N802
        self, request: eta_pb2.EstimateDeliveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.EstimateDeliveryResponse:
        self.estimates += 1
        self.order_times.append(request.order_time.seconds)
        reply = eta_pb2.EstimateDeliveryResponse(
            eta_confidence=0.9, total_minutes=20 + self.estimates
        )
        reply.estimated_delivery_time.FromSeconds(1_800_000_000 + 60 * self.estimates)
        return reply

    async def Route(  # noqa: N802
        self, request: eta_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.RouteResponse:
        o, d = request.origin, request.destination
        self.routes.append((o.lat, o.lon, d.lat, d.lon))
        return eta_pb2.RouteResponse(polyline=f"route:{len(self.routes)}")


PLACED_AT = int(time.time()) - 300  # the order was placed five minutes ago


def _order() -> order_pb2.Order:
    o = order_pb2.Order(
        order_id="ord_1", customer_id="cus_1", restaurant_id="rest_1", status=OS.ORDER_STATUS_PLACED
    )
    o.restaurant_location.lat, o.restaurant_location.lon = SF
    o.delivery_address.lat, o.delivery_address.lon = SF[0] + 0.01, SF[1]
    o.estimated_delivery_time.FromSeconds(int(time.time()) + 1800)
    o.eta_confidence = 0.8
    o.created_at.FromSeconds(PLACED_AT)
    o.timeline.add(seq=1, status=OS.ORDER_STATUS_PLACED).timestamp.GetCurrentTime()
    return o


@asynccontextmanager
async def serving(
    name: str, add: Callable[[Any, grpc.aio.Server], None], servicer: Any
) -> AsyncIterator[str]:
    """Serves ``servicer`` on a real server built by the runtime; yields its target."""

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        add(servicer, server)

    grpc_service = f"foodmesh.v1.{name.capitalize()}Service"
    spec = ServiceSpec(name=name, grpc_services=(grpc_service,), register=register)
    async with run_service(spec, Settings(service=name, metrics_enabled=False)) as svc:
        yield svc.target


@pytest.fixture
async def orders() -> AsyncIterator[tuple[ScriptedOrders, OrderClient]]:
    scripted = ScriptedOrders(_order())
    add = order_pb2_grpc.add_OrderServiceServicer_to_server
    async with (
        serving("order", add, scripted) as target,
        OrderClient(target, options=ClientOptions(metadata=SERVICE)) as client,
    ):
        yield scripted, client


@pytest.fixture
async def eta() -> AsyncIterator[tuple[ScriptedEta, EtaClient]]:
    scripted = ScriptedEta()
    add = eta_pb2_grpc.add_EtaServiceServicer_to_server
    async with (
        serving("eta", add, scripted) as target,
        EtaClient(target, options=ClientOptions(metadata=SERVICE)) as client,
    ):
        yield scripted, client


@pytest.fixture
async def svc(
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    orders: tuple[ScriptedOrders, OrderClient],
) -> AsyncIterator[RunningService]:
    async with location_service(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        orders=orders[1],
    ) as running:
        yield running


async def test_the_customer_sees_status_driver_and_live_position_until_delivery(
    svc: RunningService, orders: tuple[ScriptedOrders, OrderClient]
) -> None:
    scripted, _ = orders
    async with (
        LocationClient(
            svc.target, options=ClientOptions(metadata=token("customer", "cus_1"))
        ) as customer,
        DriverApp(svc.target, "drv_1") as driver,
        DriverApp(svc.target, "drv_2") as second,
    ):
        await driver.send(fix(*SF, seq=1))
        stream = customer.track_order(location_pb2.TrackOrderRequest(order_id="ord_1"))
        first = await asyncio.wait_for(anext(stream), 2)
        assert (first.status, first.order_status, first.driver.driver_id) == (
            "placed",
            OS.ORDER_STATUS_PLACED,
            "",
        )
        assert first.eta_confidence == pytest.approx(0.8)

        scripted.change(OS.ORDER_STATUS_PICKED_UP, driver_id="drv_1")
        msg = await asyncio.wait_for(anext(stream), 2)
        assert (msg.status, msg.driver.driver_id) == ("picked_up", "drv_1")
        assert [t.status for t in msg.timeline] == ["placed", "picked_up"]
        assert (msg.driver.location.lat, msg.driver.location.lon) == SF  # the last known fix

        # A fix from the driver reaches the customer within a second.
        sent = time.monotonic()
        await driver.send(fix(SF[0] + 0.001, SF[1], seq=2))
        msg = await asyncio.wait_for(anext(stream), 2)
        assert msg.driver.location.lat == pytest.approx(SF[0] + 0.001)
        assert time.monotonic() - sent < 1.0

        # Reassigned: the stream follows the new driver and says so.
        await second.send(fix(SF[0] + 0.005, SF[1], seq=1))
        scripted.change(OS.ORDER_STATUS_IN_TRANSIT, driver_id="drv_2")
        msg = await asyncio.wait_for(anext(stream), 2)
        assert (msg.driver.driver_id, msg.driver_changed) == ("drv_2", True)
        assert msg.driver.location.lat == pytest.approx(SF[0] + 0.005)
        await driver.send(fix(SF[0] + 0.002, SF[1], seq=3))  # the old driver no longer shows
        await second.send(fix(SF[0] + 0.006, SF[1], seq=2))
        msg = await asyncio.wait_for(anext(stream), 2)
        assert (msg.driver.driver_id, msg.driver_changed) == ("drv_2", False)
        assert msg.driver.location.lat == pytest.approx(SF[0] + 0.006)

        scripted.change(OS.ORDER_STATUS_DELIVERED)
        last = await asyncio.wait_for(anext(stream), 2)
        while last.status != "delivered":
            last = await asyncio.wait_for(anext(stream), 2)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 2)


async def test_someone_elses_order_is_not_found(svc: RunningService) -> None:
    async with LocationClient(
        svc.target, options=ClientOptions(metadata=token("customer", "cus_2"))
    ) as other:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(other.track_order(location_pb2.TrackOrderRequest(order_id="ord_1")))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(other.track_order(location_pb2.TrackOrderRequest(order_id="ord_nope")))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    async with LocationClient(
        svc.target, options=ClientOptions(metadata=token("driver", "drv_1"))
    ) as driver:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(driver.track_order(location_pb2.TrackOrderRequest(order_id="ord_1")))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_fresh_eta_and_the_remaining_route_come_without_any_other_change(
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    orders: tuple[ScriptedOrders, OrderClient],
    eta: tuple[ScriptedEta, EtaClient],
) -> None:
    scripted, order_client = orders
    estimates, eta_client = eta
    scripted.change(OS.ORDER_STATUS_PREPARING, driver_id="drv_e")
    async with (
        location_service(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
            orders=order_client,
            eta=eta_client,
            extra={"FOODMESH_LOCATION_ETA_EVERY_S": "0.3"},
        ) as svc,
        LocationClient(
            svc.target, options=ClientOptions(metadata=token("customer", "cus_1"))
        ) as customer,
        DriverApp(svc.target, "drv_e") as driver,
    ):
        await driver.send(fix(SF[0] - 0.01, SF[1], seq=1))
        stream = customer.track_order(location_pb2.TrackOrderRequest(order_id="ord_1"))
        first = await asyncio.wait_for(anext(stream), 2)
        assert first.eta_confidence == pytest.approx(0.9)
        assert first.route_polyline == "route:1"
        # Before pickup the route leads from the driver to the restaurant.
        assert estimates.routes[0] == pytest.approx((SF[0] - 0.01, SF[1], *SF))
        later = await asyncio.wait_for(anext(stream), 2)  # nothing else changed: the timer
        assert later.eta.seconds == first.eta.seconds + 60
        assert later.route_polyline == "route:2"
        # the estimate counts the kitchen's time from placement, not from now
        assert estimates.order_times[:2] == [PLACED_AT, PLACED_AT]


async def test_a_customer_who_stops_reading_never_slows_the_driver(
    svc: RunningService, orders: tuple[ScriptedOrders, OrderClient]
) -> None:
    scripted, _ = orders
    scripted.change(OS.ORDER_STATUS_IN_TRANSIT, driver_id="drv_s")
    async with (
        LocationClient(
            svc.target, options=ClientOptions(metadata=token("customer", "cus_1"))
        ) as customer,
        DriverApp(svc.target, "drv_s") as driver,
    ):
        await driver.send(fix(*SF, seq=0))
        stream = customer.track_order(location_pb2.TrackOrderRequest(order_id="ord_1"))
        await asyncio.wait_for(anext(stream), 2)
        # The customer reads nothing more while the driver reports 200 fixes (10 per message).
        base = time.time() - 60
        slowest = 0.0
        newest = SF[0]
        for m in range(20):
            fixes = [
                fix(SF[0] + (m * 10 + i) * 1e-5, SF[1], ts=base + m * 10 + i, seq=m * 10 + i + 1)
                for i in range(10)
            ]
            sent = time.monotonic()
            ack = await driver.send(*fixes)
            slowest = max(slowest, time.monotonic() - sent)
            assert ack.accepted + len(ack.rejections) == 10  # the rest over the rate: throttled
            refused = {r.seq for r in ack.rejections}
            taken = [f for f in fixes if f.seq not in refused]
            if taken:
                newest = taken[-1].lat
            await asyncio.sleep(0.05)
        assert slowest < 1.0
        # When it reads again it catches up to the newest position, not through a backlog.
        seen = 0
        async with asyncio.timeout(5):
            async for msg in stream:
                seen += 1
                if msg.driver.location.lat == pytest.approx(newest):
                    break
        assert seen < 100
