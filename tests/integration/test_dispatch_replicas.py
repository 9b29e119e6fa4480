"""Two Dispatch replicas, one killed (SIGKILL) while leading; and a driver lost before pickup."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foodmesh.v1 import common_pb2
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from servers import dispatch
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import run_service
from tests.integration._dispatch import (
    REST,
    DispatchMesh,
    Driver,
    confirmed_order,
    dispatch_settings,
    upsert,
)
from tests.integration._location import location_service, wait_for
from tests.integration._order import order_mesh

pytestmark = pytest.mark.timeout(150)
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serving(target: str, within: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > end:
                raise AssertionError(f"replica at {target} never became SERVING")
            await asyncio.sleep(0.1)


async def _assigned_driver(mesh: DispatchMesh, oid: str) -> str:
    async with mesh.order_client("ops", "ops") as ops:
        return (await ops.get_order(opb.GetOrderRequest(order_id=oid))).order.driver_id


async def _no_overlapping_offers(pg_url: str) -> None:
    """No order ever had two offers open at once (the data store's own record)."""
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT a.order_id FROM fleet.offers a JOIN fleet.offers b"
            " ON a.order_id = b.order_id AND a.offer_id < b.offer_id"
            " WHERE tstzrange(a.created_at, coalesce(a.answered_at, 'infinity'))"
            " && tstzrange(b.created_at, coalesce(b.answered_at, 'infinity'))"
        )
        assert await cur.fetchall() == []
        cur = await conn.execute(
            "SELECT driver_id, count(*) FROM fleet.offers WHERE status = 'open'"
            " GROUP BY driver_id HAVING count(*) > 1"
        )
        assert await cur.fetchall() == []


