"""Naming a Redis Cluster or a NATS cluster in the settings, and what the clients make of it."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from foodmesh.core.errors import ConfigError
from foodmesh.core.nats import server_urls
from foodmesh.core.redis import is_cluster_url, redis_client
from servers.runtime.config import Settings


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis+cluster://127.0.0.1:7000", True),
        ("rediss+cluster://a:7000,b:7001", True),
        ("redis://127.0.0.1:6379/0", False),
        ("unix:///tmp/redis.sock", False),
        ("", False),
    ],
)
def test_a_cluster_is_named_by_its_scheme(url: str, cluster: bool) -> None:
    assert is_cluster_url(url) is cluster


async def test_a_cluster_url_gives_a_cluster_client_that_knows_every_node_named() -> None:
    client = redis_client("redis+cluster://:s%40cret@10.0.0.1:7000, 10.0.0.2:7001/", name="t")
    try:
        assert isinstance(client, RedisCluster)
        nodes = client.nodes_manager.startup_nodes
        assert sorted(nodes) == ["10.0.0.1:7000", "10.0.0.2:7001"]
        assert client.connection_kwargs["password"] == "s@cret"
        assert client.connection_kwargs["client_name"] == "foodmesh-t"
    finally:
        await client.aclose()


def test_a_cluster_url_with_a_node_without_port_names_that_node() -> None:
    with pytest.raises(ValueError, match="'10.0.0.2'"):
        redis_client("redis+cluster://10.0.0.1:7000,10.0.0.2", name="t")


def test_settings_take_a_redis_cluster_and_every_node_of_a_nats_cluster() -> None:
    s = Settings.from_env(
        "location",
        {
            "FOODMESH_REDIS_URL": "redis+cluster://r1:6379,r2:6379",
            "FOODMESH_NATS_URL": "nats://n1:4222, nats://n2:4222,nats://n3:4222",
            "FOODMESH_DEV": "1",
        },
    )
    assert is_cluster_url(s.redis_url)
    assert server_urls(s.nats_url) == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FOODMESH_NATS_URL", "nats://n1:4222,redis://n2:6379"),
        ("FOODMESH_REDIS_URL", "cluster://r1:6379"),
    ],
)
def test_a_bad_cluster_url_is_refused_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env("location", {var: value})
