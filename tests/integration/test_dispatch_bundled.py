"""A bundled trip end to end through real sessions: two orders of one restaurant, one driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import REST, DispatchMesh, Driver, dispatch_mesh, pin_of, upsert
from tests.integration._location import wait_for
from tests.integration._order import HOME, place_request

pytestmark = pytest.mark.timeout(150)
OS = common_pb2.OrderStatus


async def order_for(mesh: DispatchMesh, customer: str, key: str) -> str:
    """Placed by ``customer`` at the one restaurant, confirmed by it."""
    away = common_pb2.Address(street="9 Oak St", city="San Francisco", lat=HOME.lat + 0.004,
                              lon=HOME.lon + 0.004)  # fmt: skip
    async with (
        mesh.order_client("customer", customer) as c,
        mesh.order_client("restaurant", "rest_1") as r,
    ):
        req = place_request(key, delivery_address=away if customer == "cust_2" else HOME)
        oid = (await c.place_order(req)).order.order_id
        await r.update_order_status(
            opb.UpdateOrderStatusRequest(order_id=oid, status=OS.ORDER_STATUS_CONFIRMED)
        )
    return oid


async def tracked(mesh: DispatchMesh, customer: str, oid: str) -> opb.Order:
    async with mesh.order_client("customer", customer) as c:
        return (await c.get_order(opb.GetOrderRequest(order_id=oid))).order


async def test_two_orders_of_one_restaurant_ride_one_trip_and_both_customers_track_it(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        extra={"FOODMESH_DISPATCH_MAX_ORDERS": "2"},
    ) as mesh:
        await upsert(mesh, "solo")
        async with Driver(mesh, "solo") as solo:
            await solo.at(REST[0] + 0.003, REST[1])
            await solo.open_session()
            first = await order_for(mesh, "cust_1", "k-bundle-1")
            offer = (await solo.expect("offer", within=10)).offer
            assert offer.order_id == first
            await solo.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await solo.expect("assignment_confirmed")

            # The second order of the same restaurant joins the trip under way.
            second = await order_for(mesh, "cust_2", "k-bundle-2")
            offer = (await solo.expect("offer", within=10)).offer
            assert offer.order_id == second
            assert list(offer.why.bundle_order_ids) == [first]  # joins the trip under way
            await solo.act(2, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await solo.expect("assignment_confirmed")
            state = (await solo.expect("state")).state
            assert state.status == common_pb2.DRIVER_STATUS_ON_DELIVERY
            kinds = [(s.kind, s.order_id) for s in state.plan]
            assert kinds[0][0] == dpb.TripStop.KIND_PICKUP  # one stop at the restaurant
            assert kinds[1:] == [
                (dpb.TripStop.KIND_DROPOFF, first),
                (dpb.TripStop.KIND_DROPOFF, second),
            ]

            async def both_assigned() -> bool:
                got = [await tracked(mesh, c, o) for c, o in (("cust_1", first),
                                                              ("cust_2", second))]  # fmt: skip
                return all(o.driver_id == "solo" for o in got)

            await wait_for(both_assigned, within=10)
            later = await tracked(mesh, "cust_2", second)
            assert any("another drop-off first" in t.reason for t in later.timeline), [
                t.reason for t in later.timeline
            ]

            seq = 2
            for oid in (first, second):
                seq += 1
                await solo.act(seq, picked_up=dpb.OrderProgress(order_id=oid))
                await solo.expect("state")
            for customer, oid in (("cust_1", first), ("cust_2", second)):
                assert (await tracked(mesh, customer, oid)).status == OS.ORDER_STATUS_IN_TRANSIT
            seq += 1
            pin = await pin_of(mesh, first, "cust_1")
            await solo.act(seq, delivered=dpb.Delivered(order_id=first, pin=pin))
            state = (await solo.expect("state")).state
            # Still on the trip: the second drop-off is next.
            assert state.status == common_pb2.DRIVER_STATUS_ON_DELIVERY
            assert [s.order_id for s in state.plan] == [second]
            seq += 1
            pin = await pin_of(mesh, second, "cust_2")
            await solo.act(seq, delivered=dpb.Delivered(order_id=second, pin=pin))
            state = (await solo.expect("state")).state
            assert state.status == common_pb2.DRIVER_STATUS_AVAILABLE
            for customer, oid in (("cust_1", first), ("cust_2", second)):
                o = await tracked(mesh, customer, oid)
                assert o.status == OS.ORDER_STATUS_DELIVERED and o.driver_id == "solo"
