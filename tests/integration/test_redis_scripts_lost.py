"""A Redis that lost our Lua scripts: a restart, SCRIPT FLUSH, or a replica just promoted.

Scripts are not replicated: after a Redis Cluster failover the new primary has none,
and every EVALSHA answers NOSCRIPT until they are loaded again. The stores load
them and resend what was refused, once; ``SCRIPT FLUSH`` stands in for the failover
here (``tests/scaleout`` has the real one).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from foodmesh.core.redis import Keys
from foodmesh.v1 import common_pb2
from servers.location.fixes import Fix
from servers.location.store import LiveStore
from servers.pricing.live import DemandCounter
from servers.runtime.redis_wire import RedisWire

DS = common_pb2.DriverStatus


def _fix(driver_id: str, ts: float, lat: float = 37.7749) -> Fix:
    return Fix(driver_id, lat, -122.4194, 5.0, 90.0, 3.0, ts, ts)


@pytest.fixture(params=["wire", "redis-py"])
async def store(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> AsyncIterator[LiveStore]:
    wire = RedisWire(redis_url) if request.param == "wire" else None
    try:
        yield LiveStore(redis_client, Keys(namespace), wire=wire)
    finally:
        if wire is not None:
            await wire.close()


async def test_fixes_status_and_sweeps_go_on_after_the_scripts_are_lost(
    store: LiveStore, redis_client: aioredis.Redis
) -> None:
    now = time.time()
    first = await store.write_fixes([_fix("d1", now - 2), _fix("d2", now - 2)])
    assert all(a is not None for a in first)

    await redis_client.script_flush()
    # Both drivers' next fixes are taken, not reported as duplicates: the refused
    # scripts were sent again, and only they.
    again = await store.write_fixes([_fix("d1", now - 1, 37.775), _fix("d2", now - 1)])
    assert [a is not None and a.fix.device_ts == now - 1 for a in again] == [True, True]
    assert (await store.get("d1")).lat == 37.775  # type: ignore[union-attr]

    await redis_client.script_flush()
    await store.set_status("d1", DS.DRIVER_STATUS_ON_DELIVERY, order_id="o1")
    near = await store.find_nearby(
        37.7749, -122.4194, 1000, statuses=[DS.DRIVER_STATUS_ON_DELIVERY], limit=5, max_age_s=60
    )
    assert [n.state.driver_id for n in near] == ["d1"]

    await redis_client.script_flush()
    gone = await store.sweep_offline(silent_for_s=0.5, now=now + 1)
    assert sorted(g.driver_id for g in gone) == ["d1", "d2"]


async def test_demand_is_counted_once_per_event_after_the_scripts_are_lost(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    demand = DemandCounter(redis_client, Keys(namespace))
    now = time.time()
    assert await demand.count([("e1", "9q8yyk", now)], now=now) == 1
    await redis_client.script_flush()
    # The pipeline is sent again after NOSCRIPT; set-if-absent keeps e1 counted once.
    assert await demand.count([("e1", "9q8yyk", now), ("e2", "9q8yyk", now)], now=now) == 1
    assert await demand.demand("9q8yyk", now=now) == 2
