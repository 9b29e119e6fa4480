"""Drivers' routes through Dispatch's real gRPC port, with real ETA, Location and Order services.

The driver's app is driven as in test_dispatch: a Location stream for its fixes and
a Dispatch session; routes come from the real ETA service over the generated road
graph (no model: routes do not need one).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from foodmesh.core.geo import haversine_m
from foodmesh.roads import decode_polyline
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import eta_pb2
from servers import eta
from servers.eta.reroute import deviation_m
from servers.runtime.config import Settings
from servers.runtime.serve import run_service
from tests.integration._dispatch import REST, Driver, confirmed_order, dispatch_mesh, upsert
from tests.integration._order import HOME

pytestmark = pytest.mark.timeout(120)

START = (REST[0] + 0.003, REST[1])  # the driver, ~330 m north of the restaurant
# Far from both legs' routes (about 1.6 km south-west), on the road graph.
FAR = (37.7650, -122.4300)
R = dpb.RouteUpdateReason


@asynccontextmanager
async def eta_service(*, redis_url: str, namespace: str, model_dir: Path) -> AsyncIterator[str]:
    settings = Settings(
        service="eta",
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.2,
        shutdown_grace_s=1.0,
        extra={"FOODMESH_ETA_MODEL_DIR": str(model_dir)},
    )
    async with run_service(eta.SPEC, settings) as running:
        yield running.target


def _points(u: dpb.RouteUpdate) -> list[tuple[float, float]]:
    pts = decode_polyline(u.polyline)
    assert len(pts) >= 2, u
    return pts


def _near(a: tuple[float, float], b: tuple[float, float], within_m: float) -> bool:
    return haversine_m(a[0], a[1], b[0], b[1]) <= within_m


async def _route(d: Driver, within: float = 10) -> dpb.RouteUpdate:
    return (await d.expect("route_update", within=within)).route_update


async def test_a_driver_is_routed_to_the_restaurant_then_the_customer_and_rerouted_off_route(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        eta_service(redis_url=redis_url, namespace=namespace, model_dir=tmp_path / "m") as eta_at,
        dispatch_mesh(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
            extra={
                "FOODMESH_DISPATCH_ETA_TARGET": eta_at,
                "FOODMESH_DISPATCH_REROUTE_CHECK_S": "0.3",
            },
        ) as mesh,
    ):
        await upsert(mesh, "nav")
        async with Driver(mesh, "nav") as d:
            await d.at(*START)
            await d.open_session()
            oid = await confirmed_order(mesh, "k-route")
            offer = (await d.expect("offer", within=10)).offer
            await d.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            # The answer comes first; the route follows it.
            await d.expect("assignment_confirmed")
            first = await _route(d)
            assert first.order_id == oid
            assert first.leg == dpb.ROUTE_LEG_TO_RESTAURANT
            assert first.reason == R.ROUTE_UPDATE_REASON_INITIAL
            assert first.source == eta_pb2.ESTIMATE_SOURCE_ROAD_GRAPH
            assert first.steps and first.steps[0].maneuver == eta_pb2.MANEUVER_DEPART
            assert first.steps[-1].maneuver == eta_pb2.MANEUVER_ARRIVE
            assert first.distance_meters > 0 and first.duration.ToNanoseconds() > 0
            assert first.eta.ToNanoseconds() / 1e9 > time.time()
            stop = (first.destination.location.lat, first.destination.location.lon)
            assert stop == pytest.approx(REST)
            pts = _points(first)
            assert _near(pts[0], START, 150) and _near(pts[-1], REST, 150)

            await d.act(2, picked_up=dpb.OrderProgress(order_id=oid))
            state = await d.expect("state")
            assert state.state.assignment.status == dpb.ASSIGNMENT_STATUS_PICKED_UP
            second = await _route(d)
            assert second.leg == dpb.ROUTE_LEG_TO_CUSTOMER
            assert second.reason == R.ROUTE_UPDATE_REASON_INITIAL
            assert second.steps and second.destination.label == HOME.street
            home = (HOME.lat, HOME.lon)
            assert _near(_points(second)[-1], home, 150)
            assert deviation_m(FAR[0], FAR[1], _points(second)) > 1000

            # The driver strays far from the route: a new one from where they are.
            await d.at(*FAR)
            third = await _route(d)
            assert third.reason == R.ROUTE_UPDATE_REASON_OFF_ROUTE
            assert third.leg == dpb.ROUTE_LEG_TO_CUSTOMER and third.order_id == oid
            assert third.steps and third.source == eta_pb2.ESTIMATE_SOURCE_ROAD_GRAPH
            pts = _points(third)
            assert _near(pts[0], FAR, 150) and _near(pts[-1], home, 150)
            assert deviation_m(FAR[0], FAR[1], pts) < 150

            # A reconnect gets the state, then the route under way, as it was sent.
            await d.close_session()
            again = await d.open_session()
            assert again.state.assignment.order_id == oid
            resent = await d.recv()
            assert resent.WhichOneof("event") == "route_update", resent
            assert resent.route_update == third

            # At the customer the leg is over: no more routes, however far the fixes.
            await d.act(3, arrived_at_customer=dpb.OrderProgress(order_id=oid))
            await d.expect("state")
            await d.at(*START)
            with pytest.raises(TimeoutError):
                await _route(d, within=1.5)


async def test_without_an_answer_from_eta_the_driver_gets_a_straight_line_flagged_as_such(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
        # Port 1 refuses at once: an ETA service that is configured but away.
        extra={"FOODMESH_DISPATCH_ETA_TARGET": "127.0.0.1:1"},
    ) as mesh:
        await upsert(mesh, "lost")
        async with Driver(mesh, "lost") as d:
            await d.at(*START)
            await d.open_session()
            oid = await confirmed_order(mesh, "k-route-away")
            offer = (await d.expect("offer", within=10)).offer
            await d.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await d.expect("assignment_confirmed")
            u = await _route(d)
            assert u.order_id == oid and u.leg == dpb.ROUTE_LEG_TO_RESTAURANT
            assert u.source == eta_pb2.ESTIMATE_SOURCE_STRAIGHT_LINE
            assert not u.steps and u.distance_meters > 0
            assert _points(u) == [pytest.approx(START, abs=1e-5), pytest.approx(REST, abs=1e-5)]
            # The session goes on as usual.
            await d.act(2, arrived_at_restaurant=dpb.OrderProgress(order_id=oid))
            st = await d.expect("state")
            assert st.state.assignment.status == dpb.ASSIGNMENT_STATUS_AT_RESTAURANT
