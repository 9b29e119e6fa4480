"""Fixtures: real PostgreSQL, Redis and NATS for the whole session, isolated per test.

The servers come from the same code as ``foodmesh infra`` (or from
``FOODMESH_*_URL`` when set). Each test gets its own database, and a unique
namespace that prefixes its Redis keys, NATS subjects, streams and buckets, so
tests run in any order and never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from foodmesh.core.redis import redis_client as runtime_redis_client
from foodmesh.infra import RunningInfra, fresh_run_dir, start_infra

pytest_plugins = ["tests._hang_dump"]

REPO = Path(__file__).resolve().parent.parent
# Tests run in explicit development mode: the public dev secret signs their tokens.
os.environ.setdefault("FOODMESH_DEV", "1")


def state_root() -> Path:
    """Where test runs keep their servers: ``$FOODMESH_STATE_DIR`` or ``./.foodmesh``."""
    return Path(os.environ.get("FOODMESH_STATE_DIR") or REPO / ".foodmesh")


@pytest.fixture(scope="session")
async def infra() -> AsyncIterator[RunningInfra]:
    """Real servers for the session, started once (nothing starts when URLs are given)."""
    async with start_infra(fresh_run_dir(state_root()), durable=False, remove=True) as running:
        yield running


@pytest.fixture
def namespace() -> str:
    """A prefix of this test's own: Redis keys, NATS subjects, streams and KV buckets."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def pg_url(infra: RunningInfra, namespace: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    admin = infra.urls.postgres_url
    db = f"test_{namespace}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{db}"')
    url = admin.rsplit("/", 1)[0] + f"/{db}"
    try:
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def redis_url(infra: RunningInfra) -> str:
    return infra.urls.redis_url


@pytest.fixture
def nats_url(infra: RunningInfra) -> str:
    return infra.urls.nats_url


@pytest.fixture
async def redis_client(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    """A client for this test; the test's keys (``<namespace>:*``) are deleted afterwards."""
    client = runtime_redis_client(redis_url, name="tests")  # a cluster too, by its URL
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
