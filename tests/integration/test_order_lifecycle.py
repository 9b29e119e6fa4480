"""An order's life through the real gRPC port: steps, who may make them, cancellation
refunds by stage, driver assignment, ratings, events on JetStream, and WatchOrder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import nats
import nats.js.errors
import psycopg
import pytest

from clients import OrderClient
from foodmesh.core.nats import Subjects
from foodmesh.v1 import catalog_pb2 as cpb
from foodmesh.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc
from foodmesh.v1 import order_pb2 as pb
from servers.runtime.config import Settings
from servers.runtime.serve import Resources, ServiceSpec, run_service
from tests.integration._order import Mesh, clients, order_mesh, place_request, reason, token

OS = common_pb2.OrderStatus
KITCHEN = [OS.ORDER_STATUS_CONFIRMED, OS.ORDER_STATUS_PREPARING, OS.ORDER_STATUS_READY_FOR_PICKUP]
ROAD = [OS.ORDER_STATUS_PICKED_UP, OS.ORDER_STATUS_IN_TRANSIT, OS.ORDER_STATUS_DELIVERED]


@pytest.fixture
async def mesh(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> AsyncIterator[Mesh]:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace) as m:  # fmt: skip
        yield m


async def step(c: OrderClient, order_id: str, status: int, **kw: str) -> pb.Order:
    req = pb.UpdateOrderStatusRequest(order_id=order_id, status=status, **kw)  # type: ignore[arg-type]
    return (await c.update_order_status(req)).order


async def to_stage(mesh: Mesh, order_id: str, stop: int) -> None:
    """Walks an order along the chain up to ``stop`` as its restaurant and driver would.

    The driver's steps go through Dispatch (a service acting for the driver), and
    delivery takes the PIN the customer sees.
    """
    async with clients(mesh, ("restaurant", "rest_1"), ("service", "dispatch"),
                       ("ops", "ops")) as (rest, svc, ops):  # fmt: skip
        for s in KITCHEN + ROAD:
            if s > stop:
                return
            if s == OS.ORDER_STATUS_PICKED_UP:
                await svc.assign_driver(pb.AssignDriverRequest(order_id=order_id,
                                                               driver_id="drv_1"))  # fmt: skip
            if s in KITCHEN:
                await step(rest, order_id, s)
                continue
            proof = None
            if s == OS.ORDER_STATUS_DELIVERED:
                got = await ops.get_order(pb.GetOrderRequest(order_id=order_id))
                async with clients(mesh, ("customer", got.order.customer_id)) as (me,):
                    mine = await me.get_order(pb.GetOrderRequest(order_id=order_id))
                proof = pb.DeliveryProof(pin=mine.order.delivery_pin)
            req = pb.UpdateOrderStatusRequest(order_id=order_id, status=s,  # type: ignore[arg-type]
                                              driver_id="drv_1", delivery_proof=proof)  # fmt: skip
            await svc.update_order_status(req)


async def test_an_order_walks_its_whole_life_and_payment_is_captured(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        o = (await me.place_order(place_request())).order
        await to_stage(mesh, o.order_id, OS.ORDER_STATUS_DELIVERED)
        done = (await me.get_order(pb.GetOrderRequest(order_id=o.order_id))).order
    assert done.status == OS.ORDER_STATUS_DELIVERED
    assert done.payment_status == pb.PAYMENT_STATUS_CAPTURED
    assert done.driver_id == "drv_1"
    assert [e.seq for e in done.timeline] == list(range(1, 9))
    expected = [OS.ORDER_STATUS_PLACED, *KITCHEN, OS.ORDER_STATUS_READY_FOR_PICKUP, *ROAD]
    assert [e.status for e in done.timeline] == expected
    assert "drv_1" in done.timeline[4].reason  # the assignment entry


async def test_every_illegal_transition_is_refused_naming_both_states(mesh: Mesh) -> None:
    chain = [OS.ORDER_STATUS_PLACED, *KITCHEN, *ROAD]
    async with clients(mesh, ("customer", "cus_1"), ("ops", "ops_1")) as (me, ops):
        o = (await me.place_order(place_request())).order
        await ops.assign_driver(pb.AssignDriverRequest(order_id=o.order_id, driver_id="drv_1"))
        for i, current in enumerate(chain):
            for target in chain[1:]:
                if target in (chain[i], chain[i + 1] if i + 1 < len(chain) else None):
                    continue  # the legal step, and the idempotent repeat
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await step(ops, o.order_id, target)
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                msg = err.value.details() or ""
                assert OS.Name(current).removeprefix("ORDER_STATUS_").lower() in msg
                assert OS.Name(target).removeprefix("ORDER_STATUS_").lower() in msg
            if i + 1 < len(chain):
                await step(ops, o.order_id, chain[i + 1])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.cancel_order(pb.CancelOrderRequest(order_id=o.order_id, reason="late"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(err.value) == "ILLEGAL_TRANSITION"


async def test_a_cancelled_order_refuses_every_step_naming_both_states(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("ops", "ops_1")) as (me, ops):
        o = (await me.place_order(place_request())).order
        await me.cancel_order(pb.CancelOrderRequest(order_id=o.order_id, reason="no longer"))
        for target in [*KITCHEN, *ROAD]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await step(ops, o.order_id, target)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert reason(err.value) == "ILLEGAL_TRANSITION"
            msg = err.value.details() or ""
            assert "cancelled" in msg
            assert OS.Name(target).removeprefix("ORDER_STATUS_").lower() in msg
        got = (await me.get_order(pb.GetOrderRequest(order_id=o.order_id))).order
        assert got.status == OS.ORDER_STATUS_CANCELLED and len(got.timeline) == 2


async def test_only_the_orders_own_restaurant_and_driver_move_their_steps(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("restaurant", "rest_2"),
                       ("restaurant", "rest_1"), ("driver", "drv_2"), ("driver", "drv_1"),
                       ("service", "dispatch")) as (me, rest2, rest1, drv2, drv1, svc):  # fmt: skip
        o = (await me.place_order(place_request())).order
        with pytest.raises(grpc.aio.AioRpcError) as err:  # another restaurant cannot see it
            await step(rest2, o.order_id, OS.ORDER_STATUS_CONFIRMED)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:  # customers have no step (role check)
            await step(me, o.order_id, OS.ORDER_STATUS_CONFIRMED)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for s in KITCHEN:
            await step(rest1, o.order_id, s)
        await svc.assign_driver(pb.AssignDriverRequest(order_id=o.order_id, driver_id="drv_1"))
        with pytest.raises(grpc.aio.AioRpcError) as err:  # the kitchen cannot pick up
            await step(rest1, o.order_id, OS.ORDER_STATUS_PICKED_UP)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for drv in (drv2, drv1):  # drivers step only through their DriverSession (Dispatch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await step(drv, o.order_id, OS.ORDER_STATUS_PICKED_UP)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:  # not the assigned driver
            await step(svc, o.order_id, OS.ORDER_STATUS_PICKED_UP, driver_id="drv_2")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        o2 = await step(svc, o.order_id, OS.ORDER_STATUS_PICKED_UP, driver_id="drv_1")
        assert o2.status == OS.ORDER_STATUS_PICKED_UP
        assert o2.timeline[-1].actor == "drv_1"
        again = await step(svc, o.order_id, OS.ORDER_STATUS_PICKED_UP, driver_id="drv_1")
        assert again == o2
        with pytest.raises(grpc.aio.AioRpcError) as err:  # AssignDriver is Dispatch's
            await rest1.assign_driver(pb.AssignDriverRequest(order_id=o.order_id, driver_id="x"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("stage", "who", "payment", "kept"),
    [
        (OS.ORDER_STATUS_PLACED, "customer", pb.PAYMENT_STATUS_VOIDED, 0),
        (OS.ORDER_STATUS_CONFIRMED, "customer", pb.PAYMENT_STATUS_VOIDED, 0),
        # subtotal 2698 + tax 236 = 2934: half kept (rounded up)
        (OS.ORDER_STATUS_PREPARING, "customer", pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 1467),
        (OS.ORDER_STATUS_READY_FOR_PICKUP, "customer", pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 2934),
        (OS.ORDER_STATUS_READY_FOR_PICKUP, "restaurant", pb.PAYMENT_STATUS_VOIDED, 0),
    ],
)
async def test_cancellation_refunds_by_stage(
    mesh: Mesh, stage: int, who: str, payment: int, kept: int
) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("restaurant", "rest_1")) as (me, rest):
        o = (await me.place_order(place_request())).order
        await to_stage(mesh, o.order_id, stage)
        canceller = me if who == "customer" else rest
        req = pb.CancelOrderRequest(order_id=o.order_id, reason="changed my mind")
        c = (await canceller.cancel_order(req)).order
        assert (await canceller.cancel_order(req)).order == c  # a retry changes nothing
    total = o.pricing.total.amount_minor
    assert c.status == OS.ORDER_STATUS_CANCELLED
    assert c.cancellation_reason == "changed my mind"
    assert c.payment_status == payment
    assert c.refunded.amount_minor == total - kept
    assert c.timeline[-1].status == OS.ORDER_STATUS_CANCELLED
    async with await psycopg.AsyncConnection.connect(mesh.pg_url) as conn:
        cur = await conn.execute("SELECT amount_minor, captured_minor, refunded_minor"
                                 " FROM orders.sandbox_payments")  # fmt: skip
        assert await cur.fetchall() == [(total, total if kept else 0, total - kept)]


async def test_a_customer_cannot_cancel_someone_elses_order(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("customer", "cus_2")) as (me, other):
        o = (await me.place_order(place_request())).order
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await other.cancel_order(pb.CancelOrderRequest(order_id=o.order_id, reason="x"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.cancel_order(pb.CancelOrderRequest(order_id=o.order_id))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_events_arrive_on_jetstream_in_order_per_order(mesh: Mesh, namespace: str) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        a = (await me.place_order(place_request("a"))).order
        b = (await me.place_order(place_request("b"))).order
        await to_stage(mesh, a.order_id, OS.ORDER_STATUS_PREPARING)
        await me.cancel_order(pb.CancelOrderRequest(order_id=b.order_id, reason="oops"))
    events = await read_events(mesh, namespace, 7)
    by_order: dict[str, list[tuple[str, int]]] = {}
    for subject, ev in events:
        by_order.setdefault(ev.order.order_id, []).append((subject, ev.change.seq))
        assert ev.event_id == f"{ev.order.order_id}.{ev.change.seq}"
    s = Subjects(namespace).subject
    assert by_order[a.order_id] == [(s("orders.v1.placed"), 1), (s("orders.v1.confirmed"), 2),
                                    (s("orders.v1.preparing"), 3)]  # fmt: skip
    assert by_order[b.order_id] == [(s("orders.v1.placed"), 1), (s("orders.v1.cancelled"), 2)]


async def read_events(mesh: Mesh, namespace: str, n: int) -> list[tuple[str, pb.OrderEvent]]:
    subjects = Subjects(namespace)
    nc = await nats.connect(mesh.order.settings.nats_url)
    try:
        js = nc.jetstream()
        for _ in range(100):  # the relay publishes within moments
            try:
                info = await js.stream_info(subjects.stream("ORDERS"))
                if info.state.messages >= n:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.05)
        sub = await js.pull_subscribe(subjects.subject("orders.v1.>"), durable=None,
                                      stream=subjects.stream("ORDERS"))  # fmt: skip
        msgs = await sub.fetch(n, timeout=3)
        return [(m.subject, pb.OrderEvent.FromString(m.data)) for m in msgs]
    finally:
        await nc.close()


async def test_watch_order_sends_the_state_then_each_change_and_ends(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        o = (await me.place_order(place_request())).order
        got: list[pb.WatchOrderResponse] = []

        async def watch() -> None:
            async for msg in me.watch_order(pb.WatchOrderRequest(order_id=o.order_id)):
                got.append(msg)

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        await to_stage(mesh, o.order_id, OS.ORDER_STATUS_DELIVERED)
        await asyncio.wait_for(task, timeout=10)  # ends by itself after delivered
    assert not got[0].HasField("change") and got[0].order.status == OS.ORDER_STATUS_PLACED
    assert [m.change.seq for m in got[1:]] == list(range(2, 9))
    assert got[-1].order.status == OS.ORDER_STATUS_DELIVERED
    assert got[5].order.driver_id == "drv_1"


async def test_watch_order_resumes_after_seq_without_gaps(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1"), ("customer", "cus_2")) as (me, other):
        o = (await me.place_order(place_request())).order
        await to_stage(mesh, o.order_id, OS.ORDER_STATUS_PREPARING)  # seq 1..3
        stream = me.watch_order(pb.WatchOrderRequest(order_id=o.order_id, after_seq=1))
        first = [await anext(stream), await anext(stream)]
        assert [m.change.seq for m in first] == [2, 3]
        assert [m.change.status for m in first] == KITCHEN[:2]
        async with clients(mesh, ("restaurant", "rest_1")) as (rest,):
            await step(rest, o.order_id, OS.ORDER_STATUS_READY_FOR_PICKUP)
        nxt = await asyncio.wait_for(anext(stream), timeout=5)
        assert nxt.change.seq == 4 and nxt.change.status == OS.ORDER_STATUS_READY_FOR_PICKUP
        await me.cancel_order(pb.CancelOrderRequest(order_id=o.order_id, reason="too slow"))
        last = await asyncio.wait_for(anext(stream), timeout=5)
        assert last.change.status == OS.ORDER_STATUS_CANCELLED
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(other.watch_order(pb.WatchOrderRequest(order_id=o.order_id)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await anext(me.watch_order(pb.WatchOrderRequest(order_id=o.order_id, after_seq=99)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rate_order_once_after_delivery_reaches_the_catalog(mesh: Mesh) -> None:
    async with clients(mesh, ("customer", "cus_1")) as (me,):
        o = (await me.place_order(place_request())).order
        rate = pb.RateOrderRequest(order_id=o.order_id, restaurant_rating=4,
                                   restaurant_review="good", driver_rating=5)  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.rate_order(rate)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await to_stage(mesh, o.order_id, OS.ORDER_STATUS_DELIVERED)
        r = await me.rate_order(rate)
        assert (r.restaurant_rating, r.restaurant_review_count) == (4.0, 1)
        assert await me.rate_order(rate) == r  # a retry: same answer, counted once
        rate.restaurant_rating = 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.rate_order(rate)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    from clients import CatalogClient

    async with CatalogClient(mesh.catalog.target, options=token("ops", "ops")) as cat:
        reviews = await cat.list_reviews(cpb.ListReviewsRequest(restaurant_id="rest_1"))
    assert [(x.order_id, x.rating, x.text) for x in reviews.reviews] == [(o.order_id, 4, "good")]
    async with await psycopg.AsyncConnection.connect(mesh.pg_url) as conn:
        cur = await conn.execute("SELECT driver_id, driver_rating, driver_forwarded"
                                 " FROM orders.ratings")  # fmt: skip
        # No Dispatch configured: the driver's rating is kept to forward later.
        assert await cur.fetchall() == [("drv_1", 5, False)]


async def test_an_event_committed_while_the_relay_is_stopped_is_published_after_restart(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    urls = {"pg_url": pg_url, "redis_url": redis_url, "nats_url": nats_url,
            "namespace": namespace}  # fmt: skip
    async with order_mesh(**urls, extra={"FOODMESH_ORDER_RELAY": "0"}) as stopped:  # type: ignore[arg-type]
        async with clients(stopped, ("customer", "cus_1")) as (me,):
            o = (await me.place_order(place_request())).order
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM orders.outbox"
                                     " WHERE published_at IS NULL")  # fmt: skip
            assert await cur.fetchone() == (1,)
        nc = await nats.connect(nats_url)
        try:  # the service creates its stream in the background at start: wait for it
            async with asyncio.timeout(10):
                while True:
                    try:
                        info = await nc.jetstream().stream_info(
                            Subjects(namespace).stream("ORDERS")
                        )
                        break
                    except nats.js.errors.NotFoundError:
                        await asyncio.sleep(0.05)
        finally:
            await nc.close()
        assert info.state.messages == 0
    async with order_mesh(**urls) as restarted:  # type: ignore[arg-type]
        events = await read_events(restarted, namespace, 1)
    assert [(ev.order.order_id, ev.change.seq) for _, ev in events] == [(o.order_id, 1)]


class ScriptedDispatch(dispatch_pb2_grpc.DispatchServiceServicer):
    """Dispatch's RateDriver over its contract, recording what it is given."""

    def __init__(self) -> None:
        self.ratings: list[tuple[str, str, int]] = []

    async def RateDriver(  # noqa: N802
        self, request: dispatch_pb2.RateDriverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> dispatch_pb2.RateDriverResponse:
        self.ratings.append((request.order_id, request.driver_id, request.rating))
        return dispatch_pb2.RateDriverResponse(rating=float(request.rating), rating_count=1)


async def test_a_driver_rating_goes_to_dispatch_when_it_is_configured(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    scripted = ScriptedDispatch()  # type: ignore[abstract]  # only RateDriver is called

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(scripted, server)

    spec = ServiceSpec(name="dispatch", grpc_services=("foodmesh.v1.DispatchService",),
                       register=register)  # fmt: skip
    async with (
        run_service(spec, Settings(service="dispatch", metrics_enabled=False)) as dispatch,
        order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                   extra={"FOODMESH_ORDER_DISPATCH_TARGET": dispatch.target}) as mesh,
        clients(mesh, ("customer", "cus_1")) as (me,),
    ):  # fmt: skip
        o = (await me.place_order(place_request())).order
        await to_stage(mesh, o.order_id, OS.ORDER_STATUS_DELIVERED)
        await me.rate_order(pb.RateOrderRequest(order_id=o.order_id, restaurant_rating=5,
                                                driver_rating=3))  # fmt: skip
    assert scripted.ratings == [(o.order_id, "drv_1", 3)]
