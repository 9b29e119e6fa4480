"""Order under failure: the process killed (SIGKILL) between the card hold and the commit,
and between the commit and the publish; a client that times out and retries.

The Order service runs as its own process (``python -m foodmesh serve order``, or
``python -m tests.chaos._order_crashing <point>`` to kill itself at one point of
PlaceOrder); the Catalog and the infrastructure keep running. Nothing may be lost,
nothing done twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import nats.js.errors
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg_pool import AsyncConnectionPool

from clients import ClientOptions, OrderClient
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.core.nats import Subjects
from foodmesh.v1 import order_pb2 as pb
from servers.order.payments import Authorization, RefundOutcome
from servers.order.sandbox import SandboxProvider
from servers.runtime.serve import RunningService
from tests.chaos._servers import free_port
from tests.integration._order import order_mesh, place_request, reason, seeded_catalog

ROOT = Path(__file__).resolve().parents[2]


class OrderProcess:
    """The Order service in a process of its own, to kill and start again on one port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "FOODMESH_ORDER_PORT": str(self.port)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, crash_at: str = "") -> None:
        argv = ["-m", "tests.chaos._order_crashing", crash_at] if crash_at else [
            "-m", "foodmesh", "serve", "order"]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - started, not waited for
                [sys.executable, *argv],
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        async with grpc.aio.insecure_channel(self.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    got = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if got.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the order process did not serve:\n" + self.log.read_text()[-3000:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def died(self, within: float = 10.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, "the process did not die"
            await asyncio.sleep(0.05)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
async def catalog(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> AsyncIterator[RunningService]:
    async with seeded_catalog(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                              namespace=namespace) as cat:  # fmt: skip
        yield cat


@pytest.fixture
def order_process(
    catalog: RunningService, pg_url: str, redis_url: str, nats_url: str, namespace: str,
    tmp_path: Path,
) -> Iterator[OrderProcess]:  # fmt: skip
    proc = OrderProcess(
        {
            "FOODMESH_POSTGRES_URL": pg_url, "FOODMESH_REDIS_URL": redis_url,
            "FOODMESH_NATS_URL": nats_url, "FOODMESH_NAMESPACE": namespace,
            "FOODMESH_METRICS": "0", "FOODMESH_HEALTH_CHECK_INTERVAL_S": "0.05",
            "FOODMESH_SHUTDOWN_GRACE_S": "1", "FOODMESH_LOG_LEVEL": "WARNING",
            "FOODMESH_ORDER_CATALOG_TARGET": catalog.target,
        },
        tmp_path / "order.log",
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is not None:
            print(f"the order process exited ({proc.proc.returncode}) on its own")
        proc.stop()
        print(proc.log.read_text()[-5000:] if proc.log.exists() else "(no log)")  # on failure


def customer(target: str) -> OrderClient:
    token = mint_token(DEV_SECRET, subject="cus_1", role="customer")
    return OrderClient(target, options=ClientOptions(metadata=bearer(token)))


async def rows(pg_url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(query)
        return list(await cur.fetchall())


async def events(nats_url: str, namespace: str) -> list[tuple[str, str]]:
    """Every (subject's last token, event id) on the namespace's ORDERS stream, in order."""
    s = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            sub = await js.pull_subscribe(s.subject("orders.v1.>"), durable=None,
                                          stream=s.stream("ORDERS"))  # fmt: skip
        except nats.js.errors.NotFoundError:
            return []  # the process died before its relay made the stream: nothing published
        out: list[tuple[str, str]] = []
        try:
            while True:
                for m in await sub.fetch(10, timeout=0.5):
                    out.append(
                        (m.subject.rsplit(".", 1)[-1], pb.OrderEvent.FromString(m.data).event_id)
                    )
        except (nats.errors.TimeoutError, TimeoutError):  # nats.py raises either
            pass
        return out
    finally:
        await nc.close()


async def eventually(check: object, within: float = 15.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_crash_between_the_commit_and_the_publish_loses_no_event(
    order_process: OrderProcess, pg_url: str, nats_url: str, namespace: str
) -> None:
    await order_process.start(crash_at="placed")
    async with customer(order_process.target) as me:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            # Ample time: what ends the call must be the crash, never the deadline.
            await me.place_order(place_request("crash-after-commit"), deadline_s=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await order_process.died() == -signal.SIGKILL
    # Committed, announced in the outbox, not published: the process died in between.
    (order_id,), *more = await rows(pg_url, "SELECT order_id FROM orders.orders")
    assert more == []
    assert await rows(pg_url, "SELECT event_id, published_at IS NULL FROM orders.outbox") == [
        (f"{order_id}.1", True)
    ]
    assert await events(nats_url, namespace) == []

    await order_process.start()

    async def published() -> bool:
        return await rows(pg_url, "SELECT count(*) FROM orders.outbox"
                                  " WHERE published_at IS NOT NULL") == [(1,)]  # fmt: skip

    await eventually(published)
    assert await events(nats_url, namespace) == [("placed", f"{order_id}.1")]
    # The client's retry finds the order the crash hid from it: no second order or charge.
    async with customer(order_process.target) as me:
        again = (await me.place_order(place_request("crash-after-commit"))).order
    assert again.order_id == order_id
    assert again.payment_status == pb.PAYMENT_STATUS_AUTHORIZED
    assert await rows(pg_url, "SELECT count(*), min(status) FROM orders.sandbox_payments") == [
        (1, "authorized")
    ]
    assert await events(nats_url, namespace) == [("placed", f"{order_id}.1")]


async def test_a_crash_after_the_card_hold_and_a_retry_make_one_order_and_one_charge(
    order_process: OrderProcess, pg_url: str, nats_url: str, namespace: str
) -> None:
    await order_process.start(crash_at="authorized")
    async with customer(order_process.target) as me:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("crash-after-hold"), deadline_s=1.0)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert await order_process.died() == -signal.SIGKILL
    held = await rows(pg_url, "SELECT payment_id, status FROM orders.sandbox_payments")
    assert [status for _, status in held] == ["authorized"]
    assert await rows(pg_url, "SELECT count(*) FROM orders.orders") == [(0,)]
    (claimed_id,) = (await rows(pg_url, "SELECT order_id FROM orders.idempotency_keys"))[0]

    await order_process.start()
    async with customer(order_process.target) as me:
        # The dead request's claim is held to its deadline and a margin; until then a
        # retry is told to come back (ABORTED), after it the retry finishes that attempt.
        # A retry that does not reach the server (UNAVAILABLE) is tried again, as any
        # client would: what matters is one order and one charge at the end.
        async with asyncio.timeout(60):
            while True:
                try:
                    placed = (await me.place_order(place_request("crash-after-hold"),
                                                   deadline_s=2.0)).order  # fmt: skip
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        assert order_process.alive(), order_process.log.read_text()[-3000:]
                        await asyncio.sleep(0.2)
                        continue
                    assert exc.code() == grpc.StatusCode.ABORTED, exc
                    assert reason(exc) == "IDEMPOTENCY_KEY_IN_USE"
        again = (await me.place_order(place_request("crash-after-hold"))).order
    assert placed.order_id == claimed_id == again.order_id
    # The order stands on the hold the dead attempt made; no second one was made.
    assert await rows(pg_url, "SELECT order_id, payment_id FROM orders.orders") == [
        (claimed_id, held[0][0])
    ]
    assert await rows(pg_url, "SELECT payment_id, status FROM orders.sandbox_payments") == held

    async def published() -> bool:
        return await events(nats_url, namespace) == [("placed", f"{claimed_id}.1")]

    await eventually(published)


class SlowSandbox:
    """The sandbox processor, answering authorizations only after ``delay_s``."""

    name = "sandbox"

    def __init__(self, pg_url: str, delay_s: float) -> None:
        self.pool = AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
        self.inner = SandboxProvider(self.pool)
        self.delay_s = delay_s
        self.calls = 0

    async def authorize(self, **kw: object) -> Authorization:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return await self.inner.authorize(**kw)  # type: ignore[arg-type]

    async def capture(self, *, key: str, payment_id: str, amount_minor: int) -> None:
        await self.inner.capture(key=key, payment_id=payment_id, amount_minor=amount_minor)

    async def refund(self, *, key: str, payment_id: str, amount_minor: int) -> RefundOutcome:
        return await self.inner.refund(key=key, payment_id=payment_id, amount_minor=amount_minor)


async def test_a_retry_after_a_client_timeout_gets_the_same_order_and_one_live_hold(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    slow = SlowSandbox(pg_url, delay_s=1.0)
    await slow.pool.open()
    try:
        async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                              namespace=namespace, payments=slow) as mesh:  # fmt: skip
            async with customer(mesh.order.target) as me:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await me.place_order(place_request("impatient"), deadline_s=0.4)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # Retried at once: the first attempt is still at the card; this one waits
                # for it and gets its order.
                first = (await me.place_order(place_request("impatient"), deadline_s=5)).order
                again = (await me.place_order(place_request("impatient"), deadline_s=5)).order
            assert first == again
            assert slow.calls == 1
            # The hold the order stands on is alive: the caller going away did not void it.
            assert await rows(pg_url, "SELECT o.order_id, p.status FROM orders.orders o JOIN"
                                      " orders.sandbox_payments p USING (payment_id)") == [
                (first.order_id, "authorized")
            ]  # fmt: skip
            assert await rows(pg_url, "SELECT count(*) FROM orders.sandbox_payments") == [(1,)]
    finally:
        await slow.pool.close()
