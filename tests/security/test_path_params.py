"""The gateway's transcoding: a path parameter is never overridden by the query or the body."""

from __future__ import annotations

import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as opb
from tests.integration._gateway import Http, auth, violations
from tests.integration._order import Mesh, place_request

OS = common_pb2.OrderStatus
CUSTOMER = auth("customer", "cus_1")


async def two_orders(mesh: Mesh) -> tuple[str, str]:
    async with mesh.client("customer", "cus_1") as client:
        a = (await client.place_order(place_request("a"))).order.order_id
        b = (await client.place_order(place_request("b"))).order.order_id
    return a, b


@pytest.mark.parametrize("name", ["orderId", "order_id"])
async def test_a_query_parameter_cannot_replace_the_order_of_the_path(
    mesh: Mesh, order_http: Http, name: str
) -> None:
    a, b = await two_orders(mesh)
    async with order_http.session.get(f"/api/v1/orders/{a}?{name}={b}", headers=CUSTOMER) as resp:
        body = await resp.json()
        status = resp.status
    assert status == 400, body
    assert name in violations(body)
    # The path alone still reads the path's order.
    async with order_http.session.get(f"/api/v1/orders/{a}", headers=CUSTOMER) as resp:
        assert resp.status == 200
        assert (await resp.json())["order"]["order_id"] == a


async def test_a_body_cannot_name_another_order_than_the_path(mesh: Mesh, order_http: Http) -> None:
    a, b = await two_orders(mesh)
    other = {"orderId": b, "reason": "changed my mind"}
    async with order_http.session.post(
        f"/api/v1/orders/{a}:cancel", json=other, headers=CUSTOMER
    ) as r:
        body = await r.json()
        status = r.status
    assert status == 400, body
    assert "orderId" in violations(body)
    async with mesh.client("customer", "cus_1") as client:
        for oid in (a, b):
            order = (await client.get_order(opb.GetOrderRequest(order_id=oid))).order
            assert order.status == OS.ORDER_STATUS_PLACED, oid
