"""PlaceOrder through the real gRPC port, with the real Catalog: pricing, idempotency,
payments, validation, and what a customer may see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import psycopg
import pytest

from clients import OrderClient
from foodmesh.v1 import common_pb2
from foodmesh.v1 import order_pb2 as pb
from tests.integration._order import (
    FAR,
    Mesh,
    clients,
    order_mesh,
    place_request,
    reason,
    usd,
    violations,
)

OS = common_pb2.OrderStatus


@pytest.fixture
async def mesh(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> AsyncIterator[Mesh]:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace) as m:  # fmt: skip
        yield m


async def count(pg_url: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(query)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_placed_order_reads_back_priced_from_the_menu(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        placed = (await me.place_order(place_request())).order
        got = (await me.get_order(pb.GetOrderRequest(order_id=placed.order_id))).order
    assert got == placed
    assert got.order_id.startswith("ord_") and got.customer_id == "cus_1"
    assert got.status == OS.ORDER_STATUS_PLACED
    assert got.restaurant_name == "Luigi's Pizza"
    lines = [(i.item_id, i.unit_price.amount_minor, i.line_total.amount_minor) for i in got.items]
    assert lines == [("margherita", 1799, 1799), ("salad", 899, 899)]
    p = got.pricing
    assert p.subtotal == usd(2698)
    assert p.delivery_fee == usd(299)  # the zone's
    assert p.service_fee == usd(150)
    assert p.tax == usd(236)  # 8.75 % of 2698
    assert p.total == usd(2698 + 299 + 150 + 236)
    assert got.payment_status == pb.PAYMENT_STATUS_AUTHORIZED
    assert [(e.seq, e.status, e.actor) for e in got.timeline] == [(1, OS.ORDER_STATUS_PLACED,
                                                                   "cus_1")]  # fmt: skip
    assert got.estimated_delivery_time.ToSeconds() > got.created_at.ToSeconds() + 18 * 60
    assert got.ready_time.ToSeconds() == got.created_at.ToSeconds() + 18 * 60
    assert got.restaurant_location.lat == pytest.approx(37.7755)
    assert got.delivery_address.street == "456 Mission St"


async def test_place_order_twice_with_same_key_returns_same_order(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("customer", "cus_2")) as (me, other):
        a = (await me.place_order(place_request("same"))).order
        b = (await me.place_order(place_request("same"))).order
        assert a == b
        # The key is the customer's own: another customer's same key is another order.
        c = (await other.place_order(place_request("same"))).order
        assert c.order_id != a.order_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("same", payment_method_id="pm_card_mastercard"))
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.orders") == 2
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.sandbox_payments") == 2


@pytest.mark.parametrize(
    ("card", "code", "why"),
    [
        ("pm_card_declined", grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_CARD_DECLINED"),
        ("pm_card_insufficient_funds", grpc.StatusCode.FAILED_PRECONDITION,
         "PAYMENT_INSUFFICIENT_FUNDS"),
        ("pm_card_timeout", grpc.StatusCode.UNAVAILABLE, "PAYMENT_UNAVAILABLE"),
    ],
)  # fmt: skip
async def test_a_failed_payment_creates_nothing_and_the_key_can_be_retried(
    mesh: Mesh, card: str, code: grpc.StatusCode, why: str
) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        for _ in range(2):  # the same key again: same answer, still nothing made
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await me.place_order(place_request("k", payment_method_id=card))
            assert err.value.code() == code
            assert reason(err.value) == why
        assert await count(mesh.pg_url, "SELECT count(*) FROM orders.orders") == 0
        assert await count(mesh.pg_url, "SELECT count(*) FROM orders.outbox") == 0
        assert await count(mesh.pg_url, "SELECT count(*) FROM orders.idempotency_keys") == 0
        # With a good card the same key now places the order.
        ok = (await me.place_order(place_request("k"))).order
        assert ok.payment_status == pb.PAYMENT_STATUS_AUTHORIZED


async def test_bad_requests_name_every_field(mesh: Mesh) -> None:
    bad = place_request(
        "",
        items=[pb.OrderItemInput(item_id="salad", quantity=1),
               pb.OrderItemInput(item_id="salad", quantity=1),
               pb.OrderItemInput(item_id="salad", quantity=100)],
        delivery_address=common_pb2.Address(lat=95, lon=-122),
        payment_method_id="p" * 256,  # (none at all pays with the default saved method)
    )  # fmt: skip
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == {"idempotency_key", "items[2].quantity",
                                          "delivery_address.lat", "payment_method_id"}  # fmt: skip
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.idempotency_keys") == 0


async def test_unknown_restaurant_and_item_are_not_found(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("a", restaurant_id="rest_nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason(err.value) == "RESTAURANT_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("b", items=[
                pb.OrderItemInput(item_id="salad", quantity=2),
                pb.OrderItemInput(item_id="tiramisu", quantity=1)]))  # fmt: skip
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "items[1]" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"items": [pb.OrderItemInput(item_id="marinara", quantity=1)]}, "ITEM_UNAVAILABLE"),
        ({"items": [pb.OrderItemInput(item_id="salad", quantity=1)]}, "BELOW_MINIMUM_ORDER"),
        ({"delivery_address": FAR}, "OUTSIDE_DELIVERY_ZONE"),
        ({"items": [pb.OrderItemInput(item_id="salad", quantity=2, price=usd(799))]},
         "PRICE_CHANGED"),
        ({"promo_code": "SUMMER20"}, "PROMO_UNAVAILABLE"),
    ],
)  # fmt: skip
async def test_orders_the_restaurant_cannot_take_are_refused(
    mesh: Mesh, overrides: dict[str, object], why: str
) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("k", **overrides))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err.value) == why
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.sandbox_payments") == 0


async def test_a_client_price_equal_to_the_menu_is_accepted(mesh: Mesh) -> None:
    items = [pb.OrderItemInput(item_id="salad", quantity=2, price=usd(899), name="Salad")]
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        o = (await me.place_order(place_request("k", items=items))).order
    assert o.pricing.subtotal == usd(1798) and o.items[0].name == "Caesar Salad"


async def test_someone_elses_order_is_not_found(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("customer", "cus_2"),
                       ("restaurant", "rest_2"), ("driver", "drv_9"),
                       ("restaurant", "rest_1")) as (me, other, rest2, driver, rest1):  # fmt: skip
        o = (await me.place_order(place_request())).order
        missing = "ord_" + "0" * 26

        async def refusal(c: OrderClient, order_id: str) -> list[tuple[grpc.StatusCode, str, str]]:
            """What each read or change of ``order_id`` answers to ``c``."""
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: c.get_order(pb.GetOrderRequest(order_id=order_id)),
                lambda: c.cancel_order(pb.CancelOrderRequest(order_id=order_id, reason="x")),
                lambda: c.rate_order(pb.RateOrderRequest(order_id=order_id, restaurant_rating=5)),
                lambda: anext(c.watch_order(pb.WatchOrderRequest(order_id=order_id))),
            ]
            out = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call()
                details = (err.value.details() or "").replace(order_id, "<id>")
                out.append((err.value.code(), reason(err.value), details))
            return out

        for stranger in (other, rest2, driver):
            # Someone else's order answers exactly as an order that does not exist.
            seen = await refusal(stranger, o.order_id)
            assert seen == await refusal(stranger, missing)
            if stranger is other:  # a customer may make all four calls: each NOT_FOUND
                assert {code for code, _, _ in seen} == {grpc.StatusCode.NOT_FOUND}
            else:  # a role refused a call is refused the same for any order id
                assert grpc.StatusCode.NOT_FOUND in {code for code, _, _ in seen}
            listed = await stranger.list_orders(pb.ListOrdersRequest())
            assert o.order_id not in {x.order_id for x in listed.orders}
        # The restaurant sees the order as its customer does, but for the delivery PIN and
        # what paid for it.
        assert o.delivery_pin and o.payment_method_name
        theirs = pb.Order()
        theirs.CopyFrom(o)
        theirs.delivery_pin = ""
        theirs.payment_method_id = theirs.payment_method_name = ""
        assert (await rest1.get_order(pb.GetOrderRequest(order_id=o.order_id))).order == theirs


async def test_list_orders_pages_newest_first_within_the_callers_scope(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("customer", "cus_2"),
                       ("restaurant", "rest_1")) as (me, other, rest):  # fmt: skip
        mine = [(await me.place_order(place_request(f"k{i}"))).order.order_id for i in range(5)]
        await other.place_order(place_request("x"))
        seen: list[str] = []
        token = ""
        while True:
            page = await me.list_orders(pb.ListOrdersRequest(page_size=2, page_token=token))
            seen += [o.order_id for o in page.orders]
            token = page.next_page_token
            if not token:
                break
        assert seen == mine[::-1]
        incoming = await rest.list_orders(pb.ListOrdersRequest(
            status=[OS.ORDER_STATUS_PLACED], page_size=100))  # fmt: skip
        assert len(incoming.orders) == 6
        none = await rest.list_orders(pb.ListOrdersRequest(status=[OS.ORDER_STATUS_DELIVERED]))
        assert list(none.orders) == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await other.list_orders(pb.ListOrdersRequest(page_token=page.next_page_token or "x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(err.value)


async def test_concurrent_retries_with_one_key_make_one_order_and_one_authorization(
    mesh: Mesh,
) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        replies = await asyncio.gather(*(me.place_order(place_request("race")) for _ in range(6)))
    assert len({r.order.order_id for r in replies}) == 1
    assert all(r.order == replies[0].order for r in replies)
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.orders") == 1
    assert await count(mesh.pg_url, "SELECT count(*) FROM orders.sandbox_payments") == 1
