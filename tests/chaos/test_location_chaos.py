"""Location under failure: Redis killed mid-stream, PostgreSQL unreachable for history."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from clients import ClientOptions, LocationClient
from foodmesh.v1 import location_pb2
from servers.location.fixes import Fix
from servers.location.history import HistoryConfig, HistoryWriter
from servers.runtime.migrate import load_migrations, migrate
from tests.chaos._servers import OwnRedis, free_port
from tests.integration._location import SERVICE, DriverApp, fix, location_service, wait_for

SF = (37.7749, -122.4194)


async def test_redis_killed_mid_stream_degrades_then_recovers(
    own_redis: OwnRedis, pg_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        location_service(
            pg_url=pg_url,
            redis_url=own_redis.url,
            nats_url=nats_url,
            namespace=namespace,
            state_dir=tmp_path,
        ) as svc,
        LocationClient(svc.target, options=ClientOptions(metadata=SERVICE)) as ops,
        DriverApp(svc.target, "drv_c") as app,
    ):
        now = time.time()
        ack = await app.send(fix(*SF, ts=now, seq=1))
        assert (ack.accepted, ack.degraded) == (1, False)
        own_redis.kill()
        # The stream stays open; fixes are taken and the ack says degraded.
        ack = await app.send(fix(SF[0] + 0.01, SF[1], ts=now + 1, seq=2))
        assert (ack.accepted, ack.degraded) == (1, True)
        ack = await app.send(fix(SF[0] + 0.02, SF[1], ts=now + 2, seq=3))
        assert (ack.accepted, ack.degraded) == (1, True)
        # Redis back (empty: it kept nothing): the buffered position is written.
        own_redis.start()

        async def recovered() -> bool:
            a = await app.send(fix(SF[0] + 0.02, SF[1], ts=time.time() + 3, seq=4))
            return not a.degraded

        await wait_for(recovered, within=10, every=0.2)
        found = (
            await ops.find_nearby_drivers(
                location_pb2.FindNearbyDriversRequest(
                    center={"lat": SF[0] + 0.02, "lon": SF[1]}, radius_meters=100
                )
            )
        ).drivers
        assert [d.position.driver_id for d in found] == ["drv_c"]


def _fixes(n: int, start: float) -> list[Fix]:
    return [Fix("drv_spill", SF[0], SF[1], 5.0, 0.0, 0.0, start + i, start + i) for i in range(n)]


async def test_history_spills_to_disk_while_postgres_is_away_and_catches_up(
    pg_url: str, tmp_path: Path
) -> None:
    await migrate(
        pg_url, service="location", migrations=load_migrations(Path("servers/location/migrations"))
    )
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    config = HistoryConfig(max_buffer_rows=100, spill_dir=tmp_path / "spill")
    start = time.time() - 600
    async with AsyncConnectionPool(dead, min_size=0, max_size=1, timeout=0.5, open=False) as down:
        writer = HistoryWriter(down, config)
        writer.add(_fixes(60, start))
        assert await writer.flush() == 0 and not writer.healthy
        writer.add(_fixes(60, start + 60))  # 120 > 100 in memory: to disk
        assert writer.buffered == 0 and writer.spilled == 120
        assert len(list((tmp_path / "spill").glob("spill-*.csv"))) == 1
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as up:
        writer.pool = up
        writer.add(_fixes(5, start + 120))

        async def caught_up() -> bool:
            await writer.flush()
            return writer.healthy and not list((tmp_path / "spill").glob("spill-*.csv"))

        await wait_for(caught_up, within=5)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*), count(DISTINCT ts) FROM location.history")
        assert await cur.fetchone() == (125, 125)
