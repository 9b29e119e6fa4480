"""Dispatch under failure: NATS killed (SIGKILL) and restarted, Location's Redis killed.

Issue 6: "NATS or Redis down: matching pauses and resumes, nothing is lost or
double-assigned". Real Catalog, Order, Location and Dispatch services run in this
process on a NATS (and, for the second scenario, a Redis for Location) of the
test's own, which the test kills and starts again on the same port. Simulated
drivers stream their positions (Location ``StreamLocations``) and hold a Dispatch
``DriverSession`` that accepts every offer it is made.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from foodmesh.v1 import dispatch_pb2 as dpb
from tests.chaos._servers import OwnNats, OwnRedis
from tests.integration._dispatch import confirmed_order, dispatch_mesh
from tests.integration._fleet import (
    SERVING,
    all_assigned,
    assignments,
    eventually,
    fleet,
    health,
    outboxes_drained,
    rows,
    settled,
    unhandled,
)

pytestmark = pytest.mark.timeout(120)

#: Dispatch with short beats: batches every 0.2 s, leases of 1.5 s (dispatch_settings),
#: offers lapsing in 5 s so a push lost in an outage costs little.
_DISPATCH = {"FOODMESH_DISPATCH_OFFER_EXPIRY_S": "5"}


# -- the scenarios ---------------------------------------------------------------------


async def test_nats_killed_and_restarted_loses_no_confirmed_order_and_assigns_each_once(
    own_nats: OwnNats, pg_url: str, redis_url: str, namespace: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    async with (
        dispatch_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=own_nats.url,
                      namespace=namespace, state_dir=tmp_path, extra=_DISPATCH) as mesh,
        fleet(mesh, 9) as bots,  # 8 orders, and one driver to spare
    ):  # fmt: skip
        before = [await confirmed_order(mesh, f"before-{i}") for i in range(3)]
        await eventually(lambda: all_assigned(pg_url, before), 15, "the first orders assigned")

        # Two more confirmed as NATS dies: their events may be published, fetched,
        # handled or acknowledged, or not, when it goes.
        racing = [asyncio.create_task(confirmed_order(mesh, f"racing-{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        own_nats.kill()
        raced = list(await asyncio.gather(*racing))
        # While NATS is away: orders are placed and confirmed; their events wait in
        # Order's outbox, and Dispatch (its health, its reads) stays up.
        during = [await confirmed_order(mesh, f"during-{i}") for i in range(3)]
        waiting = await rows(
            pg_url,
            "SELECT split_part(event_id, '.', 1) FROM orders.outbox"
            " WHERE published_at IS NULL AND subject LIKE '%%.confirmed'",
        )
        assert set(during) <= {str(o) for (o,) in waiting} <= set(during + raced), waiting
        assert await assignments(pg_url, during) == {}
        assert await health(mesh.dispatch.target, "liveness") == SERVING

        async def reports_nats_down() -> bool:
            return await health(mesh.dispatch.target) != SERVING

        await eventually(reports_nats_down, 5, "Dispatch's health to say NATS is away")
        async with mesh.client() as ops:
            listed = await ops.list_assignments(dpb.ListAssignmentsRequest())
            assert set(before) <= {a.order_id for a in listed.assignments} <= set(before + raced)
        await asyncio.sleep(2)  # several batches, renewals and fetches fail meanwhile

        own_nats.start()  # same port, same JetStream store

        async def serving() -> bool:
            return await health(mesh.dispatch.target) == SERVING

        await eventually(serving, 10, "Dispatch's health back to SERVING")
        everything = before + raced + during
        await settled(mesh, bots, everything)
        # Nobody was offered an order beyond the one they took.
        assert sorted(o for b in bots for o in b.offers) == sorted(everything)

        await eventually(lambda: outboxes_drained(pg_url), 10, "both outboxes published")
        assigned = await rows(pg_url, "SELECT count(*) FROM fleet.outbox"
                                      " WHERE subject LIKE '%%.assigned'")  # fmt: skip
        assert assigned == [(len(everything),)]
    assert unhandled(caplog.records) == []


async def test_locations_redis_killed_pauses_matching_until_fixes_repopulate_the_index(
    own_redis: OwnRedis, pg_url: str, redis_url: str, nats_url: str, namespace: str,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    async with (
        dispatch_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                      namespace=namespace, state_dir=tmp_path, extra=_DISPATCH,
                      location_redis_url=own_redis.url) as mesh,
        fleet(mesh, 5) as bots,
    ):  # fmt: skip
        first = await confirmed_order(mesh, "before")
        await eventually(lambda: all_assigned(pg_url, [first]), 15, "the first order assigned")

        own_redis.kill()
        pending = [await confirmed_order(mesh, f"pending-{i}") for i in range(3)]

        async def in_the_pool() -> bool:
            got = await assignments(pg_url, pending)
            return len(got) == len(pending)

        await eventually(in_the_pool, 10, "the confirmed orders in Dispatch's pool")
        await asyncio.sleep(2)  # ten batch intervals: nobody can be found, nobody is offered
        got = await assignments(pg_url, pending)
        assert {s for s, _ in got.values()} == {"pending"}, got
        assert await rows(pg_url, "SELECT count(*) FROM fleet.offers WHERE order_id = ANY(%s)",
                          pending) == [(0,)]  # fmt: skip
        assert sorted(o for b in bots for o in b.offers) == [first]
        assert await health(mesh.dispatch.target) == SERVING  # Dispatch needs no Redis

        own_redis.start()  # empty: the drivers' next fixes fill the index again
        everything = [first, *pending]
        await settled(mesh, bots, everything)
        # Location's index was rebuilt from fixes alone; whatever it now says of the driver
        # carrying the first order, Dispatch offered them nothing more.
        assert sorted(o for b in bots for o in b.offers) == sorted(everything)
        assert sum(b.gps_degraded for b in bots) > 0  # the fixes did see Redis away
    # Location answered UNAVAILABLE meanwhile, not INTERNAL: nothing logged as a bug.
    assert unhandled(caplog.records) == []
