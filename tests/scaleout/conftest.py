"""Fixtures of the scale-out suite: a local Redis Cluster and a 3-node NATS JetStream cluster.

Each test gets clusters of its own (it kills their nodes), under its ``tmp_path``,
stopped afterwards whatever happened.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from foodmesh.infra.cluster import LocalNatsCluster, LocalRedisCluster


@pytest.fixture
async def redis_cluster(tmp_path: Path) -> AsyncIterator[LocalRedisCluster]:
    """3 primaries, each with a replica; a dead primary is failed over after 1 s."""
    cluster = LocalRedisCluster(tmp_path, primaries=3, replicas=1, node_timeout_ms=1000)
    try:
        await cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
async def nats_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalNatsCluster]:
    """3 routed nats-server nodes; every stream and bucket made meanwhile keeps 3 copies."""
    monkeypatch.setenv("FOODMESH_NATS_REPLICAS", "3")
    cluster = LocalNatsCluster(tmp_path, size=3)
    try:
        await cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(autouse=True)
async def stuck_tasks_report() -> AsyncIterator[None]:
    """If the test is still running after 240 s, prints where every task waits (then
    pytest-timeout ends it at 300 s): an asyncio hang shows up in the report, not as a
    bare event-loop poll."""

    async def watchdog() -> None:
        await asyncio.sleep(240)
        print("\n--- scale-out test stuck after 240 s; tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(limit=8, file=sys.stderr)

    dog = asyncio.create_task(watchdog())
    try:
        yield
    finally:
        dog.cancel()
