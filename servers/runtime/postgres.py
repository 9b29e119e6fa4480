"""PostgreSQL access: one async connection pool per process (psycopg 3)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.errors import DependencyUnavailable

__all__ = ["check_postgres", "describe_url", "open_pool"]

_log = logging.getLogger("foodmesh.postgres")


def describe_url(url: str) -> str:
    """``host:port/db`` of a URL, never its password, for error messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


async def open_pool(
    url: str,
    *,
    name: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 5.0,
    wait: bool = True,
) -> AsyncConnectionPool:
    """An open pool; with ``wait``, raises :class:`DependencyUnavailable` if nobody answers."""
    if not url:
        raise DependencyUnavailable(
            "FOODMESH_POSTGRES_URL is not set: start the servers with `foodmesh infra up` "
            "or point FOODMESH_POSTGRES_URL at a PostgreSQL server"
        )
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=connect_timeout,
        open=False,
        kwargs={
            "application_name": f"foodmesh-{name}",
            "connect_timeout": max(1, int(connect_timeout)),
        },
    )
    try:
        await pool.open(wait=wait, timeout=connect_timeout)
    except Exception as exc:
        await pool.close()
        raise DependencyUnavailable(
            f"PostgreSQL at {describe_url(url)} did not answer in {connect_timeout:g}s ({exc}); "
            "is it running? (`foodmesh infra status`)"
        ) from None
    return pool


async def check_postgres(pool: AsyncConnectionPool) -> None:
    """Raises unless the database answers a trivial query."""
    async with pool.connection(timeout=0.5) as conn:
        cur = await conn.execute("SELECT 1")
        row = await cur.fetchone()
        if row is None or row[0] != 1:
            raise psycopg.OperationalError("SELECT 1 returned no row")
