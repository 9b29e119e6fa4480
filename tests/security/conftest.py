"""Fixtures the security tests share: a live Order mesh (Catalog and Order), a seeded
Catalog, and the real gateway in front of the Order mesh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from servers.runtime.serve import RunningService
from tests.integration._gateway import Http, gateway
from tests.integration._order import Mesh, order_mesh, seeded_catalog


@pytest.fixture
async def mesh(pg_url: str, redis_url: str, nats_url: str, namespace: str) -> AsyncIterator[Mesh]:
    """Real Catalog and Order services on this test's database and namespace."""
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace) as m:  # fmt: skip
        yield m


@pytest.fixture
async def catalog(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> AsyncIterator[RunningService]:
    """A real Catalog service with the test city's restaurants."""
    async with seeded_catalog(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                              namespace=namespace) as cat:  # fmt: skip
        yield cat


@pytest.fixture
async def order_http(mesh: Mesh) -> AsyncIterator[Http]:
    """The real gateway in front of the Order mesh."""
    async with gateway({"order": mesh.order.target}) as h:
        yield h
