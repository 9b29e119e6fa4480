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
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from tests.chaos._servers import OwnNats, OwnRedis
from tests.integration._dispatch import (
    REST,
    DispatchMesh,
    Driver,
    confirmed_order,
    dispatch_mesh,
    upsert,
)
from tests.integration._location import fix

pytestmark = pytest.mark.timeout(120)

_ACTIVE = ("assigned", "at_restaurant", "picked_up", "at_customer")
#: Dispatch with short beats: batches every 0.2 s, leases of 1.5 s (dispatch_settings),
#: offers lapsing in 5 s so a push lost in an outage costs little.
_DISPATCH = {"FOODMESH_DISPATCH_OFFER_EXPIRY_S": "5"}


# -- the drivers -----------------------------------------------------------------------


@dataclass
class Bot:
    """A driver who keeps sending fixes and accepts whatever is offered."""

    driver: Driver
    offers: list[str] = field(default_factory=list)  # order ids offered
    confirmed: list[str] = field(default_factory=list)  # order ids assigned
    refused: list[str] = field(default_factory=list)
    gps_errors: int = 0
    gps_degraded: int = 0
    ended: str = ""

    @property
    def driver_id(self) -> str:
        return self.driver.driver_id

    async def answer(self) -> None:
        try:
            await self._answer()
        except Exception as exc:  # the session ended or broke: the test says so
            self.ended = repr(exc)

    async def _answer(self) -> None:
        seq = 0
        while True:
            msg = await self.driver.recv(within=3600)
            kind = msg.WhichOneof("event")
            if kind == "offer":
                self.offers.append(msg.offer.order_id)
                seq += 1
                await self.driver.act(
                    seq, accept_offer=dpb.AcceptOffer(offer_id=msg.offer.offer_id)
                )
            elif kind == "assignment_confirmed":
                self.confirmed.append(msg.assignment_confirmed.order_id)
            elif kind == "action_rejected":
                self.refused.append(msg.action_rejected.message)

    async def gps(self, lat: float, lon: float, every_s: float = 0.5) -> None:
        """A fix every ``every_s``, as a phone does; an outage is counted, never fatal."""
        while True:
            try:
                self.driver.seq += 1
                ack = await self.driver.gps.send(fix(lat, lon, seq=self.driver.seq))
                self.gps_degraded += int(ack.degraded)
            except Exception:
                self.gps_errors += 1
            await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def fleet(mesh: DispatchMesh, n: int) -> AsyncIterator[list[Bot]]:
    """``n`` drivers online near the restaurant, each sending fixes and in a session."""
    async with contextlib.AsyncExitStack() as stack:
        bots: list[Bot] = []
        tasks: list[asyncio.Task[None]] = []
        for i in range(n):
            await upsert(mesh, f"drv{i}")
            d = await stack.enter_async_context(Driver(mesh, f"drv{i}"))
            where = (REST[0] + 0.002 * (i + 1), REST[1] + 0.001 * (i % 3))
            await d.at(*where)
            await d.open_session()
            bot = Bot(d)
            bots.append(bot)
            tasks.append(asyncio.create_task(bot.gps(*where), name=f"gps-{i}"))
            tasks.append(asyncio.create_task(bot.answer(), name=f"bot-{i}"))
        try:
            yield bots
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t


# -- what the stores say -----------------------------------------------------------


