"""Server streams through the gateway (SSE, NDJSON, snapshot) and deadlines.

The upstream is a scripted OrderService on a real gRPC server built by the runtime, so
the test can see exactly when the gateway cancels its call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from foodmesh.v1 import common_pb2
from tests.integration._gateway import (
    Http,
    ScriptedOrders,
    auth,
    details,
    gateway,
    scripted_orders,
    sse_events,
    violations,
)

OS = common_pb2.OrderStatus
CUSTOMER = auth("customer", "cus_1")


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedOrders, str]]:
    async with scripted_orders() as running:
        yield running


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
        servicer.push(OS.ORDER_STATUS_CONFIRMED)
        nxt = await asyncio.wait_for(anext(events), 5)
        while "data" not in nxt:
            nxt = await asyncio.wait_for(anext(events), 5)
        assert nxt["id"] == "2"  # the timeline position: what Last-Event-ID resumes after
        assert nxt["data"]["change"] == {
            "seq": "2", "status": "ORDER_STATUS_CONFIRMED", "actor": "", "reason": ""
        }  # fmt: skip
        assert servicer.live == 1
    # The client went away while the upstream was idle: the gateway cancels its call
    # (the servicer sees the cancellation; it would otherwise wait for its next message).
    await asyncio.wait_for(servicer.ended.wait(), 10)
    assert (servicer.live, servicer.cancelled) == (0, 1)


async def test_last_event_id_resumes_after_the_changes_already_seen(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    headers = {**CUSTOMER, "Accept": "text/event-stream"}
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=headers) as resp:
        events = sse_events(resp)
        assert (await asyncio.wait_for(anext(events), 5))["id"] == "1"
        servicer.push(OS.ORDER_STATUS_CONFIRMED)
        seen = await asyncio.wait_for(anext(events), 5)
        while "data" not in seen:
            seen = await asyncio.wait_for(anext(events), 5)
        assert seen["id"] == "2"
    await asyncio.wait_for(servicer.ended.wait(), 10)
    # Two changes while the client was away (the app went to the background).
    servicer.push(OS.ORDER_STATUS_PREPARING)
    servicer.push(OS.ORDER_STATUS_READY_FOR_PICKUP)
    resume = {**headers, "Last-Event-ID": seen["id"]}
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=resume) as resp:
        assert resp.status == 200
        events = sse_events(resp)
        got = []
        while len(got) < 2:
            event = await asyncio.wait_for(anext(events), 5)
            if "data" in event:
                got.append(event)
    assert servicer.watch_requests[-1].after_seq == 2  # Last-Event-ID became after_seq
    assert [(e["id"], e["data"]["change"]["status"]) for e in got] == [
        ("3", "ORDER_STATUS_PREPARING"),
        ("4", "ORDER_STATUS_READY_FOR_PICKUP"),
    ]  # fmt: skip  -- nothing missed, nothing repeated, no snapshot first


async def test_a_bad_last_event_id_is_400_naming_the_header(http: Http) -> None:
    headers = {**CUSTOMER, "Accept": "text/event-stream", "Last-Event-ID": "yesterday"}
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=headers) as resp:
        assert resp.status == 400
        assert set(violations(await resp.json())) == {"Last-Event-ID"}


async def test_ndjson_streams_until_the_upstream_ends(
    http: Http, scripted: tuple[ScriptedOrders, str]
) -> None:
    servicer, _ = scripted
    async with http.session.get("/api/v1/orders/ord_1/watch", headers=CUSTOMER) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert first["order"]["order_id"] == "ord_1"
        servicer.push(OS.ORDER_STATUS_CANCELLED)
        servicer.push(None)
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
    async with http.session.get("/api/v1/orders/slow", headers=CUSTOMER) as resp:
        assert resp.status == 504  # the configured 1 s deadline, not the servicer's 10 s
        assert (await resp.json())["code"] == 4
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**CUSTOMER, "traceparent": trace, "X-Request-Id": "r-1"}
    async with http.session.get("/api/v1/orders/ord_1", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["order"]["customer_id"] == "cus_1"
    md = servicer.seen_metadata
    assert md["x-request-id"] == "r-1"
    # the caller's trace goes on, its parent now the gateway's own span (still sampled)
    version, trace_id, parent, flags = md["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent != "00f067aa0ba902b7" and len(parent) == 16
    assert md["authorization"] == CUSTOMER["Authorization"]
    async with http.session.get("/api/v1/orders/missing", headers=CUSTOMER) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["message"] == "order missing not found"  # the service's own words
    assert details(body, "RequestInfo")[0]["request_id"] == resp.headers["X-Request-Id"]


async def test_the_client_deadline_header_is_used_capped_and_checked(
    scripted: tuple[ScriptedOrders, str],
) -> None:
    servicer, target = scripted
    async with gateway({"order": target}, deadline_s=30.0, max_deadline_s=0.5) as http:
        for value in ("200m", "0.2", "100S"):  # 100 s is capped to 0.5 s
            headers = {**CUSTOMER, "X-Request-Timeout": value}
            async with http.session.get("/api/v1/orders/slow", headers=headers) as resp:
                assert resp.status == 504, value
        headers = {**CUSTOMER, "grpc-timeout": "300m"}
        async with http.session.get("/api/v1/orders/slow", headers=headers) as resp:
            assert resp.status == 504
        for bad in ("soon", "-1", "0"):
            headers = {**CUSTOMER, "X-Request-Timeout": bad}
            async with http.session.get("/api/v1/orders/ord_1", headers=headers) as resp:
                assert resp.status == 400, bad
                assert set(violations(await resp.json())) == {"X-Request-Timeout"}
        headers = {**CUSTOMER, "X-Request-Timeout": "2.5"}
        async with http.session.get("/api/v1/orders/ord_1", headers=headers) as resp:
            assert resp.status == 200
        # The service saw the deadline the gateway set (as grpc-timeout), no more than the cap.
        assert servicer.seen_metadata.get("authorization") == CUSTOMER["Authorization"]
