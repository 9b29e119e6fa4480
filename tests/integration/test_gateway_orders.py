"""The gateway in front of the real Catalog, Order and Location services: a customer's day."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients import OrderClient
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._gateway import Http, auth, details, gateway, sse_events, violations
from tests.integration._location import location_service
from tests.integration._order import Mesh, order_mesh, token

OS = common_pb2.OrderStatus
NOWHERE = "127.0.0.1:1"  # Dispatch and ETA are not running: tracking does without them
CUSTOMER = auth("customer", "cus_1")
PLACE: dict[str, Any] = {
    "restaurant_id": "rest_1",
    "items": [{"item_id": "margherita", "quantity": 1, "customizations": ["large"]},
              {"item_id": "salad", "quantity": 1}],
    "delivery_address": {"street": "456 Mission St", "city": "San Francisco",
                         "lat": 37.7749, "lon": -122.4194},
    "payment_method_id": "pm_card_visa",
}  # fmt: skip


@dataclass(slots=True)
class World:
    http: Http
    mesh: Mesh
    ops: OrderClient


@pytest.fixture
async def world(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[World]:
    async with (
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                   namespace=namespace) as mesh,
        OrderClient(mesh.order.target, options=token("service", "location")) as feed,
        location_service(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                         namespace=namespace, state_dir=tmp_path, orders=feed,
                         extra={"FOODMESH_LOCATION_DISPATCH_TARGET": NOWHERE,
                                "FOODMESH_LOCATION_ETA_TARGET": NOWHERE}) as loc,
        gateway({"catalog": mesh.catalog.target, "order": mesh.order.target,
                 "location": loc.target}) as http,
        OrderClient(mesh.order.target, options=token("ops", "ops_1")) as ops,
    ):  # fmt: skip
        yield World(http, mesh, ops)


async def place(http: Http, key: str, **changes: Any) -> tuple[int, dict[str, Any]]:
    headers = {**CUSTOMER, "Idempotency-Key": key}
    async with http.session.post("/api/v1/orders", json={**PLACE, **changes},
                                 headers=headers) as resp:  # fmt: skip
        return resp.status, await resp.json()


async def test_search_place_get_and_list_through_the_gateway(world: World) -> None:
    http = world.http
    async with http.session.get(
        "/api/v1/restaurants/search?lat=37.7749&lon=-122.4194&cuisine=pizza&cuisine=thai"
        "&sort=rating&page_size=5",
        headers=CUSTOMER,
    ) as resp:
        assert resp.status == 200, await resp.text()
        found = await resp.json()
    assert [r["restaurant_id"] for r in found["restaurants"]] == ["rest_1"]

    status, first = await place(http, "gw-key-1")
    assert status == 201, first
    order = first["order"]
    assert order["status"] == "ORDER_STATUS_PLACED"
    assert order["timeline"][0]["seq"] == "1"  # int64 as a string
    assert order["pricing"]["total"]["amount_minor"].isdigit()
    status, again = await place(http, "gw-key-1")
    assert status == 201
    assert again["order"]["order_id"] == order["order_id"]  # same key, same order

    path = f"/api/v1/orders/{order['order_id']}"
    async with http.session.get(path, headers=CUSTOMER) as resp:
        assert resp.status == 200
        assert (await resp.json())["order"]["order_id"] == order["order_id"]
    async with http.session.get(path, headers=auth("customer", "cus_2")) as resp:
        assert resp.status == 404  # someone else's order does not exist for them
    async with http.session.get("/api/v1/orders?status=placed", headers=CUSTOMER) as resp:
        assert resp.status == 200
        assert [o["order_id"] for o in (await resp.json())["orders"]] == [order["order_id"]]


async def test_order_errors_map_to_http(world: World) -> None:
    http = world.http
    status, body = await place(http, "gw-declined", payment_method_id="pm_card_declined")
    assert status == 402, body
    assert details(body, "ErrorInfo")[0]["reason"] == "PAYMENT_CARD_DECLINED"
    status, body = await place(http, "gw-bad", items=[{"item_id": "margherita", "quantity": 0}])
    assert status == 400, body
    assert any(f.startswith("items") for f in violations(body))
    # No Idempotency-Key and none in the body (the design's example): a new order each
    # time, as any POST; a client that retries sends a key.
    placed = []
    for _ in range(2):
        async with http.session.post("/api/v1/orders", json=PLACE, headers=CUSTOMER) as resp:
            assert resp.status == 201, await resp.text()
            placed.append((await resp.json())["order_id"])
    assert placed[0] != placed[1]
    async with http.session.post("/api/v1/orders", json={**PLACE, "idempotency_key": "a"},
                                 headers={**CUSTOMER, "Idempotency-Key": "b"}) as resp:  # fmt: skip
        assert resp.status == 400
    async with http.session.post("/api/v1/orders", json=PLACE,
                                 headers=auth("driver", "drv_1")) as resp:  # fmt: skip
        assert resp.status == 403
    # Bad in hundreds of places, at length: still a 400 naming the first of them (the
    # status rides in gRPC trailers, which peers cap at a few KiB).
    junk = [{"item_id": "x" * 300, "quantity": -1, "special_instructions": "y" * 900}] * 100
    status, body = await place(http, "gw-junk", items=junk)
    assert status == 400, body
    bad = violations(body)
    assert 5 <= len(bad) <= 11 and all(len(f) <= 160 for f in bad), bad


async def test_tracking_an_order_as_a_snapshot_and_as_server_sent_events(world: World) -> None:
    http = world.http
    _, placed = await place(http, "gw-track")
    oid = placed["order"]["order_id"]
    track = f"/api/v1/orders/{oid}/track"
    async with http.session.get(track, headers={**CUSTOMER, "Accept": "application/json"}) as r:
        assert r.status == 200, await r.text()
        snap = await r.json()
    assert (snap["order_id"], snap["status"]) == (oid, "placed")

    headers = {**CUSTOMER, "Accept": "text/event-stream"}
    async with http.session.get(track, headers=headers) as resp:
        assert resp.status == 200
        events = sse_events(resp)
        first = await asyncio.wait_for(anext(events), 5)
        assert (first["id"], first["data"]["status"]) == ("1", "placed")
        await world.ops.assign_driver(pb.AssignDriverRequest(order_id=oid, driver_id="drv_1"))
        for s in (OS.ORDER_STATUS_CONFIRMED, OS.ORDER_STATUS_PREPARING):
            await world.ops.update_order_status(pb.UpdateOrderStatusRequest(order_id=oid,
                                                                            status=s))  # fmt: skip
        seen = [first]
        async with asyncio.timeout(10):
            async for event in events:
                if "data" in event:
                    seen.append(event)
                if seen[-1]["data"]["status"] == "preparing":
                    break
    assert [int(e["id"]) for e in seen] == list(range(1, len(seen) + 1))
    # Each event is a whole snapshot (changes close together may share one).
    timeline = seen[-1]["data"]["timeline"]
    assert [t["status"] for t in timeline][-2:] == ["confirmed", "preparing"]
    assert all(t["timestamp"].endswith("Z") for t in timeline)
    async with http.session.get(track, headers=auth("customer", "cus_2")) as resp:
        assert resp.status in (403, 404)


async def test_schemathesis_finds_no_server_error_and_no_nonconforming_reply(
    world: World, tmp_path: Path
) -> None:
    """Fuzzes every route of the live mesh from /openapi.json (bounded: a few examples each)."""
    st = Path(sys.executable).parent / "st"
    token = CUSTOMER["Authorization"]
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", f"{world.http.base}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "5", "--seed", "8",
        "--no-shrink", "--generation-database", "none", "--workers", "1",
        "--request-timeout", "10", "--max-time", "30",
        # A fixed deadline: a fuzzed one of 3 µs is rightly a 504, which is no finding.
        "-H", f"Authorization: {token}", "-H", "Accept: application/json",
        "-H", "X-Request-Timeout: 10",
        "--no-color", "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    async with asyncio.timeout(110):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert proc.returncode == 0, text[-6000:]
    assert "passed" in text.lower(), text[-2000:]
