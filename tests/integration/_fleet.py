"""A fleet of simulated drivers that accept every offer, and what the stores say after.

Shared by the tests that break things (``tests/chaos``, ``tests/scaleout``) and then
check that nothing was lost or assigned twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import dispatch_pb2 as dpb
from foodmesh.v1 import order_pb2 as opb
from tests.integration._dispatch import REST, DispatchMesh, Driver, upsert
from tests.integration._location import DriverApp, fix

__all__ = [
    "ACTIVE",
    "SERVING",
    "Bot",
    "all_assigned",
    "assert_assigned_exactly_once",
    "assignments",
    "eventually",
    "fleet",
    "fleet_state",
    "health",
    "order_driver",
    "outboxes_drained",
    "rows",
    "settled",
    "unhandled",
]

ACTIVE = ("assigned", "at_restaurant", "picked_up", "at_customer")


# -- the drivers -----------------------------------------------------------------------


@dataclass
class Bot:
    """A driver who keeps sending fixes and accepts whatever is offered."""

    driver: Driver
    offers: list[str] = field(default_factory=list)  # order ids offered
    confirmed: list[str] = field(default_factory=list)  # order ids assigned
    confirmed_at: dict[str, float] = field(default_factory=dict)  # order id → monotonic time
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
                self.confirmed_at[msg.assignment_confirmed.order_id] = time.monotonic()
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
async def fleet(
    mesh: DispatchMesh,
    n: int,
    *,
    dispatch: Sequence[str] = (),
    location: Sequence[str] = (),
) -> AsyncIterator[list[Bot]]:
    """``n`` drivers online near the restaurant, each sending fixes and in a session.

    Driver ``i`` holds its session on ``dispatch[i % len]`` and streams to
    ``location[i % len]`` when replicas are given (else to the mesh's own).
    """
    async with contextlib.AsyncExitStack() as stack:
        bots: list[Bot] = []
        tasks: list[asyncio.Task[None]] = []
        for i in range(n):
            await upsert(mesh, f"drv{i}")
            d = Driver(mesh, f"drv{i}", target=dispatch[i % len(dispatch)] if dispatch else None)
            if location:
                d.gps = DriverApp(location[i % len(location)], d.driver_id)
            await stack.enter_async_context(d)
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
            await stop_tasks(tasks)


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
                             " GROUP BY driver_id HAVING count(*) > 1", list(ACTIVE))  # fmt: skip
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


async def outboxes_drained(pg_url: str) -> bool:
    """Both outboxes published: Order's events and Dispatch's own reached JetStream."""
    left = await rows(pg_url, "SELECT (SELECT count(*) FROM orders.outbox WHERE"
                              " published_at IS NULL) + (SELECT count(*) FROM"
                              " fleet.outbox WHERE published_at IS NULL)")  # fmt: skip
    return left == [(0,)]


async def settled(
    mesh: DispatchMesh, bots: Sequence[Bot], order_ids: Sequence[str], *, within: float = 20
) -> None:
    """Every order assigned and the Order service told; then, after room for a late
    duplicate to show up, each assigned exactly once (``assert_assigned_exactly_once``)."""
    pg_url = mesh.orders.pg_url
    await eventually(lambda: all_assigned(pg_url, order_ids), within, "every order assigned",
                     lambda: fleet_state(pg_url))  # fmt: skip

    async def order_told() -> bool:
        return all([await order_driver(mesh, oid) != "" for oid in order_ids])

    await eventually(order_told, 10, "the Order service told every driver")
    await asyncio.sleep(1)
    await assert_assigned_exactly_once(mesh, bots, order_ids)


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


SERVING: int = health_pb2.HealthCheckResponse.SERVING
