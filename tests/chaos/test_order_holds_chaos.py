"""Card holds never linger: the Order process killed (SIGKILL) after the card hold and
before the commit, and nobody retries. A later sweep (any Order process) voids the hold
once the dead placement's claim has lapsed, once however often it sweeps; a late retry
of the same request is refused rather than placed on the voided hold.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from servers.runtime.serve import RunningService
from tests.chaos.test_order_chaos import OrderProcess, customer, eventually, rows
from tests.integration._order import place_request, reason, seeded_catalog


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
            # Seconds instead of minutes: the claim lapses ~6 s after the request, then 1 s.
            "FOODMESH_ORDER_HOLD_GRACE_S": "1", "FOODMESH_ORDER_SWEEP_EVERY_S": "0.1",
        },
        tmp_path / "order.log",
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.stop()
        print(proc.log.read_text()[-5000:] if proc.log.exists() else "(no log)")  # on failure


async def test_a_hold_left_by_a_placement_killed_before_its_commit_is_voided_once(
    order_process: OrderProcess, pg_url: str
) -> None:
    await order_process.start(crash_at="authorized")
    async with customer(order_process.target) as me:
        with pytest.raises(grpc.aio.AioRpcError):
            await me.place_order(place_request("abandoned"), deadline_s=1.0)
    assert await order_process.died() == -signal.SIGKILL
    (held,) = await rows(pg_url, "SELECT payment_id, status FROM orders.sandbox_payments")
    assert held[1] == "authorized"
    assert await rows(pg_url, "SELECT count(*) FROM orders.orders") == [(0,)]

    # The next process (a restart, or any replica) sweeps it once the claim has lapsed.
    await order_process.start()

    async def voided() -> bool:
        got = await rows(pg_url, "SELECT status FROM orders.sandbox_payments")
        return got == [("voided",)]

    await eventually(voided, within=30)
    assert await rows(pg_url, "SELECT count(*) FROM orders.idempotency_keys") == [(0,)]
    # Sweeping on changes nothing: one void, ever.
    await asyncio.sleep(2.5)
    assert order_process.alive()
    ops = await rows(pg_url, "SELECT op_key, op FROM orders.sandbox_operations")
    assert ops == [(f"void-orphan:{held[0]}", "refund")]

    async with customer(order_process.target) as me:
        # The customer's late retry does not place an order on the released hold ...
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await me.place_order(place_request("abandoned"), deadline_s=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(err.value) == "PAYMENT_AUTHORIZATION_VOIDED"
        assert await rows(pg_url, "SELECT count(*) FROM orders.orders") == [(0,)]
        # ... and a new attempt (a new key) is placed as usual, on a hold of its own.
        placed = (await me.place_order(place_request("again"), deadline_s=5)).order
    assert await rows(
        pg_url, "SELECT status FROM orders.sandbox_payments WHERE reference = "
        f"'{placed.order_id}'"
    ) == [("authorized",)]  # fmt: skip