async def rows(pg_url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(query, args or None)
        return list(await cur.fetchall())


async def eventually(
    check: Callable[[], Awaitable[bool]],
    within: float,
    what: str,
    explain: Callable[[], Awaitable[object]] | None = None,
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() >= deadline:
            state = await explain() if explain is not None else ""
            raise AssertionError(f"not reached within {within:g}s: {what} {state}")
        await asyncio.sleep(0.1)


async def fleet_state(pg_url: str) -> str:
    """What Dispatch's tables and Order's outbox hold, for a failure's message."""
    a = await rows(pg_url, "SELECT order_id, status, driver_id, offers_made"
                           " FROM fleet.assignments ORDER BY created_at")  # fmt: skip
    o = await rows(pg_url, "SELECT order_id, driver_id, attempt, status, reason"
                           " FROM fleet.offers ORDER BY created_at")  # fmt: skip
    d = await rows(pg_url, "SELECT driver_id, status, session_id <> '' FROM fleet.drivers"
                           " ORDER BY driver_id")  # fmt: skip
    box = await rows(pg_url, "SELECT event_id, subject, published_at IS NOT NULL"
                             " FROM orders.outbox ORDER BY id")  # fmt: skip
    inbox = await rows(pg_url, "SELECT consumer, event_id FROM fleet.inbox")
    return f"\nassignments {a}\noffers {o}\ndrivers {d}\norders.outbox {box}\ninbox {inbox}"


async def assignments(pg_url: str, order_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """order id → (status, driver id) in Dispatch's fleet tables."""
    got = await rows(pg_url, "SELECT order_id, status, driver_id FROM fleet.assignments"
                             " WHERE order_id = ANY(%s)", list(order_ids))  # fmt: skip
    return {str(o): (str(s), str(d)) for o, s, d in got}


async def all_assigned(pg_url: str, order_ids: Sequence[str]) -> bool:
    got = await assignments(pg_url, order_ids)
    return len(got) == len(order_ids) and all(s == "assigned" for s, _ in got.values())


async def order_driver(mesh: DispatchMesh, oid: str) -> str:
    async with mesh.order_client("ops", "ops") as ops:
        return (await ops.get_order(opb.GetOrderRequest(order_id=oid))).order.driver_id


async def assert_assigned_exactly_once(
    mesh: DispatchMesh, bots: Sequence[Bot], order_ids: Sequence[str]
) -> None:
    """One driver per order and one order per driver, in every place that records it."""
    pg = mesh.orders.pg_url
    got = await assignments(pg, order_ids)
    drivers = [d for _, d in got.values()]
    assert sorted(got) == sorted(order_ids) and len(set(drivers)) == len(order_ids), got
    # fleet: exactly one accepted offer per order, no order or driver holding two.
    accepted = await rows(pg, "SELECT order_id, driver_id FROM fleet.offers"
                              " WHERE status = 'accepted'")  # fmt: skip
    assert sorted((str(o), str(d)) for o, d in accepted) == sorted(
        (o, d) for o, (_, d) in got.items()
    )
    doubled = await rows(pg, "SELECT driver_id FROM fleet.assignments WHERE status = ANY(%s)"
                             " GROUP BY driver_id HAVING count(*) > 1", list(_ACTIVE))  # fmt: skip
    assert doubled == []
    assert await rows(pg, "SELECT count(*) FROM fleet.assignments") == [(len(order_ids),)]
    # Each confirmation consumed once (a redelivery is deduplicated, not a second order).
    seen = await rows(pg, "SELECT event_id FROM fleet.inbox WHERE consumer = 'dispatch-orders'")
    assert sorted(str(e).rsplit(".", 1)[0] for (e,) in seen) == sorted(order_ids)
    # The drivers' side: each was confirmed the order the tables say, and only it.
    by_driver = {b.driver_id: b.confirmed for b in bots}
    for oid, (_, d) in got.items():
        assert by_driver[d] == [oid], (oid, d, by_driver)
    assert sum(len(c) for c in by_driver.values()) == len(order_ids), by_driver
    assert [b.refused for b in bots if b.refused] == []
    # Every driver's session and position stream lived through the outage.
    assert [(b.driver_id, b.ended, b.gps_errors) for b in bots if b.ended or b.gps_errors] == []
    # The Order service's view: the same driver, told once.
    for oid, (_, d) in got.items():
        assert await order_driver(mesh, oid) == d
    told = await rows(pg, "SELECT split_part(event_id, '.', 1), count(*) FROM orders.outbox"
                          " WHERE subject LIKE '%%.driver_assigned' GROUP BY 1")  # fmt: skip
    assert sorted(told) == sorted((oid, 1) for oid in order_ids), told


async def health(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        got = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(got.status)


def unhandled(records: Sequence[logging.LogRecord]) -> list[str]:
    """Errors logged as bugs: an RPC that raised unexpectedly, a task that died."""
    return [f"{r.name}: {r.getMessage()}" for r in records
            if r.levelno >= logging.ERROR
            and r.name.startswith(("foodmesh.errors", "foodmesh.dispatch", "asyncio"))]  # fmt: skip


_SERVING: int = health_pb2.HealthCheckResponse.SERVING


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
        assert await health(mesh.dispatch.target, "liveness") == _SERVING

        async def reports_nats_down() -> bool:
            return await health(mesh.dispatch.target) != _SERVING

        await eventually(reports_nats_down, 5, "Dispatch's health to say NATS is away")
        async with mesh.client() as ops:
            listed = await ops.list_assignments(dpb.ListAssignmentsRequest())
            assert set(before) <= {a.order_id for a in listed.assignments} <= set(before + raced)
        await asyncio.sleep(2)  # several batches, renewals and fetches fail meanwhile

        own_nats.start()  # same port, same JetStream store

        async def serving() -> bool:
            return await health(mesh.dispatch.target) == _SERVING

        await eventually(serving, 10, "Dispatch's health back to SERVING")
        everything = before + raced + during
        await eventually(
            lambda: all_assigned(pg_url, everything),
            20,
            "every order assigned",
            lambda: fleet_state(pg_url),
        )

        async def order_told() -> bool:
            return all([await order_driver(mesh, oid) != "" for oid in everything])

        await eventually(order_told, 10, "the Order service told every driver")
        await asyncio.sleep(1)  # room for a late duplicate to show up
        await assert_assigned_exactly_once(mesh, bots, everything)
        # Nobody was offered an order beyond the one they took.
        assert sorted(o for b in bots for o in b.offers) == sorted(everything)

        # Both outboxes drained: Order's events and Dispatch's own reached JetStream.
        async def drained() -> bool:
            left = await rows(pg_url, "SELECT (SELECT count(*) FROM orders.outbox WHERE"
                                      " published_at IS NULL) + (SELECT count(*) FROM"
                                      " fleet.outbox WHERE published_at IS NULL)")  # fmt: skip
            return left == [(0,)]

        await eventually(drained, 10, "both outboxes published")
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
        assert await health(mesh.dispatch.target) == _SERVING  # Dispatch needs no Redis

        own_redis.start()  # empty: the drivers' next fixes fill the index again
        everything = [first, *pending]
        await eventually(
            lambda: all_assigned(pg_url, everything),
            20,
            "every order assigned",
            lambda: fleet_state(pg_url),
        )

        async def order_told() -> bool:
            return all([await order_driver(mesh, oid) != "" for oid in everything])

        await eventually(order_told, 10, "the Order service told every driver")
        await asyncio.sleep(1)
        await assert_assigned_exactly_once(mesh, bots, everything)
        # Location's index was rebuilt from fixes alone; whatever it now says of the driver
        # carrying the first order, Dispatch offered them nothing more.
        assert sorted(o for b in bots for o in b.offers) == sorted(everything)
        assert sum(b.gps_degraded for b in bots) > 0  # the fixes did see Redis away
    # Location answered UNAVAILABLE meanwhile, not INTERNAL: nothing logged as a bug.
    assert unhandled(caplog.records) == []
