"""Request bodies at the gateway: element counts are capped, and a large body is parsed
without holding up the other requests."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servers.runtime.serve import RunningService
from tests.integration._gateway import Http, auth, gateway, violations

OPS = auth("ops", "ops_1")
CUSTOMER = auth("customer", "cus_1")


@pytest.fixture
async def http(catalog: RunningService) -> AsyncIterator[Http]:
    async with gateway({"catalog": catalog.target}) as h:
        yield h


def big_menu(*, bad_last_price: bool) -> bytes:
    """A menu of 2,000 items (the most a category may hold), just under 1 MiB of JSON."""
    options = [{"option_id": f"o{j}", "name": f"Option {j}",
                "price_delta": {"amount_minor": "50", "currency_code": "USD"}}
               for j in range(3)]  # fmt: skip
    items: list[dict[str, Any]] = [
        {"item_id": f"i{i}", "name": f"Item {i}",
         "price": {"amount_minor": "1200", "currency_code": "USD"}, "available": True,
         "customizations": [{"group_id": "g", "name": "Size", "max_choices": 1,
                             "options": options}]}
        for i in range(2000)
    ]  # fmt: skip
    if bad_last_price:
        items[-1]["price"]["amount_minor"] = "lots"
    raw = json.dumps({"categories": [{"category_id": "c", "name": "Mains", "items": items}]})
    assert len(raw) < 1 << 20
    return raw.encode()


async def test_a_body_of_250_000_empty_items_gets_400_naming_the_field(http: Http) -> None:
    raw = json.dumps({"categories": [{}] * 250_000}).encode()
    for where in (http, None):
        if where is None:  # the gateway refuses it itself: no upstream needed to say so
            async with gateway({"catalog": "127.0.0.1:1"}) as alone:
                body, status = await put_menu(alone, raw)
        else:
            body, status = await put_menu(where, raw)
        assert status == 400, body
        assert violations(body) == {"categories": "at most 100 items"}


async def put_menu(http: Http, raw: bytes) -> tuple[dict[str, Any], int]:
    headers = {**OPS, "Content-Type": "application/json"}
    async with http.session.put(
        "/api/v1/restaurants/rest_1/menu", data=io.BytesIO(raw), headers=headers
    ) as resp:
        return await resp.json(), resp.status


async def test_a_body_over_the_routes_limit_gets_413_before_it_is_read(http: Http) -> None:
    # GetRestaurant's neighbour SetRestaurantPaused takes ids and a flag: 256 KiB is plenty.
    raw = json.dumps({"paused": True, "reason": "x" * 500_000}).encode()
    headers = {**OPS, "Content-Type": "application/json"}
    async with http.session.post(
        "/api/v1/restaurants/rest_1:pause", data=io.BytesIO(raw), headers=headers
    ) as resp:
        body = await resp.json()
        assert resp.status == 413, body
    assert "262144" in body["message"]


async def test_a_large_body_does_not_hold_up_a_small_request(http: Http) -> None:
    raw = big_menu(bad_last_price=True)
    host, port = http.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = (
            f"PUT /api/v1/restaurants/rest_1/menu HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {OPS['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
        )
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for all of it
        writer.write(head.encode() + raw)
        await writer.drain()
        big = asyncio.ensure_future(reader.read())
        # Sent once the big body is on its way: the gateway is parsing it meanwhile.
        async with http.session.get("/api/v1/restaurants/rest_1", headers=CUSTOMER) as resp:
            assert resp.status == 200
            assert (await resp.json())["restaurant"]["restaurant_id"] == "rest_1"
        assert not big.done(), "the small request waited for the large body to be parsed"
        answer = await big
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert any("amount_minor" in f for f in violations(body)), body
