"""Concurrent streams per caller: bounded per route/method and per order, at the gateway
(429 + Retry-After) and in the services (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import grpc
import pytest

from foodmesh.v1 import order_pb2 as opb
from tests.integration._gateway import Http, auth, details, sse_events
from tests.integration._order import Mesh, place_request, reason

CUSTOMER = auth("customer", "cus_1", Accept="text/event-stream")


async def orders(mesh: Mesh, n: int) -> list[str]:
    async with mesh.client("customer", "cus_1") as client:
        return [(await client.place_order(place_request(f"k{i}"))).order.order_id
                for i in range(n)]  # fmt: skip


async def watch(
    order_http: Http, stack: contextlib.AsyncExitStack, order_id: str
) -> aiohttp.ClientResponse:
    """Opens an SSE watch; once open (200), waits for its first event and keeps it open."""
    resp = await stack.enter_async_context(
        order_http.session.get(f"/api/v1/orders/{order_id}/watch", headers=CUSTOMER)
    )
    if resp.status == 200:
        await asyncio.wait_for(anext(sse_events(resp)), 10)
    return resp


async def test_a_caller_holds_at_most_4_streams_of_one_order_and_8_of_one_route(
    mesh: Mesh, order_http: Http
) -> None:
    a, b, c = await orders(mesh, 3)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):
            assert (await watch(order_http, stack, a)).status == 200
        fifth = await watch(order_http, stack, a)
        assert fifth.status == 429
        assert int(fifth.headers["Retry-After"]) >= 1
        body = await fifth.json()
        assert details(body, "ErrorInfo")[0]["reason"] == "TOO_MANY_STREAMS"
        for _ in range(4):
            assert (await watch(order_http, stack, b)).status == 200
        ninth = await watch(order_http, stack, c)  # 8 of this route open already
        assert ninth.status == 429
    # Closed streams give their slots back (the services' own count follows a moment later).
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(100):
            async with contextlib.AsyncExitStack() as attempt:
                if (await watch(order_http, attempt, c)).status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a stream slot was never given back")
        for _ in range(3):
            assert (await watch(order_http, stack, c)).status == 200


async def test_the_order_service_refuses_a_fifth_watch_of_one_order_by_one_caller(
    mesh: Mesh,
) -> None:
    (a,) = await orders(mesh, 1)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(mesh.client("customer", "cus_1"))
        for _ in range(4):
            stream = client.watch_order(opb.WatchOrderRequest(order_id=a))
            stack.push_async_callback(stream.aclose)  # type: ignore[attr-defined]
            await anext(stream)
        fifth = client.watch_order(opb.WatchOrderRequest(order_id=a))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(fifth)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(caught.value) == "TOO_MANY_STREAMS"
        # Another caller (ops) is not held back by this customer's streams.
        ops = await stack.enter_async_context(mesh.client("ops", "ops_1"))
        stream = ops.watch_order(opb.WatchOrderRequest(order_id=a))
        stack.push_async_callback(stream.aclose)  # type: ignore[attr-defined]
        assert (await anext(stream)).order.order_id == a
