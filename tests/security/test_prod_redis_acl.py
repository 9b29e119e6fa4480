"""The prod Redis ACL: each service's user reaches its own keys and nobody else's.

A real valkey-server (the project's binary) runs as a one-node cluster from the files
the prod overlay ships (k8s/components/redis-acl: users.acl made into the ACL file by
acl-init.sh, as in the pod), and every client is made by the runtime's factory from a
``redis+cluster://user:password@host:port`` URL, as the services get it in k8s.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from foodmesh.core.redis import Keys, open_redis, redis_client
from gateway._limits import RateLimiter
from servers.eta.cache import OverrideStore
from servers.pricing.quotes import QuoteBook
from tests.security._prod import Valkey, valkey_with_prod_acl

pytestmark = pytest.mark.integration


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[Valkey]:
    async with valkey_with_prod_acl(tmp_path) as server:
        yield server


@pytest.fixture
async def pricing(valkey: Valkey) -> AsyncIterator[aioredis.Redis]:
    client = await open_redis(valkey.url("pricing", cluster=True), name="pricing")
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_cluster_url_carries_the_services_user_to_the_server(
    pricing: aioredis.Redis,
) -> None:
    assert (await pricing.acl_whoami()) in ("pricing", b"pricing")


async def test_a_services_user_writes_its_own_keys_through_its_own_code(
    pricing: aioredis.Redis, valkey: Valkey
) -> None:
    quotes = QuoteBook(pricing, Keys())
    await quotes.put("q_1", b"quote", ttl_ms=60_000)
    assert await quotes.get("q_1") == b"quote"
    eta = await open_redis(valkey.url("eta", cluster=True), name="eta")
    try:
        overrides = OverrideStore(lambda: eta, Keys())
        await overrides.put("v1", b"payload")
        assert await overrides.get() == ("v1", b"payload")
    finally:
        await eta.aclose()


async def test_one_services_user_cannot_write_or_read_another_services_keys(
    pricing: aioredis.Redis, valkey: Valkey
) -> None:
    catalog = await open_redis(valkey.url("catalog", cluster=True), name="catalog")
    try:
        await catalog.set("catalog:index:built", b"1")
        with pytest.raises(NoPermissionError):
            await pricing.set("catalog:index:built", b"0")
        with pytest.raises(NoPermissionError):
            await pricing.get("catalog:index:built")
        with pytest.raises(NoPermissionError):
            await pricing.delete("catalog:index:built")
        with pytest.raises(NoPermissionError):
            await catalog.set(QuoteBook(catalog, Keys()).key("q_1"), b"forged")
        assert await catalog.get("catalog:index:built") == b"1"
    finally:
        await catalog.aclose()


async def test_a_script_cannot_reach_keys_outside_the_users_patterns(
    pricing: aioredis.Redis,
) -> None:
    script = "return redis.call('SET', KEYS[1], 'x')"
    with pytest.raises(NoPermissionError):
        await pricing.eval(script, 1, "{t}catalog:x")
    with pytest.raises((NoPermissionError, ResponseError)):
        # Undeclared keys inside a script are checked too.
        await pricing.eval("return redis.call('SET', 'catalog:y', 'x')", 1, "quote:{t}")
    assert await pricing.eval(script, 1, "quote:{t}") in (b"OK", "OK")


async def test_service_users_cannot_run_admin_or_dangerous_commands(
    pricing: aioredis.Redis,
) -> None:
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST")):
        with pytest.raises(NoPermissionError):
            await pricing.execute_command(*command)


async def test_a_wrong_password_or_no_user_gets_nothing(valkey: Valkey) -> None:
    with pytest.raises(AuthenticationError):
        client = redis_client(
            valkey.url("pricing", password=secrets.token_hex(32)), name="intruder"
        )
        try:
            await client.ping()
        finally:
            await client.aclose()
    anonymous = aioredis.Redis(host="127.0.0.1", port=valkey.port)
    try:
        assert await anonymous.ping()  # probes may ping
        with pytest.raises(NoPermissionError):
            await anonymous.get("quote:q_1")
    finally:
        await anonymous.aclose()


async def test_the_gateways_rate_limits_work_under_its_user_and_do_not_fail_open(
    valkey: Valkey,
) -> None:
    # The limiter fails open when Redis refuses it: an ACL too narrow would turn limits off.
    limiter = RateLimiter(valkey.url("gateway", cluster=True), timeout_s=2.0)
    try:
        first = await limiter.take("ip", "203.0.113.9", rate=0.001, burst=1)
        second = await limiter.take("ip", "203.0.113.9", rate=0.001, burst=1)
        assert first.allowed and not second.allowed
        assert limiter.failures == 0
    finally:
        await limiter.close()
