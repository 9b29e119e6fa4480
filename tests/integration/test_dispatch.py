"""Dispatch through its real gRPC port, with real Location, Order and Catalog services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import (
    REST,
    Driver,
    confirmed_order,
    dispatch_mesh,
    pin_of,
    upsert,
)
from tests.integration._location import wait_for
from tests.integration._order import violations

pytestmark = pytest.mark.timeout(120)


async def _order_driver(mesh, oid: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    async with mesh.order_client("ops", "ops") as ops:
        got = await ops.get_order(opb.GetOrderRequest(order_id=oid))
    return got.order.driver_id, got.order.status


async def test_confirmed_order_is_offered_to_the_best_driver_and_delivered(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        for d in ("near", "mid", "far"):
            await upsert(mesh, d)
        async with (
            Driver(mesh, "near") as near,
            Driver(mesh, "mid") as mid,
            Driver(mesh, "far") as far,
        ):
            await near.at(REST[0] + 0.003, REST[1])
            await mid.at(REST[0] + 0.01, REST[1])
            await far.at(REST[0] + 0.03, REST[1])
            for app in (near, mid, far):
                first = await app.open_session()
                assert first.state.status == common_pb2.DRIVER_STATUS_AVAILABLE
            oid = await confirmed_order(mesh, "k-happy")
            offer = (await near.expect("offer", within=10)).offer
            assert offer.order_id == oid
            assert offer.attempt == 1
            assert offer.expected_earnings.amount_minor > 0
            assert offer.pickup.location.lat == pytest.approx(REST[0])
            assert offer.expire_time.ToNanoseconds() > 0
            # Why: the planner's cost parts sum to its cost; three drivers could have taken it.
            why = offer.why
            assert [p.name for p in why.parts] == [
                "minutes_to_doors", "late_minutes", "driver_wait_minutes", "travel_minutes",
                "serve_reward_minutes", "driver_penalty_minutes",
            ]  # fmt: skip
            assert sum(p.weight * p.value for p in why.parts) == pytest.approx(
                why.cost_minutes, abs=1e-2
            )
            assert 0.0 <= why.score <= 1.0
            assert why.alternatives == 3 and not why.bundle_order_ids and why.to_pickup_seconds > 0
            assert why.estimated_delivery_time.ToNanoseconds() > (
                why.estimated_pickup_time.ToNanoseconds() > 0
            )
            # Nobody else is offered the order meanwhile.
            for other in (mid, far):
                with pytest.raises(TimeoutError):
                    await other.expect("offer", within=0.6)

            await near.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            confirmed = await near.expect("assignment_confirmed")
            assert confirmed.ack_seq == 1
            assert confirmed.assignment_confirmed.driver_id == "near"

            async def assigned() -> bool:
                return (await _order_driver(mesh, oid))[0] == "near"

            await wait_for(assigned, within=5)
            async with mesh.client() as ops:
                a = (await ops.get_assignment(dpb.GetAssignmentRequest(order_id=oid))).assignment
                assert a.status == dpb.ASSIGNMENT_STATUS_ASSIGNED and a.driver_id == "near"

            # A dropped stream loses nothing: the reconnect's first message is the delivery.
            await near.close_session()
            again = await near.open_session()
            assert again.state.status == common_pb2.DRIVER_STATUS_ON_DELIVERY
            assert again.state.assignment.order_id == oid
            # A second session of the same driver replaces the first cleanly.
            async with Driver(mesh, "near") as second:
                st = await second.open_session()
                assert st.state.assignment.order_id == oid
                await near.expect("session_replaced")
                with pytest.raises(StopAsyncIteration):
                    await near.recv()
                near.swap(second)

            # Out of order: delivered before picked up is refused, and the session goes on.
            await near.act(2, delivered=dpb.Delivered(order_id=oid, pin="1234"))
            refused = await near.expect("action_rejected")
            assert refused.action_rejected.seq == 2
            assert refused.action_rejected.code == "FAILED_PRECONDITION"

            await near.act(3, picked_up=dpb.OrderProgress(order_id=oid))
            state = await near.expect("state")
            assert state.ack_seq == 3
            assert state.state.assignment.status == dpb.ASSIGNMENT_STATUS_PICKED_UP
            assert (await _order_driver(mesh, oid))[1] == common_pb2.ORDER_STATUS_IN_TRANSIT
            await near.act(4, delivered=dpb.Delivered(order_id=oid, pin=await pin_of(mesh, oid)))
            state = await near.expect("state")
            assert state.state.status == common_pb2.DRIVER_STATUS_AVAILABLE
            assert (await _order_driver(mesh, oid))[1] == common_pb2.ORDER_STATUS_DELIVERED
            async with mesh.client() as ops:
                prof = (await ops.get_driver(dpb.GetDriverRequest(driver_id="near"))).driver
                assert prof.completed_deliveries == 1 and prof.acceptance_rate == 1.0


async def test_garbage_actions_are_refused_one_by_one_and_the_session_survives(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        async with Driver(mesh, "d1") as d:
            await d.at(REST[0], REST[1])
            await d.open_session()
            bad = [
                dpb.DriverSessionRequest(seq=1),  # no action at all
                dpb.DriverSessionRequest(seq=2, accept_offer=dpb.AcceptOffer()),
                dpb.DriverSessionRequest(
                    seq=3,
                    reject_offer=dpb.RejectOffer(offer_id="x", reason=99),  # type: ignore[arg-type]
                ),
                dpb.DriverSessionRequest(seq=4, delivered=dpb.Delivered(order_id="o1")),
                dpb.DriverSessionRequest(seq=5, picked_up=dpb.OrderProgress(order_id="\x00" * 3)),
            ]
            for req in bad:
                await d.send_raw(req)
                msg = await d.expect("action_rejected")
                assert msg.action_rejected.seq == req.seq
                assert msg.action_rejected.code == "INVALID_ARGUMENT", msg
            # Someone else's (or no such) offer: FAILED_PRECONDITION with the reason.
            await d.act(6, accept_offer=dpb.AcceptOffer(offer_id="of_nobody"))
            msg = await d.expect("action_rejected")
            assert msg.action_rejected.code == "FAILED_PRECONDITION"
            assert "not yours" in msg.action_rejected.message
            # Still alive: a good action is answered.
            await d.act(7, pause=dpb.Pause())
            st = await d.expect("state")
            assert st.ack_seq == 7 and st.state.status == common_pb2.DRIVER_STATUS_PAUSED


async def test_bad_unary_requests_name_the_field(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        async with mesh.client() as ops:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ops.match_order(
                    dpb.MatchOrderRequest(
                        order_id="o1", restaurant_location=common_pb2.LatLng(lat=91, lon=0)
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(violations(err.value)) == {"restaurant_location", "delivery_location"}
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ops.rate_driver(dpb.RateDriverRequest(order_id="o1", driver_id="d", rating=9))
            assert set(violations(err.value)) == {"rating"}
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ops.list_assignments(
                    dpb.ListAssignmentsRequest(page_size=1000, page_token="%%")
                )
            assert set(violations(err.value)) == {"page_size", "page_token"}
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ops.upsert_driver(dpb.UpsertDriverRequest())
            assert set(violations(err.value)) == {"driver"}


async def _wait_offer(d: Driver, within: float = 10) -> dpb.Offer:
    return (await d.expect("offer", within=within)).offer


async def test_rejected_and_lapsed_offers_go_to_the_next_driver_then_escalate(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        extra={"FOODMESH_DISPATCH_OFFER_EXPIRY_S": "1.5"},
    ) as mesh:
        names = ("a", "b", "c", "d")
        for n in names:
            await upsert(mesh, n)
        drivers = [Driver(mesh, n) for n in names]
        for i, d in enumerate(drivers):
            await d.__aenter__()
            await d.at(REST[0] + 0.002 * (i + 1), REST[1])
            await d.open_session()
        try:
            oid = await confirmed_order(mesh, "k-reject")
            a, b, c, d4 = drivers
            first = await _wait_offer(a)
            await a.act(
                1,
                reject_offer=dpb.RejectOffer(
                    offer_id=first.offer_id, reason=dpb.REJECT_REASON_TOO_FAR
                ),
            )
            second = await _wait_offer(b)
            assert second.order_id == oid and second.attempt == 2
            # b lets it lapse: withdrawn, and the next driver gets it.
            withdrawn = await b.expect("offer_withdrawn", within=5)
            assert withdrawn.offer_withdrawn.offer_id == second.offer_id
            third = await _wait_offer(c)
            assert third.attempt == 3
            # A lapsed offer cannot be accepted.
            await b.act(2, accept_offer=dpb.AcceptOffer(offer_id=second.offer_id))
            late = await b.expect("action_rejected")
            assert late.action_rejected.code == "FAILED_PRECONDITION"
            await c.act(1, reject_offer=dpb.RejectOffer(offer_id=third.offer_id))
            async with mesh.client() as ops:

                async def escalated() -> bool:
                    got = await ops.list_assignments(
                        dpb.ListAssignmentsRequest(
                            statuses=[
                                dpb.ASSIGNMENT_STATUS_ESCALATED,
                                dpb.ASSIGNMENT_STATUS_OFFERED,
                            ]
                        )
                    )
                    return any(x.order_id == oid and x.offers_made >= 3 for x in got.assignments)

                await wait_for(escalated, within=5)
            fourth = await _wait_offer(d4)
            assert fourth.attempt == 4
            assert fourth.expected_earnings.amount_minor > third.expected_earnings.amount_minor
            await d4.act(1, accept_offer=dpb.AcceptOffer(offer_id=fourth.offer_id))
            await d4.expect("assignment_confirmed")
            # Every decliner was excluded: none of them was offered the order again.
            for x in (a, c):
                with pytest.raises(TimeoutError):
                    await x.expect("offer", within=0.3)
        finally:
            for d in drivers:
                await d.__aexit__(None, None, None)
            await asyncio.sleep(0)


async def test_match_order_offers_the_best_driver_and_ratings_count_once_per_order(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        extra={"FOODMESH_DISPATCH_BATCH_INTERVAL_S": "30"},  # only MatchOrder matches here
    ) as mesh:
        await upsert(mesh, "m1")
        async with Driver(mesh, "m1") as d, mesh.client("service", "order") as svc:
            await d.at(REST[0] + 0.004, REST[1])
            await d.open_session()
            req = dpb.MatchOrderRequest(
                order_id="ord_match_1",
                restaurant_location=common_pb2.LatLng(lat=REST[0], lon=REST[1]),
                delivery_location=common_pb2.LatLng(lat=REST[0] - 0.01, lon=REST[1]),
            )
            got = await svc.match_order(req)
            assert got.driver_id == "m1" and got.driver_name == "Driver m1"
            assert got.vehicle == "Toyota Prius" and 0 < got.match_score <= 1
            assert got.eta_to_restaurant >= 1
            assert got.estimated_delivery_time.seconds > got.estimated_pickup_time.seconds
            offer = (await d.expect("offer")).offer
            assert offer.order_id == "ord_match_1"
            # Matching it again while it is on offer is refused, not offered twice.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await svc.match_order(req)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            rate = dpb.RateDriverRequest(order_id="ord_r1", driver_id="m1", rating=4)
            first, again = await asyncio.gather(svc.rate_driver(rate), svc.rate_driver(rate))
            assert (first.rating_count, again.rating_count) == (1, 1)
            assert (await svc.rate_driver(rate)).rating == 4.0
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await svc.rate_driver(
                    dpb.RateDriverRequest(order_id="ord_r1", driver_id="other", rating=5)
                )
            assert err.value.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            )
        async with mesh.client("driver", "m2") as other:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await other.get_driver(dpb.GetDriverRequest(driver_id="m1"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with mesh.client() as ops:
            # The driver's session ended with the offer unanswered: it was withdrawn.
            page = await ops.list_assignments(dpb.ListAssignmentsRequest(page_size=1))
            assert [a.order_id for a in page.assignments] == ["ord_match_1"]
            assert page.assignments[0].status == dpb.ASSIGNMENT_STATUS_PENDING
            assert page.assignments[0].offers_made == 1


async def test_a_cancelled_order_is_withdrawn_from_its_offer_or_taken_from_its_driver(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        await upsert(mesh, "c1")
        async with Driver(mesh, "c1") as d, mesh.order_client("customer", "cust_1") as cust:
            await d.at(REST[0] + 0.002, REST[1])
            await d.open_session()
            first = await confirmed_order(mesh, "k-cancel-1")
            offer = (await d.expect("offer", within=10)).offer
            await cust.cancel_order(opb.CancelOrderRequest(order_id=first, reason="changed mind"))
            gone = await d.expect("offer_withdrawn", within=10)
            assert gone.offer_withdrawn.offer_id == offer.offer_id
            second = await confirmed_order(mesh, "k-cancel-2")
            offer2 = (await d.expect("offer", within=10)).offer
            assert offer2.order_id == second
            await d.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer2.offer_id))
            await d.expect("assignment_confirmed")
            await cust.cancel_order(opb.CancelOrderRequest(order_id=second, reason="too slow"))
            cancelled = await d.expect("order_cancelled", within=10)
            assert cancelled.order_cancelled.order_id == second
            # Free again: the next state says available, and go offline ends the session.
            await d.act(2, go_offline=dpb.GoOffline())
            st = await d.expect("state")
            assert st.state.status == common_pb2.DRIVER_STATUS_OFFLINE
            with pytest.raises(StopAsyncIteration):
                await d.recv()
        async with mesh.client() as ops:
            for oid in (first, second):
                a = (await ops.get_assignment(dpb.GetAssignmentRequest(order_id=oid))).assignment
                assert a.status == dpb.ASSIGNMENT_STATUS_CANCELLED
