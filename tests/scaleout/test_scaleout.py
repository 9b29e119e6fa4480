"""Scale-out: two replicas of each stateful service on a Redis Cluster and a NATS cluster.

Issue 9: "runs two replicas of each stateful-logic service (Location, Dispatch,
Order's relay and scheduler) against them, drives a small simulated load, kills
one Redis primary's node and one NATS node mid-run, and shows: no acknowledged
order lost, no order assigned twice, location index still answers, every region
still has a Dispatch leader. Report the recovery time."

- **Engines**: Redis Cluster, 3 primaries each with a replica (node timeout 1 s);
  3 nats-server nodes with JetStream, every stream and bucket R3; PostgreSQL.
- **Services** (real, in this process, each on its own port): Catalog; Order ×2
  (each with its outbox relay and scheduler); Location ×2; Dispatch ×2 (region
  leases in NATS KV, batches every 0.2 s).
- **Load**: 30 drivers, each streaming a fix every 0.5 s to one Location replica
  and holding its session on one Dispatch replica, accepting every offer; a
  customer places (and the restaurant confirms) an order every 0.4 s, alternately
  through the two Order replicas, retrying with the same idempotency key when a
  call fails, as an app does; and two scheduled orders, placed at the start and
  due when the NATS node dies, which the release passes of both Order replicas race
  to release (exactly one wins each).
- **Faults**: SIGKILL of the Redis primary that serves the restaurant region's
  slot (the drivers' index and the search index live there); once that healed,
  SIGKILL of the NATS node that leads the stream of order events. Both come back
  at the end and rejoin.

The figures (recovery times, load, latencies) are printed as a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import pytest

from clients import LocationClient, OrderClient
from foodmesh.core.geo import geohash_encode
from foodmesh.core.nats import Subjects, server_urls
from foodmesh.core.redis import Keys, redis_client
from foodmesh.core.tasks import stop_tasks
from foodmesh.infra.cluster import LocalNatsCluster, LocalRedisCluster
from foodmesh.v1 import common_pb2
from foodmesh.v1 import location_pb2 as lpb
from foodmesh.v1 import order_pb2 as opb
from servers import dispatch, order
from servers.runtime.serve import RunningService, run_service
from tests.integration._dispatch import REST, DispatchMesh, dispatch_mesh, dispatch_settings
from tests.integration._fleet import (
    Bot,
    all_assigned,
    assert_assigned_exactly_once,
    eventually,
    fleet,
    fleet_state,
    outboxes_drained,
    rows,
    unhandled,
)
from tests.integration._location import location_service
from tests.integration._order import place_request, token

pytestmark = pytest.mark.timeout(300)

DRIVERS = 30
ORDERS = 26
SCHEDULED = 2
ORDER_EVERY_S = 0.4
REGION = geohash_encode(REST[0], REST[1], 4)
DS = common_pb2.DriverStatus
_RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


# -- the load ---------------------------------------------------------------------------


@dataclass
class Placed:
    """One customer's order as the app saw it."""

    key: str
    oid: str = ""
    acked_at: float = 0.0  # PlaceOrder answered OK (monotonic)
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


async def place_and_confirm(
    customers: Sequence[OrderClient], restaurants: Sequence[OrderClient], p: Placed, i: int
) -> None:
    """Places order ``p`` on replica ``i`` (the next one after a failure) and confirms it."""
    while not p.oid:
        c = customers[(i + p.attempts) % len(customers)]
        p.attempts += 1
        try:
            placed = await c.place_order(place_request(p.key), deadline_s=3)
            p.oid, p.acked_at = placed.order.order_id, time.monotonic()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _RETRY or p.attempts > 30:
                raise
            p.errors.append(exc.code().name)
            await asyncio.sleep(0.2)
    confirm = opb.UpdateOrderStatusRequest(order_id=p.oid, status=common_pb2.ORDER_STATUS_CONFIRMED)
    for attempt in range(30):
        try:
            await restaurants[(i + attempt) % len(restaurants)].update_order_status(
                confirm, deadline_s=3
            )
            return
        except grpc.aio.AioRpcError as exc:
            got = await customers[0].get_order(opb.GetOrderRequest(order_id=p.oid))
            if got.order.status != common_pb2.ORDER_STATUS_PLACED:
                return  # the failed call did confirm it
            if exc.code() not in _RETRY:
                raise
            p.errors.append(exc.code().name)
            await asyncio.sleep(0.2)
    raise AssertionError(f"order {p.oid} could not be confirmed: {p.errors}")


