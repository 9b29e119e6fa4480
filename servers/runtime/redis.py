"""Redis access and cluster-safe key naming.

Keys of one region share a hash tag (``{9q8y}``), so a Redis Cluster keeps a
region's keys on one shard and multi-key commands (pipelines, GEOSEARCH +
HMGET, Lua) still work unchanged.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from servers.runtime.errors import DependencyUnavailable

__all__ = ["Keys", "check_redis", "open_redis", "redis_client"]

#: Connections one client opens at most; a burst beyond waits for a free one.
MAX_CONNECTIONS = 100
#: How long a command waits for a free connection before failing (ConnectionError).
POOL_TIMEOUT_S = 5.0


class Keys:
    """Builds namespaced, region-tagged key names: ``<ns>:<kind>:{<region>}:<parts>``."""

    __slots__ = ("prefix",)

    def __init__(self, namespace: str = "") -> None:
        self.prefix = f"{namespace}:" if namespace else ""

    def key(self, kind: str, *parts: str) -> str:
        """A key that belongs to no region (global config, caches keyed by id)."""
        return ":".join((f"{self.prefix}{kind}", *parts))

    def region(self, kind: str, region: str, *parts: str) -> str:
        """A key of one region; ``region`` (a geohash prefix) becomes the hash tag."""
        if not region or any(c in region for c in "{}:"):
            raise ValueError(f"bad region {region!r}")
        return ":".join((f"{self.prefix}{kind}", f"{{{region}}}", *parts))

    def pattern(self) -> str:
        """The SCAN pattern that matches every key of this namespace."""
        return f"{self.prefix}*" if self.prefix else "*"


def redis_client(
    url: str,
    *,
    name: str,
    connect_timeout: float = 2.0,
    max_connections: int = MAX_CONNECTIONS,
    pool_timeout_s: float = POOL_TIMEOUT_S,
) -> aioredis.Redis:
    """A client (not connected yet) whose pool makes a burst wait rather than fail.

    redis-py's default pool raises ``MaxConnectionsError`` on the 101st concurrent
    command; a ``BlockingConnectionPool`` queues it until a connection is free, for
    at most ``pool_timeout_s`` (then ``ConnectionError``: the caller's deadline and
    retry take over). The client owns its pool: ``aclose()`` closes both.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=connect_timeout,
        socket_connect_timeout=connect_timeout,
        client_name=f"foodmesh-{name}",
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


async def open_redis(
    url: str,
    *,
    name: str,
    connect_timeout: float = 2.0,
    max_connections: int = MAX_CONNECTIONS,
    pool_timeout_s: float = POOL_TIMEOUT_S,
) -> aioredis.Redis:
    """A connected client; raises :class:`DependencyUnavailable` if the server does not answer.

    Bursts of more than ``max_connections`` concurrent commands wait for a free
    connection (up to ``pool_timeout_s``) instead of failing: see :func:`redis_client`.
    """
    if not url:
        raise DependencyUnavailable(
            "FOODMESH_REDIS_URL is not set: start the servers with `foodmesh infra up` "
            "or point FOODMESH_REDIS_URL at a Redis server"
        )
    client = redis_client(
        url,
        name=name,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
        pool_timeout_s=pool_timeout_s,
    )
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise DependencyUnavailable(
            f"Redis at {url.split('@')[-1]} did not answer within {connect_timeout:g}s ({exc}); "
            "is it running? (`foodmesh infra status`)"
        ) from None
    return client


async def check_redis(client: aioredis.Redis) -> None:
    """Raises unless Redis answers PING."""
    await client.ping()
