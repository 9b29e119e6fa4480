"""The Location service through its real gRPC port, on real Redis, NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import psycopg
import pytest
import redis.asyncio as aioredis
from google.protobuf import timestamp_pb2
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from clients import ClientOptions, LocationClient
from foodmesh.core.errors import DependencyUnavailable
from foodmesh.core.geo import METERS_PER_MILE, geohash_encode, haversine_m
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.core.redis import Keys
from foodmesh.v1 import common_pb2, location_pb2
from servers.location.fixes import Fix
from servers.location.ingest import Ingest
from servers.location.store import LiveStore
from servers.runtime.serve import RunningService
from tests.integration._location import SERVICE, DriverApp, fix, location_service, token, wait_for

DS = common_pb2.DriverStatus
R = location_pb2.FixRejectionReason
SF = (37.7749, -122.4194)


@pytest.fixture
async def svc(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[RunningService]:
    async with location_service(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as running:
        yield running


@pytest.fixture
async def ops(svc: RunningService) -> AsyncIterator[LocationClient]:
    async with LocationClient(svc.target, options=ClientOptions(metadata=SERVICE)) as client:
        yield client


async def nearby(
    client: LocationClient, lat: float, lon: float, meters: float, **kw: object
) -> list[location_pb2.NearbyDriver]:
    req = location_pb2.FindNearbyDriversRequest(radius_meters=meters, **kw)  # type: ignore[arg-type]
    req.center.lat, req.center.lon = lat, lon
    return list((await client.find_nearby_drivers(req)).drivers)


async def test_a_streaming_driver_is_found_nearby_within_a_second(
    svc: RunningService, ops: LocationClient
) -> None:
    async with DriverApp(svc.target, "drv_1") as app:
        sent = time.monotonic()
        ack = await app.send(fix(SF[0] + 0.001, SF[1], seq=1))
        assert (ack.acked_seq, ack.accepted, list(ack.rejections), ack.degraded) == (
            1,
            1,
            [],
            False,
        )
        # An available driver that has not stood still long reports every 15 s.
        assert ack.next_interval.seconds == 15
        found = await nearby(ops, *SF, 1000)
        took = time.monotonic() - sent
    assert [d.position.driver_id for d in found] == ["drv_1"]
    d = found[0]
    assert d.position.status == DS.DRIVER_STATUS_AVAILABLE
    assert d.distance_meters == pytest.approx(haversine_m(*SF, SF[0] + 0.001, SF[1]), abs=0.01)
    assert d.position.geohash == geohash_encode(SF[0] + 0.001, SF[1], 6)
    assert took < 1.0


async def test_bad_fixes_are_rejected_with_reasons_and_the_stream_stays_open(
    svc: RunningService,
) -> None:
    now = time.time()

    def counted(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value("foodmesh_location_fixes_total", {"outcome": outcome}) or 0.0
        )

    before = {o: counted(o) for o in ("accepted", "bad_coordinates", "too_old")}
    async with DriverApp(svc.target, "drv_bad") as app:
        bad_acc = fix(*SF, seq=3)
        bad_acc.accuracy = -1
        bad_heading = fix(*SF, seq=4)
        bad_heading.heading = 400
        ack = await app.send(
            fix(91.0, 0.0, seq=1),
            fix(math.nan, 0.0, seq=2),
            bad_acc,
            bad_heading,
            fix(*SF, ts=now + 120, seq=5),
            fix(*SF, ts=now - 700, seq=6),
            fix(*SF, ts=now, seq=7),
        )
        got = {r.seq: r.reason for r in ack.rejections}
        assert got == {
            1: R.FIX_REJECTION_REASON_BAD_COORDINATES,
            2: R.FIX_REJECTION_REASON_BAD_COORDINATES,
            3: R.FIX_REJECTION_REASON_BAD_ACCURACY,
            4: R.FIX_REJECTION_REASON_BAD_HEADING,
            5: R.FIX_REJECTION_REASON_IN_THE_FUTURE,
            6: R.FIX_REJECTION_REASON_TOO_OLD,
        }
        assert all(r.message for r in ack.rejections)
        assert (ack.accepted, ack.acked_seq) == (1, 7)
        # Same timestamp again, then an older one: both out of order; the stream goes on.
        ack = await app.send(fix(*SF, ts=now, seq=8), fix(*SF, ts=now - 1, seq=9))
        assert [r.reason for r in ack.rejections] == [R.FIX_REJECTION_REASON_OUT_OF_ORDER] * 2
        ack = await app.send(fix(*SF, ts=now + 1, seq=10))
        assert ack.accepted == 1
    # The same outcomes, counted for Prometheus.
    assert counted("accepted") - before["accepted"] == 2
    assert counted("bad_coordinates") - before["bad_coordinates"] == 2
    assert counted("too_old") - before["too_old"] == 1


async def test_a_flood_is_throttled_not_queued(svc: RunningService) -> None:
    base = time.time() - 100
    async with DriverApp(svc.target, "drv_flood") as app:
        ack = await app.send(*[fix(*SF, ts=base + i * 0.01, seq=i) for i in range(1, 41)])
    throttled = [r for r in ack.rejections if r.reason == R.FIX_REJECTION_REASON_THROTTLED]
    assert ack.accepted == 10  # the burst
    assert len(throttled) == 30


async def test_a_reconnect_cannot_move_a_driver_back_in_time(
    svc: RunningService, ops: LocationClient
) -> None:
    now = time.time()
    async with DriverApp(svc.target, "drv_2") as app:
        assert (await app.send(fix(37.70, -122.40, ts=now, seq=1))).accepted == 1
    # A second stream (another replica, a reconnect) with an older fix: the store refuses it.
    async with DriverApp(svc.target, "drv_2") as app:
        ack = await app.send(fix(37.80, -122.40, ts=now - 5, seq=2))
        assert [r.reason for r in ack.rejections] == [R.FIX_REJECTION_REASON_OUT_OF_ORDER]
    pos = (
        await ops.get_driver_location(location_pb2.GetDriverLocationRequest(driver_id="drv_2"))
    ).position
    assert (pos.lat, pos.lon) == (37.70, -122.40)


async def test_find_nearby_is_exact_against_brute_force_haversine(
    svc: RunningService, ops: LocationClient
) -> None:
    rng = random.Random(7)
    # Around a corner of four geohash-4 regions, so searches cross region indexes.
    corner = (37.79296875, -122.34375)
    drivers: dict[str, tuple[float, float]] = {}
    now = time.time()
    for i in range(150):
        lat = corner[0] + rng.uniform(-0.15, 0.15)
        lon = corner[1] + rng.uniform(-0.15, 0.15)
        drivers[f"drv_{i:03d}"] = (lat, lon)
    async with asyncio.TaskGroup() as tg:
        for driver_id, (lat, lon) in drivers.items():
            client = LocationClient(
                svc.target, options=ClientOptions(metadata=token("driver", driver_id))
            )
            req = location_pb2.UpdateLocationRequest(lat=lat, lon=lon, accuracy=3)
            req.timestamp.FromNanoseconds(int(now * 1e9))

            async def send(
                c: LocationClient = client, r: location_pb2.UpdateLocationRequest = req
            ) -> None:
                async with c:
                    await c.update_location(r)

            tg.create_task(send())
    assert len({geohash_encode(lat, lon, 4) for lat, lon in drivers.values()}) >= 4
    for _ in range(25):
        c = (corner[0] + rng.uniform(-0.1, 0.1), corner[1] + rng.uniform(-0.1, 0.1))
        radius = rng.uniform(200, 12_000)
        got = await nearby(ops, *c, radius, limit=1000)
        expected = sorted(
            (haversine_m(*c, lat, lon), d)
            for d, (lat, lon) in drivers.items()
            if haversine_m(*c, lat, lon) <= radius
        )
        assert [n.position.driver_id for n in got] == [d for _, d in expected]
        for n, (dist, _) in zip(got, expected, strict=True):
            assert n.distance_meters == pytest.approx(dist, abs=1e-6)
    # limit keeps the nearest
    got = await nearby(ops, *corner, 5 * METERS_PER_MILE, limit=3)
    assert (
        len(got) == 3 and got[0].distance_meters <= got[1].distance_meters <= got[2].distance_meters
    )


async def test_a_driver_crossing_a_region_is_in_exactly_one_index(
    svc: RunningService, ops: LocationClient, redis_client: aioredis.Redis, namespace: str
) -> None:
    west, east = (37.79, -122.3440), (37.79, -122.3430)  # either side of a region edge
    assert geohash_encode(*west, 4) != geohash_encode(*east, 4)
    now = time.time()
    async with DriverApp(svc.target, "drv_x") as app:
        for i, p in enumerate([west, east, west, east]):
            await app.send(fix(*p, ts=now + i, seq=i))
            found = await nearby(ops, 37.79, -122.3435, 500)
            assert [d.position.driver_id for d in found] == ["drv_x"]
    members = {
        key.decode(): await redis_client.zrange(key, 0, -1)
        async for key in redis_client.scan_iter(match=f"{namespace}:drivers:*")
    }
    holding = [k for k, m in members.items() if b"drv_x" in m]
    assert holding == [f"{namespace}:drivers:{{{geohash_encode(*east, 4)}}}:available"]


async def test_status_moves_a_driver_between_indexes(
    svc: RunningService, ops: LocationClient
) -> None:
    async with DriverApp(svc.target, "drv_s") as app:
        await app.send(fix(*SF, seq=1))
        req = location_pb2.SetDriverStatusRequest(
            driver_id="drv_s", status=DS.DRIVER_STATUS_ON_DELIVERY, order_id="ord_1"
        )
        req.next_stop.lat, req.next_stop.lon = SF[0] + 0.002, SF[1]  # ~220 m away
        await ops.set_driver_status(req)
        assert await nearby(ops, *SF, 1000) == []
        on_delivery = await nearby(ops, *SF, 1000, statuses=[DS.DRIVER_STATUS_ON_DELIVERY])
        assert [d.position.driver_id for d in on_delivery] == ["drv_s"]
        # Close to the next stop the app is asked for a fix every 2 s.
        ack = await app.send(fix(SF[0] + 0.0001, SF[1], seq=2))
        assert ack.next_interval.seconds == 2


async def test_each_fix_is_published_on_nats(
    svc: RunningService, nats_url: str, namespace: str
) -> None:
    nc = await open_nats(nats_url, name="test")
    got: asyncio.Queue[location_pb2.DriverLocationEvent] = asyncio.Queue()

    async def on_msg(msg: object) -> None:
        await got.put(location_pb2.DriverLocationEvent.FromString(msg.data))  # type: ignore[attr-defined]

    try:
        await nc.subscribe(f"{namespace}.location.v1.driver.drv_n", cb=on_msg)
        await nc.flush()
        async with DriverApp(svc.target, "drv_n") as app:
            await app.send(fix(*SF, seq=1, speed_mph=30.0))
            ev = await asyncio.wait_for(got.get(), timeout=1.0)
        assert (ev.position.driver_id, ev.position.lat, ev.position.lon) == ("drv_n", *SF)
        assert ev.position.speed == pytest.approx(30.0)
    finally:
        await nc.close()


async def test_every_fix_of_a_batched_message_is_published_and_the_newest_is_live(
    svc: RunningService, ops: LocationClient, nats_url: str, namespace: str
) -> None:
    nc = await open_nats(nats_url, name="test")
    got: asyncio.Queue[location_pb2.DriverLocationEvent] = asyncio.Queue()

    async def on_msg(msg: object) -> None:
        await got.put(location_pb2.DriverLocationEvent.FromString(msg.data))  # type: ignore[attr-defined]

    start = time.time() - 5
    # 0.004 degrees apart: the fixes cross geohash-6 cells (0.0055 degrees of latitude).
    sent = [fix(SF[0] + i * 0.004, SF[1], ts=start + i, seq=i) for i in range(6)]
    try:
        await nc.subscribe(f"{namespace}.location.v1.driver.drv_b", cb=on_msg)
        await nc.flush()
        async with DriverApp(svc.target, "drv_b") as app:
            ack = await app.send(*sent)
            events = [await asyncio.wait_for(got.get(), timeout=2.0) for _ in sent]
    finally:
        await nc.close()
    assert ack.accepted == len(sent) and not ack.rejections
    assert [e.position.lat for e in events] == [f.lat for f in sent]
    assert [e.position.last_updated.seconds for e in events] == [int(start + i) for i in range(6)]
    assert [e.position.geohash for e in events] == [geohash_encode(f.lat, f.lon, 6) for f in sent]
    assert {e.position.status for e in events} == {DS.DRIVER_STATUS_AVAILABLE}
    pos = (
        await ops.get_driver_location(location_pb2.GetDriverLocationRequest(driver_id="drv_b"))
    ).position
    assert (pos.lat, pos.lon) == (sent[-1].lat, sent[-1].lon)  # the newest one is live


async def test_a_stopping_ingest_fails_the_fixes_it_holds_instead_of_leaving_them_waiting(
    redis_url: str, namespace: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    ingest = Ingest(
        LiveStore(redis, Keys(namespace)),
        None,
        nats=NATS,  # never reached: nothing is written before the stop
        subjects=Subjects(namespace),
        on_presence=lambda ev: None,
        linger_s=60.0,  # the writer takes the first fix, then waits for company
    )
    now = time.time()
    fixes = [Fix(f"drv_stop{i}", *SF, 5.0, 0.0, 0.0, now, now) for i in range(3)]
    try:
        ingest.start()
        waiting = [asyncio.create_task(ingest.submit([f])) for f in fixes[:2]]
        await asyncio.sleep(0.1)  # one in the writer's hands, one queued
        await ingest.stop()
        for task in waiting:
            with pytest.raises(DependencyUnavailable):
                await asyncio.wait_for(task, timeout=5.0)
        with pytest.raises(DependencyUnavailable):
            await asyncio.wait_for(ingest.submit(fixes[2:]), timeout=5.0)
    finally:
        await redis.aclose()


async def test_a_backlog_is_written_at_once_without_waiting_for_company(
    redis_url: str, nats_url: str, namespace: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    nc = await open_nats(nats_url, name="test")
    ingest = Ingest(
        LiveStore(redis, Keys(namespace)),
        None,
        nats=lambda: nc,
        subjects=Subjects(namespace),
        on_presence=lambda ev: None,
        max_batch=40,
        linger_s=60.0,  # a lone fix waits that long for company; a backlog must not
    )
    now = time.time()
    messages = [
        [Fix(f"drv_lag{i}", *SF, 5.0, 0.0, 0.0, now - 5 + j, now) for j in range(5)]
        for i in range(3)
    ]
    try:
        ingest.start()
        # All queued before the writer wakes, as after a pause: 10 fixes behind the first
        # message are a quarter of max_batch (fixes, not messages), company enough.
        waiting = [asyncio.create_task(ingest.submit(m)) for m in messages]
        outcomes = await asyncio.wait_for(asyncio.gather(*waiting), timeout=5.0)
        assert [sum(a is not None for a in o.accepted) for o in outcomes] == [5, 5, 5]
        assert ingest.batches == 1
    finally:
        await ingest.stop()
        await nc.close()
        await redis.aclose()


async def presence_events(
    nc: NATS, namespace: str
) -> tuple[asyncio.Queue[location_pb2.DriverPresenceEvent], object]:
    q: asyncio.Queue[location_pb2.DriverPresenceEvent] = asyncio.Queue()

    async def on_msg(msg: object) -> None:
        await q.put(location_pb2.DriverPresenceEvent.FromString(msg.data))  # type: ignore[attr-defined]

    sub = await nc.subscribe(f"{namespace}.location.v1.presence", cb=on_msg)
    await nc.flush()
    return q, sub


async def test_a_silent_driver_goes_offline_once_with_two_replicas_and_comes_back(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    fast = {"FOODMESH_LOCATION_PRESENCE_TIMEOUT_S": "0.6"}
    common = dict(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace, extra=fast
    )
    nc = await open_nats(nats_url, name="test")
    try:
        events, _ = await presence_events(nc, namespace)
        async with (
            location_service(**common, state_dir=tmp_path / "a") as a,  # type: ignore[arg-type]
            location_service(**common, state_dir=tmp_path / "b", migrated=True) as b,  # type: ignore[arg-type]
            LocationClient(b.target, options=ClientOptions(metadata=SERVICE)) as ops,
        ):
            async with DriverApp(a.target, "drv_p") as app:
                await app.send(fix(*SF, seq=1))
                online = await asyncio.wait_for(events.get(), timeout=2)
                assert (online.driver_id, online.online) == ("drv_p", True)
                assert len(await nearby(ops, *SF, 500)) == 1
                # Silence: both replicas sweep; exactly one event.
                offline = await asyncio.wait_for(events.get(), timeout=3)
                assert (offline.driver_id, offline.online) == ("drv_p", False)
                assert offline.last_position.lat == SF[0]
                await asyncio.sleep(1.0)
                assert events.empty()
                assert await nearby(ops, *SF, 500) == []
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ops.get_driver_location(
                        location_pb2.GetDriverLocationRequest(driver_id="drv_p")
                    )
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                # Back: online again, findable again, one event.
                await app.send(fix(*SF, seq=2))
                back = await asyncio.wait_for(events.get(), timeout=2)
                assert (back.driver_id, back.online) == ("drv_p", True)
                assert len(await nearby(ops, *SF, 500)) == 1
    finally:
        await nc.close()


async def test_history_arrives_by_copy_and_is_downsampled(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    start = time.time() - 300
    async with (
        location_service(
            pg_url=pg_url,
            redis_url=redis_url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
            extra={"FOODMESH_LOCATION_BURST": "100"},  # a replayed offline buffer
        ) as svc,
        LocationClient(svc.target, options=ClientOptions(metadata=SERVICE)) as ops,
    ):
        async with DriverApp(svc.target, "drv_h") as app:
            fixes = [fix(SF[0] + i * 1e-4, SF[1], ts=start + i, seq=i) for i in range(100)]
            assert (await app.send(*fixes)).accepted == 100
        await _check_history(ops, pg_url, start)


async def _check_history(ops: LocationClient, pg_url: str, start: float) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:

        async def landed() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM location.history WHERE driver_id = 'drv_h'"
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 100

        await wait_for(landed, within=3)
        today = dt.datetime.now(dt.UTC).date()
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid ORDER BY 1"
        )
        parts = [r[0] for r in await cur.fetchall()]
    assert f"history_{today:%Y%m%d}" in parts
    assert f"history_{today + dt.timedelta(days=1):%Y%m%d}" in parts  # created ahead
    req = location_pb2.GetLocationHistoryRequest(driver_id="drv_h", max_points=10)
    req.start_time.FromNanoseconds(int((start - 1) * 1e9))
    req.end_time.FromNanoseconds(int((start + 1000) * 1e9))
    got = await ops.get_location_history(req)
    assert got.total_points == 100
    assert len(got.points) == 10
    stamps = [p.timestamp.ToNanoseconds() for p in got.points]
    assert stamps == sorted(stamps)
    assert got.points[0].lat == pytest.approx(SF[0])


async def test_history_retention_drops_old_partitions(pg_url: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    from servers import location
    from servers.location.history import HistoryConfig, HistoryWriter
    from servers.runtime.migrate import load_migrations, migrate

    assert location.SPEC.migrations is not None
    await migrate(pg_url, service="location", migrations=load_migrations(location.SPEC.migrations))

    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool:
        writer = HistoryWriter(pool, HistoryConfig(retention_days=30))
        today = dt.date(2026, 11, 25)
        old, kept = today - dt.timedelta(days=31), today - dt.timedelta(days=30)
        await writer.ensure_partitions({old, kept, today})
        dropped = await writer.drop_old_partitions(today=today)
    assert dropped == [f"history_{old:%Y%m%d}"]


ONE_ONE = common_pb2.LatLng(lat=1, lon=1)


async def test_bad_requests_name_the_field(svc: RunningService, ops: LocationClient) -> None:
    cases = [
        (location_pb2.FindNearbyDriversRequest(radius_meters=100), "center"),
        (location_pb2.FindNearbyDriversRequest(center=ONE_ONE), "radius_miles"),
        (
            location_pb2.FindNearbyDriversRequest(center=ONE_ONE, radius_miles=100),
            "radius_miles",
        ),
        (
            location_pb2.FindNearbyDriversRequest(center=ONE_ONE, radius_meters=10, limit=5000),
            "limit",
        ),
        (
            location_pb2.FindNearbyDriversRequest(
                center=ONE_ONE, radius_meters=10, statuses=[DS.DRIVER_STATUS_OFFLINE]
            ),
            "statuses[0]",
        ),
    ]
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    for req, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ops.find_nearby_drivers(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        fields = []
        for d in status.details:
            if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                d.Unpack(br)
                fields += [v.field for v in br.field_violations]
        assert field in fields, (req, fields)


async def test_update_location_is_the_callers_own_and_idempotent(
    svc: RunningService, ops: LocationClient
) -> None:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(time.time() * 1e9))
    async with LocationClient(
        svc.target, options=ClientOptions(metadata=token("driver", "drv_u"))
    ) as me:
        req = location_pb2.UpdateLocationRequest(
            driver_id="drv_u", lat=SF[0], lon=SF[1], timestamp=ts
        )
        await me.update_location(req)
        await me.update_location(req)  # a retry: same fix, no error
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.update_location(
                location_pb2.UpdateLocationRequest(
                    driver_id="drv_other", lat=1, lon=1, timestamp=ts
                )
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.update_location(
                location_pb2.UpdateLocationRequest(lat=1, lon=500, timestamp=ts)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with LocationClient(
        svc.target, options=ClientOptions(metadata=token("customer", "cus_1"))
    ) as customer:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await customer.update_location(
                location_pb2.UpdateLocationRequest(lat=1, lon=1, timestamp=ts)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    pos = (
        await ops.get_driver_location(location_pb2.GetDriverLocationRequest(driver_id="drv_u"))
    ).position
    assert (pos.lat, pos.lon) == SF


async def _history_written(
    pg_url: str, batches: Sequence[Sequence[Fix]], query: str
) -> list[tuple[object, ...]]:
    """``batches`` through a HistoryWriter (one ``add`` each, one flush), then ``query``."""
    from psycopg_pool import AsyncConnectionPool

    from servers import location
    from servers.location.history import HistoryWriter
    from servers.runtime.migrate import load_migrations, migrate

    assert location.SPEC.migrations is not None
    await migrate(pg_url, service="location", migrations=load_migrations(location.SPEC.migrations))
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool:
        writer = HistoryWriter(pool)
        for batch in batches:
            writer.add(batch)
        assert await writer.flush() == sum(len(b) for b in batches)
        async with pool.connection() as conn:
            cur = await conn.execute(query)
            return list(await cur.fetchall())


async def test_history_rows_around_midnight_land_in_their_days_partitions(pg_url: str) -> None:
    midnight = time.time() // 86400 * 86400
    fixes = [Fix("drv_mid", *SF, 5.0, 0.0, 0.0, midnight - 30 + 20 * i, midnight) for i in range(4)]
    rows = await _history_written(
        pg_url, [fixes[:1], fixes[1:]],
        "SELECT tableoid::regclass::text, count(*) FROM location.history GROUP BY 1 ORDER BY 1",
    )  # fmt: skip
    days = [dt.datetime.fromtimestamp(midnight + d, dt.UTC) for d in (-86400, 0)]
    assert rows == [(f"location.history_{day:%Y%m%d}", 2) for day in days]


async def test_history_copy_keeps_awkward_ids_and_exact_values(pg_url: str) -> None:
    odd = "drv\\with\ttab\nand line"
    ts = round(time.time() - 3600, 6)  # microseconds survive (and within retention)
    fixes = [Fix(odd, 37.7749295, -122.4194155, 3.5, 359.5, 1e-05, ts, ts + 0.5, "ord\\1")]
    rows = await _history_written(
        pg_url, [fixes],
        "SELECT driver_id, extract(epoch FROM ts), lat, lon, heading, speed_mps, order_id "
        "FROM location.history",
    )  # fmt: skip
    assert len(rows) == 1
    driver_id, epoch, lat, lon, heading, speed, order_id = rows[0]
    assert (driver_id, order_id, lat, lon) == (odd, "ord\\1", 37.7749295, -122.4194155)
    assert float(epoch) == pytest.approx(ts, abs=1e-6)
    assert (heading, speed) == (pytest.approx(359.5), pytest.approx(1e-05))