async def test_a_leader_killed_mid_work_loses_no_order_and_nothing_is_offered_twice(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    assert dispatch.SPEC.migrations is not None
    await migrate(pg_url, service="dispatch", migrations=load_migrations(dispatch.SPEC.migrations))
    async with (
        order_mesh(
            pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace
        ) as orders,
        location_service(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
        ) as loc,
    ):
        port = _free_port()
        env = {
            **os.environ,
            "FOODMESH_POSTGRES_URL": pg_url,
            "FOODMESH_NATS_URL": nats_url,
            "FOODMESH_REDIS_URL": redis_url,
            "FOODMESH_NAMESPACE": namespace,
            "FOODMESH_DISPATCH_PORT": str(port),
            "FOODMESH_METRICS": "0",
            "FOODMESH_DISPATCH_LOCATION_TARGET": loc.target,
            "FOODMESH_DISPATCH_ORDER_TARGET": orders.order.target,
            "FOODMESH_DISPATCH_BATCH_INTERVAL_S": "0.2",
            "FOODMESH_DISPATCH_LEASE_S": "1.5",
            "FOODMESH_LOG_LEVEL": "WARNING",
        }
        leader = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "foodmesh",
            "serve",
            "dispatch",
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _serving(f"127.0.0.1:{port}")
            settings = dispatch_settings(
                pg_url=pg_url,
                nats_url=nats_url,
                namespace=namespace,
                location=loc.target,
                order=orders.order.target,
            )
            mesh_a = DispatchMesh(orders, loc, None, settings)  # type: ignore[arg-type]
            # Work arrives while only the subprocess runs: it takes the region's lease.
            first = [await confirmed_order(mesh_a, f"k-{i}") for i in range(2)]
            async with run_service(dispatch.SPEC, settings) as survivor:
                mesh = DispatchMesh(orders, loc, survivor, settings)
                for n in ("d1", "d2", "d3"):
                    await upsert(mesh, n)
                async with (
                    Driver(mesh, "d1") as d1,
                    Driver(mesh, "d2") as d2,
                    Driver(mesh, "d3") as d3,
                ):
                    for i, d in enumerate((d1, d2)):
                        await d.at(REST[0] + 0.002 * (i + 1), REST[1])
                        await d.open_session()
                    # The leader (the subprocess) offers; the offers reach sessions on the
                    # survivor through NATS.
                    o1 = (await d1.expect("offer", within=10)).offer
                    o2 = (await d2.expect("offer", within=10)).offer
                    assert {o1.order_id, o2.order_id} == set(first)
                    leader.send_signal(signal.SIGKILL)
                    await asyncio.wait_for(leader.wait(), timeout=10)

                    await d1.act(1, accept_offer=dpb.AcceptOffer(offer_id=o1.offer_id))
                    await d1.expect("assignment_confirmed")
                    await d2.act(1, reject_offer=dpb.RejectOffer(offer_id=o2.offer_id))
                    await d3.at(REST[0] + 0.004, REST[1])
                    await d3.open_session()
                    # The rejected order needs a leader: the survivor takes the region over.
                    again = (await d3.expect("offer", within=10)).offer
                    assert again.order_id == o2.order_id and again.attempt == 2
                    await d3.act(1, accept_offer=dpb.AcceptOffer(offer_id=again.offer_id))
                    await d3.expect("assignment_confirmed")
                    late = await confirmed_order(mesh, "k-late")
                    o3 = (await d2.expect("offer", within=10)).offer
                    assert o3.order_id == late
                    await d2.act(2, accept_offer=dpb.AcceptOffer(offer_id=o3.offer_id))
                    await d2.expect("assignment_confirmed")

                    want = {o1.order_id: "d1", o2.order_id: "d3", late: "d2"}
                    for oid, who in want.items():

                        async def has(oid: str = oid, who: str = who) -> bool:
                            return await _assigned_driver(mesh, oid) == who

                        await wait_for(has, within=5)
                    await _no_overlapping_offers(pg_url)
        finally:
            if leader.returncode is None:
                leader.kill()
                await asyncio.wait_for(leader.wait(), timeout=10)


async def test_driver_gone_silent_before_pickup_loses_the_order_to_the_next_driver(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    from tests.integration._dispatch import dispatch_mesh

    async with dispatch_mesh(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as mesh:
        for n in ("gone", "next"):
            await upsert(mesh, n)
        async with Driver(mesh, "gone") as gone:
            await gone.at(REST[0] + 0.001, REST[1])
            await gone.open_session()
            oid = await confirmed_order(mesh, "k-lost")
            offer = (await gone.expect("offer", within=10)).offer
            await gone.act(1, accept_offer=dpb.AcceptOffer(offer_id=offer.offer_id))
            await gone.expect("assignment_confirmed")

            async def assigned_to_gone() -> bool:
                return await _assigned_driver(mesh, oid) == "gone"

            await wait_for(assigned_to_gone, within=5)
            async with mesh.order_client("customer", "cust_1") as cust:
                watch = cust.watch_order(opb.WatchOrderRequest(order_id=oid))
                snapshot = await anext(watch)
                assert snapshot.order.driver_id == "gone"
                # Location's presence says the driver went offline (as its sweep does
                # after 30 s of silence): published on location.v1.presence.
                import nats

                from foodmesh.core.nats import Subjects
                from foodmesh.v1 import location_pb2

                nc = await nats.connect(nats_url)
                try:
                    ev = location_pb2.DriverPresenceEvent(
                        event_id="gone:off:1", driver_id="gone", online=False, order_id=oid
                    )
                    subj = Subjects(namespace)
                    js = nc.jetstream()
                    from nats.js.api import StreamConfig

                    from foodmesh.core.nats import ensure_stream

                    await ensure_stream(
                        js,
                        StreamConfig(
                            name=subj.stream("LOCATION"),
                            subjects=[subj.subject("location.v1.presence")],
                        ),
                    )
                    await js.publish(
                        subj.subject("location.v1.presence"), ev.SerializeToString(), timeout=2
                    )
                    # Redelivered or duplicated events change nothing more.
                    await js.publish(
                        subj.subject("location.v1.presence"), ev.SerializeToString(), timeout=2
                    )
                finally:
                    await nc.close()
                # The customer's WatchOrder says the driver was unassigned.
                async with asyncio.timeout(10):
                    while True:
                        msg = await anext(watch)
                        if msg.order.driver_id == "":
                            assert "offline" in msg.change.reason
                            break
            async with mesh.client() as ops:
                a = (await ops.get_assignment(dpb.GetAssignmentRequest(order_id=oid))).assignment
                assert a.status in (dpb.ASSIGNMENT_STATUS_PENDING, dpb.ASSIGNMENT_STATUS_OFFERED)
            async with Driver(mesh, "next") as nxt:
                await nxt.at(REST[0] + 0.02, REST[1])
                await nxt.open_session()
                again = (await nxt.expect("offer", within=10)).offer
                assert again.order_id == oid
                await nxt.act(1, accept_offer=dpb.AcceptOffer(offer_id=again.offer_id))
                await nxt.expect("assignment_confirmed")

                async def assigned_to_next() -> bool:
                    return await _assigned_driver(mesh, oid) == "next"

                await wait_for(assigned_to_next, within=5)
            status = (await _assigned_driver(mesh, oid), common_pb2.ORDER_STATUS_CONFIRMED)
            assert status[0] == "next"


async def test_region_lease_has_one_holder_and_lapses_to_another_when_not_renewed(
    nats_url: str, namespace: str
) -> None:
    import nats

    from foodmesh.core.nats import Subjects, ensure_kv
    from servers.dispatch.leases import Leases

    nc = await nats.connect(nats_url)
    try:
        bucket = Subjects(namespace).bucket("dispatch_leases")

        async def kv():  # type: ignore[no-untyped-def]
            return await ensure_kv(nc.jetstream(), bucket, ttl_s=1.0)

        a, b = Leases(kv, owner="a"), Leases(kv, owner="b")
        assert await a.claim("9q8y")
        assert not await b.claim("9q8y")
        assert await a.claim("9q8y")  # renewal
        assert await b.claim("9q8z")  # another region is free
        assert a.held == {"9q8y"} and b.held == {"9q8z"}

        # a stops renewing (killed): within one lease period b takes the region over.
        async def b_leads() -> bool:
            return await b.claim("9q8y")

        await wait_for(b_leads, within=5, every=0.2)
        assert not await a.claim("9q8y")  # a's renewal fails: it no longer leads
        assert "9q8y" not in a.held
        await b.release_all()
        assert await a.claim("9q8y")  # released at once on a clean shutdown
    finally:
        await nc.close()