# -- probes: is the location index answering, is JetStream taking writes ----------------


@dataclass
class Probe:
    """Calls made every 50 ms: (start, end, ok), monotonic seconds."""

    name: str
    samples: list[tuple[float, float, bool]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # what failed calls said, counted

    def failed(self, what: str) -> None:
        self.errors[what[:120]] = self.errors.get(what[:120], 0) + 1

    def recovered_after(self, fault_at: float) -> float:
        """Seconds from ``fault_at`` until a call started after it answered (0 if none failed
        and none waited)."""
        first = next((end for start, end, ok in self.samples if start >= fault_at and ok), None)
        if first is None:
            raise AssertionError(f"{self.name} never answered after the fault")
        return first - fault_at

    def failures_after(self, fault_at: float) -> int:
        return sum(1 for start, _, ok in self.samples if start >= fault_at and not ok)


async def probe_index(target: str, probe: Probe) -> None:
    """FindNearbyDrivers around the restaurant, as Dispatch asks it: answered with drivers."""
    request = lpb.FindNearbyDriversRequest(
        center=common_pb2.LatLng(lat=REST[0], lon=REST[1]),
        radius_meters=5000,
        statuses=[DS.DRIVER_STATUS_AVAILABLE, DS.DRIVER_STATUS_OFFERED,
                  DS.DRIVER_STATUS_ON_DELIVERY],
        limit=200,
    )  # fmt: skip
    async with LocationClient(target, options=token("service", "dispatch")) as c:
        while True:
            t0 = time.monotonic()
            try:
                got = await c.find_nearby_drivers(request, deadline_s=1.0)
                ok = len(got.drivers) > 0
                if not ok:
                    probe.failed("no driver found")
            except grpc.aio.AioRpcError as exc:
                ok = False
                probe.failed(f"{exc.code().name}: {exc.details()}")
            probe.samples.append((t0, time.monotonic(), ok))
            await asyncio.sleep(0.05)


async def probe_jetstream(nats_url: str, namespace: str, probe: Probe) -> None:
    """A publish acknowledged by an R3 stream of the probe's own."""
    nc = await nats.connect(server_urls(nats_url), max_reconnect_attempts=-1,
                            reconnect_time_wait=0.1)  # fmt: skip
    try:
        js = nc.jetstream()
        subjects = Subjects(namespace)
        await js.add_stream(name=subjects.stream("PROBE"), subjects=[subjects.subject("probe")],
                            num_replicas=3)  # fmt: skip
        while True:
            t0 = time.monotonic()
            try:
                await js.publish(subjects.subject("probe"), b"x", timeout=1.0)
                ok = True
            except Exception as exc:  # timeouts, no responders, not connected: not taking writes
                ok = False
                probe.failed(repr(exc))
            probe.samples.append((t0, time.monotonic(), ok))
            await asyncio.sleep(0.05)
    finally:
        await _close(nc)


async def _close(nc: nats.aio.client.Client) -> None:
    """Closes a NATS client without waiting on a reconnect to a node that is gone."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 5)


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield
    finally:
        await stop_tasks(tasks)


# -- the replicas -------------------------------------------------------------------------


@dataclass
class Replicas:
    mesh: DispatchMesh  # Catalog, Order #1, Location #1, Dispatch #1
    order2: RunningService
    location2: RunningService
    dispatch2: RunningService

    @property
    def orders(self) -> list[str]:
        return [self.mesh.orders.order.target, self.order2.target]

    @property
    def locations(self) -> list[str]:
        return [self.mesh.location.target, self.location2.target]

    @property
    def dispatchers(self) -> list[str]:
        return [self.mesh.dispatch.target, self.dispatch2.target]


@contextlib.asynccontextmanager
async def replicas(
    *, pg_url: str, redis_url: str, nats_url: str, namespace: str, state_dir: Path
) -> AsyncIterator[Replicas]:
    common = dict(pg_url=pg_url, nats_url=nats_url, namespace=namespace)
    async with dispatch_mesh(redis_url=redis_url, state_dir=state_dir / "loc1",
                             **common) as mesh:  # type: ignore[arg-type]  # fmt: skip
        async with (
            run_service(order.SPEC, mesh.orders.order.settings) as order2,
            location_service(redis_url=redis_url, state_dir=state_dir / "loc2", migrated=True,
                             **common) as location2,  # type: ignore[arg-type]
            run_service(dispatch.SPEC, dispatch_settings(location=location2.target,
                        order=order2.target, **common)) as dispatch2,  # type: ignore[arg-type]
        ):  # fmt: skip
            yield Replicas(mesh, order2, location2, dispatch2)


# -- the test -----------------------------------------------------------------------------


async def test_two_replicas_each_ride_out_a_redis_primary_and_a_nats_node_killed_mid_run(
    redis_cluster: LocalRedisCluster, nats_cluster: LocalNatsCluster, pg_url: str,
    namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    # A hang fails here with a traceback through the await that hung (pytest-timeout's
    # 300 s would only show the event loop polling).
    async with asyncio.timeout(200):
        await _scenario(redis_cluster, nats_cluster, pg_url, namespace, tmp_path, caplog, capsys)


async def _scenario(
    redis_cluster: LocalRedisCluster, nats_cluster: LocalNatsCluster, pg_url: str,
    namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    redis_url, nats_url = redis_cluster.url, nats_cluster.url
    t_start = time.monotonic()
    marks: list[tuple[str, float]] = []

    def mark(phase: str) -> None:
        """Notes when ``phase`` ended: the report says how long each step took."""
        marks.append((phase, time.monotonic() - t_start))

    async with (
        replicas(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
                 state_dir=tmp_path) as rs,
        fleet(rs.mesh, DRIVERS, dispatch=rs.dispatchers, location=rs.locations) as bots,
        contextlib.AsyncExitStack() as stack,
    ):  # fmt: skip
        customers = [await stack.enter_async_context(OrderClient(t, options=token(
            "customer", "cust_1"))) for t in rs.orders]  # fmt: skip
        restaurants = [await stack.enter_async_context(OrderClient(t, options=token(
            "restaurant", "rest_1"))) for t in rs.orders]  # fmt: skip
        mark("services and fleet up")
        index = [Probe("location index #1"), Probe("location index #2")]
        stream = Probe("JetStream R3 publish")
        placed = [Placed(f"scale-{i}") for i in range(ORDERS)]

        async def load() -> None:
            tasks = []
            for i, p in enumerate(placed):
                tasks.append(asyncio.create_task(place_and_confirm(customers, restaurants, p, i)))
                await asyncio.sleep(ORDER_EVERY_S)
            await asyncio.gather(*tasks)

        # Two scheduled orders, held until the NATS fault, then due: the release pass of
        # both Order replicas races for them while JetStream elects a leader.
        held = []
        for i in range(SCHEDULED):
            req = place_request(f"scheduled-{i}", delivery_option=opb.DELIVERY_OPTION_SCHEDULED)
            req.scheduled_time.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
            held.append((await customers[i % 2].place_order(req)).order.order_id)

        async def release_when_due(fault: asyncio.Event) -> None:
            await fault.wait()
            await rows(pg_url, "UPDATE orders.orders SET release_at = now()"
                               " WHERE order_id = ANY(%s) RETURNING 1", held)  # fmt: skip
            confirm = [Placed(f"scheduled-{i}", oid=oid) for i, oid in enumerate(held)]
            for i, p in enumerate(confirm):
                await eventually(lambda oid=p.oid: _released(pg_url, oid), 30, "released")
                await place_and_confirm(customers, restaurants, p, i)

        nats_down = asyncio.Event()
        async with running(probe_index(rs.locations[0], index[0]),
                           probe_index(rs.locations[1], index[1]),
                           probe_jetstream(nats_url, namespace, stream)):  # fmt: skip
            load_task = asyncio.create_task(load())
            release_task = asyncio.create_task(release_when_due(nats_down))
            t_load = time.monotonic()
            await asyncio.sleep(3)

            # Fault 1: the Redis primary serving the region (drivers' index, search index).
            victim = await redis_cluster.primary_for(Keys(namespace).region("drivers", REGION))
            redis_cluster.kill(victim)
            redis_fault = time.monotonic()
            await eventually(lambda: _answered_since(index, redis_fault), 30,
                             "both Location replicas' index answering again",
                             lambda: _errors(index))  # fmt: skip
            promoted = await redis_cluster.primary_for(Keys(namespace).region("drivers", REGION))
            assert promoted != victim
            await asyncio.sleep(2)

            # Fault 2: the NATS node leading the stream of order events.
            orders_stream = Subjects(namespace).stream(order.STREAM)
            leader = await nats_cluster.wait_stream_leader(orders_stream)
            nats_victim = nats_cluster.index_of(leader)
            nats_cluster.kill(nats_victim)
            nats_fault = time.monotonic()
            nats_down.set()
            await nats_cluster.wait_stream_leader(orders_stream, other_than=leader)
            elected = time.monotonic() - nats_fault
            await eventually(lambda: _answered_since([stream], nats_fault), 30,
                             "JetStream taking R3 writes after the node died",
                             lambda: _errors([stream]))  # fmt: skip
            await nats_cluster.wait_meta_leader()

            mark("faults injected")
            await asyncio.wait_for(asyncio.gather(load_task, release_task), 120)
            load_s = time.monotonic() - t_load
            oids = [p.oid for p in placed] + held
            mark("load placed")
            await eventually(lambda: all_assigned(pg_url, oids), 60, "every order assigned",
                             lambda: fleet_state(pg_url))  # fmt: skip
            mark("every order assigned")

        mark("probes stopped")
        # The killed nodes come back and rejoin: the Redis one as a replica.
        t0 = time.monotonic()
        await redis_cluster.restart(victim)
        await redis_cluster.wait_healthy()
        redis_rejoin = time.monotonic() - t0
        t0 = time.monotonic()
        await nats_cluster.restart(nats_victim)
        nats_rejoin = time.monotonic() - t0

        mark("nodes back")
        await asyncio.sleep(1)  # room for a late duplicate to show up
        # No acknowledged order lost, none assigned twice: in fleet, on the drivers' own
        # sessions and in the Order service (assert_assigned_exactly_once says how).
        await assert_assigned_exactly_once(rs.mesh, bots, oids)
        assert await rows(pg_url, "SELECT count(*) FROM orders.orders") == [(len(oids),)]
        # Each scheduled order was released once, by one of the two replicas.
        released = await rows(pg_url, "SELECT event_id FROM orders.outbox"
                                      " WHERE event_id LIKE '%%.released'")  # fmt: skip
        assert sorted(str(e) for (e,) in released) == sorted(f"{o}.released" for o in held)
        for c in customers:  # both Order replicas know every order, with its driver
            for oid in oids:
                got = (await c.get_order(opb.GetOrderRequest(order_id=oid))).order
                assert got.driver_id and got.status == common_pb2.ORDER_STATUS_CONFIRMED

        mark("orders checked")
        # The location index still answers, on both replicas, with every driver.
        for target in rs.locations:
            async with LocationClient(target, options=token("service", "dispatch")) as c:
                near = await c.find_nearby_drivers(lpb.FindNearbyDriversRequest(
                    center=common_pb2.LatLng(lat=REST[0], lon=REST[1]), radius_meters=8000,
                    statuses=[DS.DRIVER_STATUS_AVAILABLE, DS.DRIVER_STATUS_OFFERED,
                              DS.DRIVER_STATUS_ON_DELIVERY], limit=200))  # fmt: skip
                found = {d.position.driver_id for d in near.drivers}
                missing = {}
                for b in bots:
                    if b.driver_id not in found:
                        got = await c.get_driver_location(
                            lpb.GetDriverLocationRequest(driver_id=b.driver_id)
                        )
                        missing[b.driver_id] = await _where(redis_url, namespace, b.driver_id)
                assert missing == {}, missing

        mark("index checked")

        # The region has a Dispatch leader (a live lease), and every stream has 3 copies. A
        # lease that lapsed while its stream elected a new leader is taken again at the next
        # renewal: wait for it rather than read the bucket in that gap.
        async def led() -> bool:
            return bool((await _leases_and_streams(nats_url, namespace))[0].get(REGION))

        await eventually(led, 20, "a Dispatch leader for the region")
        leases, streams = await _leases_and_streams(nats_url, namespace)
        assert leases.get(REGION), leases
        assert streams and all(n == 3 for n in streams.values()), streams

        mark("leases and streams checked")
        await eventually(lambda: outboxes_drained(pg_url), 20, "both outboxes published")
        mark("outboxes drained")
        assert unhandled(caplog.records) == []

        report = _report(
            placed, bots, index, stream, redis_fault=redis_fault, nats_fault=nats_fault,
            elected=elected,
            load_s=load_s, redis_rejoin=redis_rejoin, nats_rejoin=nats_rejoin,
            total=time.monotonic() - t_start, marks=marks,
        )  # fmt: skip
        with capsys.disabled():
            print("\n" + report)


async def _where(redis_url: str, namespace: str, driver_id: str) -> str:
    """A driver's hash and the indexes of its region that hold it, for a failure's message."""
    r = redis_client(redis_url, name="tests")
    try:
        keys = Keys(namespace)
        state = await r.hgetall(keys.key("driver", driver_id))
        region = (state.get(b"rg") or b"").decode() or REGION
        held = [s for s in ("available", "offered", "on_delivery", "paused")
                if await r.zscore(keys.region("drivers", region, s), driver_id)
                is not None]  # fmt: skip
        return f"hash {state} in {held}"
    finally:
        await r.aclose()


async def _released(pg_url: str, oid: str) -> bool:
    got = await rows(pg_url, "SELECT released FROM orders.orders WHERE order_id = %s", oid)
    return got == [(True,)]


async def _errors(probes: Sequence[Probe]) -> str:
    return "; ".join(f"{p.name}: {len(p.samples)} calls, failures {p.errors}" for p in probes)


async def _answered_since(probes: Sequence[Probe], fault_at: float) -> bool:
    """Every probe had a call that started after ``fault_at`` answered."""
    if not all(p.samples for p in probes):
        raise AssertionError(f"a probe never ran: {[p.name for p in probes if not p.samples]}")
    return all(any(s >= fault_at and ok for s, _, ok in p.samples) for p in probes)


async def _leases_and_streams(
    nats_url: str, namespace: str
) -> tuple[dict[str, str], dict[str, int]]:
    """Region → lease holder (Dispatch's KV bucket), and stream → replicas, of this namespace."""
    subjects = Subjects(namespace)
    nc = await nats.connect(server_urls(nats_url))
    try:
        js = nc.jetstream()
        kv = await js.key_value(subjects.bucket("dispatch_leases"))
        leases = {}
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:  # no lease held at this moment
            keys = []
        for key in keys:
            entry = await kv.get(key)
            leases[key] = (entry.value or b"").decode()
        streams = {
            s.config.name or "": s.config.num_replicas or 1
            for s in await js.streams_info()
            if (s.config.name or "").startswith(subjects.stream(""))
        }
        return leases, streams
    finally:
        await _close(nc)


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _report(
    placed: Sequence[Placed], bots: Sequence[Bot], index: Sequence[Probe], stream: Probe, *,
    redis_fault: float, nats_fault: float, elected: float, load_s: float, redis_rejoin: float,
    nats_rejoin: float, total: float, marks: Sequence[tuple[str, float]],
) -> str:  # fmt: skip
    assign = [b.confirmed_at[p.oid] - p.acked_at
              for p in placed for b in bots if p.oid in b.confirmed_at]  # fmt: skip
    after_nats = [b.confirmed_at[p.oid] - p.acked_at for p in placed for b in bots
                  if p.oid in b.confirmed_at and p.acked_at >= nats_fault]  # fmt: skip
    retried = [p for p in placed if p.errors]
    lines = [
        "scale-out: 2 x Order, 2 x Location, 2 x Dispatch on Redis Cluster (3 primaries"
        " + 3 replicas) and NATS (3 nodes, JetStream R3)",
        f"  load: {DRIVERS} drivers (a fix every 0.5 s each), {len(placed)} orders over"
        f" {load_s:.1f} s (one every {ORDER_EVERY_S} s); test took {total:.0f} s",
        f"  Redis primary killed: index answering again after"
        f" {max(p.recovered_after(redis_fault) for p in index):.2f} s"
        f" ({sum(p.failures_after(redis_fault) for p in index)} probe calls failed);"
        f" node rejoined as a replica in {redis_rejoin:.2f} s",
        f"  NATS node leading the orders stream killed: new leader in {elected:.2f} s;"
        f" a probe's R3 publishes acknowledged again after"
        f" {stream.recovered_after(nats_fault):.2f} s ({stream.failures_after(nats_fault)}"
        f" failed); node back in {nats_rejoin:.2f} s",
        f"  orders: {len(placed)} + {SCHEDULED} scheduled (released during the NATS fault)"
        f" acknowledged, each assigned once;"
        f" {len(retried)} needed a retry ({sum(len(p.errors) for p in retried)} failed calls)",
        f"  order acknowledged -> driver confirmed: p50 {_pct(assign, 0.5):.2f} s,"
        f" max {max(assign):.2f} s; orders acknowledged after the NATS fault:"
        f" max {max(after_nats, default=float('nan')):.2f} s",
    ]
    lines.append("  steps (s from the start): "
                 + ", ".join(f"{phase} {at:.1f}" for phase, at in marks))  # fmt: skip
    return "\n".join(lines)
