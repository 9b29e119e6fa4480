"""NATS access: core subjects, JetStream streams and KV buckets, all namespaced."""

from __future__ import annotations

import os

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from foodmesh.core.errors import ConfigError, DependencyUnavailable

__all__ = [
    "Subjects",
    "check_nats",
    "ensure_kv",
    "ensure_stream",
    "open_nats",
    "replicas",
    "server_urls",
]


class Subjects:
    """Namespaced subject and stream names: ``<ns>.orders.v1.placed`` / ``<NS>_ORDERS``."""

    __slots__ = ("namespace",)

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace

    def subject(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    def stream(self, name: str) -> str:
        return f"{self.namespace}_{name}".upper().replace("-", "_") if self.namespace else name

    def bucket(self, name: str) -> str:
        return f"{self.namespace}_{name}".replace("-", "_") if self.namespace else name


def server_urls(url: str) -> list[str]:
    """The servers ``FOODMESH_NATS_URL`` names: one, or a cluster's, comma-separated.

    The client also learns the cluster's other members from the server it reaches.
    """
    return [u.strip() for u in url.split(",") if u.strip()]


async def open_nats(url: str, *, name: str, connect_timeout: float = 2.0) -> NATS:
    """A connected client that reconnects forever; raises if the first connect fails.

    ``url`` may name several servers of one cluster (``nats://a:4222,nats://b:4222``):
    the client connects to one and moves to another when it goes away.
    """
    if not url:
        raise DependencyUnavailable(
            "FOODMESH_NATS_URL is not set: start the servers with `foodmesh infra up` "
            "or point FOODMESH_NATS_URL at a NATS server"
        )

    async def _quiet(_exc: Exception) -> None:
        # Reconnects are reported through health checks, not a log line per attempt.
        return None

    try:
        return await nats.connect(
            server_urls(url),
            name=f"foodmesh-{name}",
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=_quiet,
        )
    except Exception as exc:
        raise DependencyUnavailable(
            f"NATS at {url.split('@')[-1]} did not answer within {connect_timeout:g}s ({exc!r}); "
            "is it running? (`foodmesh infra status`)"
        ) from None


async def check_nats(nc: NATS) -> None:
    """Raises unless NATS answers a round trip (flush = PING/PONG)."""
    if not nc.is_connected:
        raise ConnectionError("not connected to NATS")
    await nc.flush(timeout=1)


def replicas() -> int:
    """Copies of each stream and bucket: ``FOODMESH_NATS_REPLICAS`` (1; 3 on a NATS cluster)."""
    raw = os.environ.get("FOODMESH_NATS_REPLICAS", "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 5:
        raise ConfigError(f"FOODMESH_NATS_REPLICAS={raw!r} is not valid: expected 1 to 5")
    return n


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Creates the stream, or updates it to ``config`` if it exists (safe from many replicas).

    A config that does not say how many copies gets ``replicas()``.
    """
    if config.num_replicas is None:
        config.num_replicas = replicas()
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def ensure_kv(
    js: JetStreamContext, bucket: str, *, ttl_s: float | None = None, history: int = 1
) -> KeyValue:
    """The KV bucket, created on first use (leases, small shared state; safe from many replicas).

    ``ttl_s`` expires keys that are not written again: a lease whose holder died
    lapses on its own.
    """
    try:
        return await js.key_value(bucket)
    except Exception:  # nats-py raises BucketNotFoundError or NotFoundError by version
        pass
    config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s, replicas=replicas())
    try:
        return await js.create_key_value(config)
    except BadRequestError:  # another replica created it first
        return await js.key_value(bucket)
