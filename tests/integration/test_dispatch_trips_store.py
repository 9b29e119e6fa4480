"""Trips in PostgreSQL: racing replicas never assign an order twice nor give a driver more than K.

Two replicas are two stores on two connection pools, as two Dispatch processes
would be; they race to fill the same few drivers with the same orders, through
offers (stacked ones join a driver's trip) and through whole trips at once.
"""

from __future__ import annotations

import asyncio
import random
import time

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.nats import Subjects
from servers import dispatch
from servers.dispatch.convert import event_builder
from servers.dispatch.matching import Proposal
from servers.dispatch.offers import Action, OfferRules
from servers.dispatch.store import Fleet, NewOrder
from servers.runtime.migrate import load_migrations, migrate

pytestmark = pytest.mark.timeout(120)
K = 2
DRIVERS = ("d1", "d2", "d3")


def proposal(order_id: str, driver_id: str) -> Proposal:
    return Proposal(order_id, driver_id, 0.9, 60.0, 0.3, 300.0, 1.5, 0.0, 0.0)


async def held(pg_url: str) -> dict[str, list[str]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT driver_id, array_agg(order_id ORDER BY order_id) FROM fleet.assignments"
            " WHERE status IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer')"
            " GROUP BY driver_id"
        )
        return {str(d): list(o) for d, o in await cur.fetchall()}


async def test_racing_replicas_never_double_assign_nor_exceed_k(
    pg_url: str, namespace: str
) -> None:
    assert dispatch.SPEC.migrations is not None
    await migrate(pg_url, service="dispatch", migrations=load_migrations(dispatch.SPEC.migrations))
    announce = event_builder(Subjects(namespace))
    pools = [AsyncConnectionPool(pg_url, min_size=2, max_size=8, open=False) for _ in range(2)]
    for p in pools:
        await p.open()
    try:
        a, b = (Fleet.on(p, announce) for p in pools)
        await a.assignments.set_max_orders(K)
        now = time.time()
        for d in DRIVERS:
            await a.sessions.open(d, f"s-{d}", now=now)
        orders = [f"o{i}" for i in range(12)]
        for oid in orders:
            await a.assignments.add_order(
                NewOrder(oid, "dr5r", 40.75, -73.98, "r", 40.76, -73.97, "c", now + 600),
                now=now,
            )
        rules = OfferRules()

        async def offer_and_accept(fleet: Fleet, seed: int) -> int:
            """Each replica offers every order to every driver, stacking when on a trip."""
            rng = random.Random(seed)
            got = 0
            pairs = [(o, d) for o in orders for d in DRIVERS]
            rng.shuffle(pairs)
            for oid, did in pairs:
                d, _, _ = await fleet.sessions.state(did)
                stack = d is not None and d.status == "on_delivery"
                made = await fleet.offers.make(
                    proposal(oid, did), offer_id=f"of-{seed}-{oid}-{did}", now=time.time(),
                    rules=rules, stack=stack,
                )  # fmt: skip
                if made is None:
                    continue
                try:
                    await fleet.offers.accept(made[1].offer_id, did, now=time.time())
                    got += 1
                except psycopg.errors.CheckViolation:
                    # Over K: the acceptance rolled back whole; the offer is withdrawn.
                    await fleet.offers.reject(
                        made[1].offer_id, did, "full", now=time.time(), rules=rules,
                        wide=10.0, escalated_radius=15.0,
                    )  # fmt: skip
            return got

        accepted = await asyncio.gather(offer_and_accept(a, 1), offer_and_accept(b, 2))
        load = await held(pg_url)
        assert sum(accepted) == sum(len(v) for v in load.values())
        assert all(len(v) <= K for v in load.values()), load
        assert sorted(load) == sorted(DRIVERS) and all(len(v) == K for v in load.values())
        taken = [o for v in load.values() for o in v]
        assert len(taken) == len(set(taken))  # no order carried by two drivers
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute(
                "SELECT order_id FROM fleet.offers WHERE status = 'accepted'"
                " GROUP BY order_id HAVING count(*) > 1"
            )
            assert await cur.fetchall() == []

        # Whole trips at once: the replicas race to give one new driver several trips.
        for did, oids in load.items():
            for oid in oids:
                for act in (Action.PICKED_UP, Action.DELIVERED):
                    await a.assignments.progress(oid, did, act, now=time.time())
        d1, _, _ = await a.sessions.state("d1")
        assert d1 is not None and d1.status == "available"  # free once the last is delivered
        left = [o for o in orders if o not in taken]
        await a.sessions.open("d4", "s-d4", now=time.time())
        trips = [left[0:2], left[2:4], left[4:6], left[0:1] + left[5:6]]
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).offers.take_trip(t, "d4", trip_id=f"t{i}", now=time.time())
                for i, t in enumerate(trips)
            )
        )
        won = [r for r in results if r]
        assert len(won) == 1 and len(won[0]) == 2  # one trip of K; the rest failed whole
        load = await held(pg_url)
        assert sorted(load["d4"]) == sorted(won[0])
        # And straight at the table, as a confused replica might: K holds all the same.
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(
                    "UPDATE fleet.assignments SET status = 'assigned', driver_id = 'd4'"
                    " WHERE order_id = %s",
                    (next(o for o in left if o not in won[0]),),
                )
    finally:
        for p in pools:
            await p.close()
