"""Redis access, on one server or a Redis Cluster, and cluster-safe key naming.

Keys of one region share a hash tag (``{9q8y}``), so a Redis Cluster keeps a
region's keys on one shard and multi-key commands (pipelines, GEOSEARCH +
HMGET, Lua) still work unchanged.

``FOODMESH_REDIS_URL`` names one server (``redis://host:port/db``) or a cluster
(``redis+cluster://host1:port1,host2:port2``, any reachable nodes: the client
learns the rest). On a cluster every service talks through redis-py's
``RedisCluster``, which follows ``MOVED``/``ASK`` redirects and a failover: it
implements the same command API as ``Redis``, and our code keeps to the part of
that API that a cluster allows (scripts and ``MULTI`` on one hash tag only;
pipelines without transactions; ``SCAN`` over every primary).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from foodmesh.core.errors import DependencyUnavailable

__all__ = [
    "Keys",
    "check_redis",
    "execute_with_scripts",
    "is_cluster_url",
    "open_redis",
    "redis_client",
]

#: URL schemes that name a Redis Cluster (TLS with ``rediss+cluster``).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

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


def is_cluster_url(url: str) -> bool:
    """True when ``url`` names a Redis Cluster (``redis+cluster://h1:p1,h2:p2``)."""
    return url.partition("://")[0] in CLUSTER_SCHEMES


def _cluster_client(
    url: str, *, name: str, connect_timeout: float, max_connections: int
) -> aioredis.Redis:
    scheme, _, rest = url.partition("://")
    creds, _, hosts = rest.rpartition("@")
    user, _, password = creds.partition(":") if creds else ("", "", "")
    nodes: list[ClusterNode] = []
    for part in hosts.split("/", 1)[0].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad node {part!r} in Redis Cluster URL: expected host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    cluster = RedisCluster(
        startup_nodes=nodes,
        username=unquote(user) or None,
        password=unquote(password) or None,
        ssl=scheme.startswith("rediss"),
        # Slots whose primary is down (until its replica takes over) fail alone;
        # the rest of the cluster keeps answering.
        require_full_coverage=False,
        max_connections=max_connections,
        socket_timeout=connect_timeout,
        socket_connect_timeout=connect_timeout,
        client_name=f"foodmesh-{name}",
    )
    # The same command API as ``Redis`` (see the module doc): callers need not care.
    return cast(aioredis.Redis, cluster)


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

    A ``redis+cluster://`` URL gives a cluster client (a pool per node).
    """
    if is_cluster_url(url):
        return _cluster_client(
            url, name=name, connect_timeout=connect_timeout, max_connections=max_connections
        )
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


async def execute_with_scripts(
    client: aioredis.Redis,
    fill: Callable[[Pipeline], Awaitable[None]],
    scripts: Sequence[AsyncScript],
) -> list[Any]:
    """Runs a pipeline (no transaction) that calls ``scripts``; replies in place.

    On one server redis-py loads a pipeline's scripts before sending it; a cluster's
    pipeline does not, and a replica just promoted has none (scripts are not
    replicated). So when a reply is ``NOSCRIPT`` the scripts are loaded (on every
    primary) and the pipeline, which ``fill`` builds, sent once more: callers keep
    to scripts that are safe to run twice (compare-and-set, set-if-absent).
    """
    for attempt in (1, 2):
        async with client.pipeline(transaction=False) as pipe:
            await fill(pipe)
            replies = list(await pipe.execute(raise_on_error=False))
        if attempt == 2 or not any(isinstance(r, NoScriptError) for r in replies):
            break
        for script in scripts:
            script.sha = await client.script_load(script.script)
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies
