"""ListReviews shows who wrote a review only as a display name (issue 17, item 8).
Real gateway, Catalog and Order services."""

from __future__ import annotations

import base64
import json

import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._gateway import auth, gateway
from tests.integration._order import clients, order_mesh, place_request

pytestmark = pytest.mark.timeout(120)
OS = common_pb2.OrderStatus


def _decoded(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode(errors="replace")
    except ValueError:
        return ""


async def test_reviews_show_a_display_name_not_customer_or_order_ids(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace) as mesh:  # fmt: skip
        orders = []
        async with clients(mesh, ("customer", "cus_secret_1"), ("ops", "ops_1")) as (me, ops):
            for i in range(3):
                o = (await me.place_order(place_request(f"rv-{i}"))).order
                for s in (OS.ORDER_STATUS_CONFIRMED, OS.ORDER_STATUS_PREPARING,
                          OS.ORDER_STATUS_READY_FOR_PICKUP, OS.ORDER_STATUS_PICKED_UP,
                          OS.ORDER_STATUS_IN_TRANSIT, OS.ORDER_STATUS_DELIVERED):  # fmt: skip
                    await ops.update_order_status(
                        pb.UpdateOrderStatusRequest(order_id=o.order_id, status=s)
                    )
                rate = pb.RateOrderRequest(order_id=o.order_id, restaurant_rating=4,
                                           restaurant_review=f"tasty {i}")  # fmt: skip
                await me.rate_order(rate)
                orders.append(o.order_id)
        async with gateway({"catalog": mesh.catalog.target, "order": mesh.order.target}) as http:
            seen: list[dict[str, object]] = []
            page_token = ""
            while True:
                q = "page_size=2" + (f"&page_token={page_token}" if page_token else "")
                path = f"/api/v1/restaurants/rest_1/reviews?{q}"
                async with http.session.get(path, headers=auth("customer", "cus_other")) as resp:
                    assert resp.status == 200, await resp.text()
                    raw = await resp.text()
                    body = json.loads(raw)
                assert "cus_secret_1" not in raw and not any(o in raw for o in orders), raw
                page_token = body.get("next_page_token", "")
                decoded = _decoded(page_token)
                assert not any(o in decoded for o in orders), decoded  # nor in the cursor
                seen += body["reviews"]
                if not page_token:
                    break
        assert [r["text"] for r in seen] == ["tasty 2", "tasty 1", "tasty 0"]
        assert all(r["author_name"] == "Customer" for r in seen), seen
        assert all(not r.get("customer_id") and not r.get("order_id") for r in seen), seen
