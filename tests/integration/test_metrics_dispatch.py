"""Dispatch's and Order's business metrics, driven through the real mesh.

One order is matched after a rejection (two offers), accepted, carried and
delivered; another is cancelled. The registry is read before and after: the
services run in this process, so their metrics are the test's to read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from foodmesh.core.geo import geohash_encode
from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from servers.dispatch.metrics import REGION_LEADER
from tests.integration._dispatch import REST, Driver, dispatch_mesh, pin_of, upsert
from tests.integration._location import wait_for
from tests.integration._order import place_request

pytestmark = pytest.mark.timeout(120)
REGION = geohash_encode(REST[0], REST[1], 4)  # the Dispatch region of the test restaurant


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _snapshot() -> dict[str, float]:
    out = {
        "matching_count": _value("foodmesh_dispatch_matching_seconds_count"),
        "matching_sum": _value("foodmesh_dispatch_matching_seconds_sum"),
        "matching_le_30": _value("foodmesh_dispatch_matching_seconds_bucket", le="30.0"),
        "offers_count": _value("foodmesh_dispatch_offers_per_order_count"),
        "offers_sum": _value("foodmesh_dispatch_offers_per_order_sum"),
        "offers_le_1": _value("foodmesh_dispatch_offers_per_order_bucket", le="1.0"),
        "offers_le_2": _value("foodmesh_dispatch_offers_per_order_bucket", le="2.0"),
        "eta_count": _value("foodmesh_eta_error_seconds_count"),
        "eta_sum": _value("foodmesh_eta_error_seconds_sum"),
    }
    for s in ("placed", "confirmed", "picked_up", "in_transit", "delivered", "cancelled"):
        out[s] = _value("foodmesh_orders_total", status=s)
    return out


def _delta(before: dict[str, float]) -> dict[str, float]:
    now = _snapshot()
    return {k: now[k] - before[k] for k in now}


async def test_matching_offers_leadership_order_steps_and_eta_error_are_recorded(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    REGION_LEADER.labels(REGION).set(-1.0)  # whatever an earlier test left: not ours
    before = _snapshot()
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        for d in ("near", "next"):
            await upsert(mesh, d)
        async with Driver(mesh, "near") as near, Driver(mesh, "next") as nxt:
            await near.at(REST[0] + 0.002, REST[1])
            await nxt.at(REST[0] + 0.006, REST[1])
            await near.open_session()
            await nxt.open_session()
            async with (
                mesh.order_client("customer", "cust_1") as c,
                mesh.order_client("restaurant", "rest_1") as r,
            ):
                placed = (await c.place_order(place_request("k-metrics"))).order
                oid = placed.order_id
                await r.update_order_status(opb.UpdateOrderStatusRequest(
                    order_id=oid, status=common_pb2.ORDER_STATUS_CONFIRMED))  # fmt: skip
            first = (await near.expect("offer", within=10)).offer
            # The replica that made the offer leads the region.
            assert _value("foodmesh_dispatch_region_leader", region=REGION) == 1.0
            too_far = dpb.RejectOffer(offer_id=first.offer_id, reason=dpb.REJECT_REASON_TOO_FAR)
            await near.act(1, reject_offer=too_far)
            second = (await nxt.expect("offer", within=10)).offer
            assert second.order_id == oid and second.attempt == 2
            assert _delta(before)["matching_count"] == 0  # offers alone are no assignment
            await nxt.act(1, accept_offer=dpb.AcceptOffer(offer_id=second.offer_id))
            await nxt.expect("assignment_confirmed")
            d = _delta(before)
            assert d["matching_count"] == 1 and d["offers_count"] == 1
            assert d["offers_sum"] == 2 and d["offers_le_1"] == 0 and d["offers_le_2"] == 1
            assert 0 < d["matching_sum"] and d["matching_le_30"] == 1

            await nxt.act(2, picked_up=dpb.OrderProgress(order_id=oid))
            await nxt.expect("state")
            await nxt.act(3, delivered=dpb.Delivered(order_id=oid, pin=await pin_of(mesh, oid)))
            await nxt.expect("state")
            async with mesh.order_client("ops", "ops") as ops:

                async def delivered() -> bool:
                    nonlocal got
                    got = (await ops.get_order(opb.GetOrderRequest(order_id=oid))).order
                    return got.status == common_pb2.ORDER_STATUS_DELIVERED

                got = opb.Order()
                await wait_for(delivered, within=5)

        # A second order, cancelled by its customer before the kitchen confirms it.
        async with mesh.order_client("customer", "cust_1") as cust:
            other = (await cust.place_order(place_request("k-metrics-2"))).order
            await cust.cancel_order(opb.CancelOrderRequest(order_id=other.order_id, reason="x"))

        d = _delta(before)
        assert d["placed"] == 2 and d["confirmed"] == 1 and d["cancelled"] == 1
        assert d["picked_up"] == 1 and d["in_transit"] == 1 and d["delivered"] == 1
        # Delivered once: one ETA error, the distance from the promise made at placement
        # (not from Dispatch's later estimate, which the order now carries).
        promised = placed.estimated_delivery_time.ToNanoseconds() / 1e9
        delivered_at = got.timeline[-1].timestamp.ToNanoseconds() / 1e9
        assert got.timeline[-1].status == common_pb2.ORDER_STATUS_DELIVERED
        assert d["eta_count"] == 1
        assert d["eta_sum"] == pytest.approx(abs(delivered_at - promised), abs=0.01)
    # A clean shutdown gives the region's lease up: this replica no longer leads it.
    assert _value("foodmesh_dispatch_region_leader", region=REGION) == 0.0
