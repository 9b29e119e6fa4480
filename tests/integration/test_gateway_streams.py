"""Server streams through the gateway (SSE, NDJSON, snapshot) and deadlines.

The upstream is a scripted OrderService on a real gRPC server built by the runtime, so
the test can see exactly when the gateway cancels its call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from foodmesh.v1 import common_pb2, order_pb2, order_pb2_grpc
from servers.runtime.config import Settings
from servers.runtime.errors import NotFound
from servers.runtime.serve import Resources, ServiceSpec, run_service
from tests.integration._gateway import Http, auth, details, gateway, sse_events

OS = common_pb2.OrderStatus
CUSTOMER = auth("customer", "cus_1")


class ScriptedOrders(order_pb2_grpc.OrderServiceServicer):
    """WatchOrder sends the snapshot, then whatever the test pushes; counts live streams."""

    def __init__(self) -> None:
        self.changes: asyncio.Queue[int | None] = asyncio.Queue()
        self.live = 0
        self.ended = asyncio.Event()
        self.seen_metadata: dict[str, str] = {}

    def order(self, status: int = OS.ORDER_STATUS_PLACED) -> order_pb2.Order:
        return order_pb2.Order(order_id="ord_1", customer_id="cus_1", status=status)  # type: ignore[arg-type]

    async def GetOrder(  # noqa: N802
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> order_pb2.GetOrderResponse:
        self.seen_metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        if request.order_id == "slow":
            await asyncio.sleep(10)
        if request.order_id != "ord_1":
            raise NotFound(f"order {request.order_id} not found")
        return order_pb2.GetOrderResponse(order=self.order())

    async def WatchOrder(  # noqa: N802
        self, request: order_pb2.WatchOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        if request.order_id != "ord_1":
            raise NotFound(f"order {request.order_id} not found")
        self.live += 1
        self.ended.clear()
        try:
            yield order_pb2.WatchOrderResponse(order=self.order())
            while (status := await self.changes.get()) is not None:
                change = order_pb2.TimelineEntry(seq=2, status=status)  # type: ignore[arg-type]
                yield order_pb2.WatchOrderResponse(order=self.order(status), change=change)
        finally:
            self.live -= 1
            self.ended.set()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedOrders, str]]:
    servicer = ScriptedOrders()  # type: ignore[abstract]  # only the RPCs under test

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(name="order", grpc_services=("foodmesh.v1.OrderService",),
                       register=register)  # fmt: skip
    async with run_service(spec, Settings(service="order", metrics_enabled=False)) as svc:
        yield servicer, svc.target


@pytest.fixture
async def http(scripted: tuple[ScriptedOrders, str]) -> AsyncIterator[Http]:
    async with gateway({"order": scripted[1]}, heartbeat_s=0.3, deadline_s=1.0) as h:
        yield h


async def test_sse_relays_each_message_with_ids_and_heartbeats(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    headers = {**CUSTOMER, "Accept": "text/event-stream"}
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(resp)
        first = await asyncio.wait_for(anext(events), 5)
        assert first["id"] == "1"
        assert first["data"]["order"]["status"] == "ORDER_STATUS_PLACED"
        assert "change" not in first["data"]  # a message field left unset is absent
        beat = await asyncio.wait_for(anext(events), 5)  # silent upstream: a comment
        assert beat == {"comment": "keep-alive"}
        servicer.changes.put_nowait(OS.ORDER_STATUS_CONFIRMED)
        nxt = await asyncio.wait_for(anext(events), 5)
        while "data" not in nxt:
            nxt = await asyncio.wait_for(anext(events), 5)
        assert nxt["id"] == "2"
        assert nxt["data"]["change"] == {
            "seq": "2", "status": "ORDER_STATUS_CONFIRMED", "actor": "", "reason": ""
        }  # fmt: skip
        assert servicer.live == 1
    # The client went away: the upstream stream is cancelled at once, not at the next write.
    started = time.monotonic()
    await asyncio.wait_for(servicer.ended.wait(), 2)
    assert servicer.live == 0
    assert time.monotonic() - started < 1.0


async def test_ndjson_streams_until_the_upstream_ends(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=CUSTOMER) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert first["order"]["order_id"] == "ord_1"
        servicer.changes.put_nowait(OS.ORDER_STATUS_CANCELLED)
        servicer.changes.put_nowait(None)
        rest = await asyncio.wait_for(resp.read(), 5)
    lines = [json.loads(line) for line in rest.splitlines()]
    assert [m["order"]["status"] for m in lines] == ["ORDER_STATUS_CANCELLED"]


async def test_a_json_get_of_a_stream_returns_its_first_message_and_cancels_it(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    headers = {**CUSTOMER, "Accept": "application/json"}
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["order"]["status"] == "ORDER_STATUS_PLACED"
    await asyncio.wait_for(servicer.ended.wait(), 2)
    assert servicer.live == 0


async def test_a_stream_refused_before_its_first_message_is_a_plain_http_error(
    http: Http,
) -> None:
    for accept in ("text/event-stream", "application/json", "*/*"):
        headers = {**CUSTOMER, "Accept": accept}
        async with http.session.get("/api/v1/orders/nope/watch", headers=headers) as resp:
            assert resp.status == 404, accept
            body = await resp.json()
        assert body["code"] == 5 and "nope" in body["message"]


async def test_unary_calls_have_a_deadline_and_forward_headers(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    started = time.monotonic()
    async with http.session.get("/api/v1/orders/slow", headers=CUSTOMER) as resp:
        assert resp.status == 504
        assert (await resp.json())["code"] == 4
    assert time.monotonic() - started < 3
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**CUSTOMER, "traceparent": trace, "X-Request-Id": "r-1"}
    async with http.session.get("/api/v1/orders/ord_1", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["order"]["customer_id"] == "cus_1"
    md = servicer.seen_metadata
    assert (md["traceparent"], md["x-request-id"]) == (trace, "r-1")
    assert md["authorization"] == CUSTOMER["Authorization"]
    async with http.session.get("/api/v1/orders/missing", headers=CUSTOMER) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["message"] == "order missing not found"  # the service's own words
    assert details(body, "RequestInfo")[0]["request_id"] == resp.headers["X-Request-Id"]
