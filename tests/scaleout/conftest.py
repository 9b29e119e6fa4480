"""Fixtures of the scale-out suite: a local Redis Cluster and a 3-node NATS JetStream cluster.

Each test gets clusters of its own (it kills their nodes), under the test run's state
directory: stopped and removed afterwards, and if the run is killed, by the next run
(or ``foodmesh infra down``), as the single servers are.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from foodmesh.infra import RunningInfra
from foodmesh.infra.cluster import LocalNatsCluster, LocalRedisCluster

C = TypeVar("C", LocalRedisCluster, LocalNatsCluster)


async def _up(cluster: C) -> AsyncIterator[C]:
    """``cluster`` up for the test, then stopped and its files removed."""
    try:
        await cluster.up()
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
async def redis_cluster(infra: RunningInfra) -> AsyncIterator[LocalRedisCluster]:
    """3 primaries, each with a replica; a dead primary is failed over after 1 s."""
    cluster = LocalRedisCluster(infra.state_dir, primaries=3, replicas=1, node_timeout_ms=1000)
    async for running in _up(cluster):
        yield running


@pytest.fixture
async def nats_cluster(
    infra: RunningInfra, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalNatsCluster]:
    """3 routed nats-server nodes; every stream and bucket made meanwhile keeps 3 copies."""
    monkeypatch.setenv("FOODMESH_NATS_REPLICAS", "3")
    async for running in _up(LocalNatsCluster(infra.state_dir, size=3)):
        yield running


@pytest.fixture(autouse=True)
async def stuck_tasks_report() -> AsyncIterator[None]:
    """If the test still runs after 90 s (it takes ~30), prints where every task waits,
    to the real stderr (past pytest's capture): a slow or hung await shows up by name."""

    async def watchdog() -> None:
        await asyncio.sleep(90)
        print("\n--- scale-out test still running after 90 s; tasks:", file=sys.__stderr__)
        for task in asyncio.all_tasks():
            task.print_stack(limit=8, file=sys.__stderr__)

    dog = asyncio.create_task(watchdog())
    try:
        yield
    finally:
        dog.cancel()
