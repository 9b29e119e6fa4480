"""Proof of delivery: a PIN only the customer sees, checked on delivery, road steps only
through the driver's session (issue 17, item 6). Real gateway, Order, Dispatch, Location."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from tests.integration._dispatch import REST, Driver, upsert
from tests.integration._location import wait_for
from tests.security._orders import Live, live

pytestmark = pytest.mark.timeout(180)


async def _status(w: Live, oid: str) -> dict[str, Any]:
    code, body = await w.call("GET", f"/api/v1/orders/{oid}", "ops", "ops_1")
    assert code == 200, body
    return dict(body["order"])


async def _confirmed(w: Live, customer: str, key: str, **changes: Any) -> tuple[str, str]:
    """Places an order through the gateway and confirms it as the restaurant: (id, PIN)."""
    code, body = await w.place(customer, key, **changes)
    assert code == 201, body
    order = body["order"]
    pin = order.get("delivery_pin", "")
    assert len(pin) == 4 and pin.isdigit(), order
    code, body = await w.call("POST", f"/api/v1/orders/{order['order_id']}/status",
                              "restaurant", "rest_1",
                              json={"status": "ORDER_STATUS_CONFIRMED"})  # fmt: skip
    assert code == 200, body  # the kitchen's steps go on as before
    return order["order_id"], pin


async def _assigned(w: Live, app: Driver, oid: str) -> None:
    offer = (await app.expect("offer", within=15)).offer
    assert offer.order_id == oid
    await app.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
    await app.expect("assignment_confirmed")

    async def has_driver() -> bool:
        return (await _status(w, oid)).get("driver_id") == app.driver_id

    await wait_for(has_driver, within=10)


async def _done(app: Driver, seq: int, **action: Any) -> dpb.SessionState:
    """Sends an action and returns the state that answers it."""
    await app.act(seq, **action)
    while True:
        msg = await app.expect("state")
        if msg.ack_seq == seq:
            return msg.state


async def _rejected(app: Driver, seq: int, **action: Any) -> dpb.ActionRejected:
    await app.act(seq, **action)
    return (await app.expect("action_rejected")).action_rejected


async def test_only_the_customer_sees_the_pin_and_delivery_needs_it(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with live(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                    namespace=namespace, state_dir=tmp_path) as w:  # fmt: skip
        await upsert(w.dispatch, "drv_a")
        async with Driver(w.dispatch, "drv_a") as app:
            await app.at(REST[0] + 0.003, REST[1])
            await app.open_session()
            oid, pin = await _confirmed(w, "cus_pin", "pod-1")
            await _assigned(w, app, oid)

            # The customer sees the PIN in their order; its driver and restaurant never do.
            code, mine = await w.call("GET", f"/api/v1/orders/{oid}", "customer", "cus_pin")
            assert code == 200 and mine["order"]["delivery_pin"] == pin
            for role, who in (("driver", "drv_a"), ("restaurant", "rest_1")):
                code, seen = await w.call("GET", f"/api/v1/orders/{oid}", role, who)
                assert code == 200, seen
                assert not seen["order"].get("delivery_pin"), (role, seen)

            # The driver cannot skip the session: the generic status route refuses road steps.
            for step in ("ORDER_STATUS_PICKED_UP", "ORDER_STATUS_DELIVERED"):
                path = f"/api/v1/orders/{oid}/status"
                code, body = await w.call("POST", path, "driver", "drv_a",
                                          json={"status": step, "reason": "x"})  # fmt: skip
                assert code == 403, (step, code, body)
            assert (await _status(w, oid))["status"] == "ORDER_STATUS_CONFIRMED"

            await _done(app, 2, picked_up=dpb.OrderProgress(order_id=oid))
            code, body = await w.call("POST", f"/api/v1/orders/{oid}/status", "driver", "drv_a",
                                      json={"status": "ORDER_STATUS_DELIVERED"})  # fmt: skip
            assert code == 403, body

            # No proof, a photo for an order not left at the door, a wrong PIN: refused.
            got = await _rejected(app, 3, delivered=dpb.Delivered(order_id=oid))
            assert got.code == "INVALID_ARGUMENT" and "pin" in got.message, got
            got = await _rejected(app, 4, delivered=dpb.Delivered(order_id=oid, photo_id="p-1"))
            assert got.code == "INVALID_ARGUMENT" and "photo" in got.message, got
            wrong = f"{(int(pin) + 1) % 10_000:04d}"
            got = await _rejected(app, 5, delivered=dpb.Delivered(order_id=oid, pin=wrong))
            assert got.code == "INVALID_ARGUMENT" and "pin" in got.message, got
            order = await _status(w, oid)
            assert order["status"] == "ORDER_STATUS_IN_TRANSIT"
            assert order["payment_status"] == "PAYMENT_STATUS_AUTHORIZED"

            state = await _done(app, 6, delivered=dpb.Delivered(order_id=oid, pin=pin))
            assert state.status == common_pb2.DRIVER_STATUS_AVAILABLE
            order = await _status(w, oid)
            assert order["status"] == "ORDER_STATUS_DELIVERED"
            assert order["payment_status"] == "PAYMENT_STATUS_CAPTURED"


async def test_pin_locks_after_five_wrong_tries_and_a_photo_serves_leave_at_door(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with live(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                    namespace=namespace, state_dir=tmp_path) as w:  # fmt: skip
        await upsert(w.dispatch, "drv_b")
        await upsert(w.dispatch, "drv_c")
        async with Driver(w.dispatch, "drv_b") as b, Driver(w.dispatch, "drv_c") as c:
            await b.at(REST[0] + 0.003, REST[1])
            await b.open_session()
            locked, pin = await _confirmed(w, "cus_lock", "pod-2")
            await _assigned(w, b, locked)
            await _done(b, 2, picked_up=dpb.OrderProgress(order_id=locked))
            wrong = f"{(int(pin) + 5000) % 10_000:04d}"
            for seq in range(3, 8):
                got = await _rejected(b, seq, delivered=dpb.Delivered(order_id=locked, pin=wrong))
                assert got.code == "INVALID_ARGUMENT", got
            got = await _rejected(b, 8, delivered=dpb.Delivered(order_id=locked, pin=pin))
            assert got.code == "FAILED_PRECONDITION" and "locked" in got.message, got
            assert (await _status(w, locked))["status"] == "ORDER_STATUS_IN_TRANSIT"

            await c.at(REST[0] + 0.004, REST[1])
            await c.open_session()
            door, _ = await _confirmed(w, "cus_door", "pod-3", leave_at_door=True)
            await _assigned(w, c, door)
            await _done(c, 2, picked_up=dpb.OrderProgress(order_id=door))
            state = await _done(
                c, 3, delivered=dpb.Delivered(order_id=door, photo_id="photo-at-door-1")
            )
            assert state.status == common_pb2.DRIVER_STATUS_AVAILABLE
            order = await _status(w, door)
            assert order["status"] == "ORDER_STATUS_DELIVERED"
            assert any("photo-at-door-1" in e.get("reason", "") for e in order["timeline"])
