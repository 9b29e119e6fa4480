"""The client address behind proxies (X-Forwarded-For), and whose budget failures use up."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway import GatewayConfig
from gateway._config import ConfigError
from gateway._limits import bucket_key
from servers.runtime.serve import RunningService
from tests.integration._gateway import Http, auth, details, gateway

CUSTOMER = auth("customer", "cus_1")
PATH = "/api/v1/restaurants/rest_1"


async def statuses(http: Http, n: int, *, forwarded: list[str], **headers: str) -> list[int]:
    found = []
    for i in range(n):
        sent = {**headers, "X-Forwarded-For": forwarded[i % len(forwarded)]}
        async with http.session.get(PATH, headers=sent) as resp:
            found.append(resp.status)
    return found


async def test_rotating_the_client_chosen_first_entry_does_not_escape_the_ip_limit(
    catalog: RunningService, redis_url: str, namespace: str
) -> None:
    async with gateway({"catalog": catalog.target}, redis_url=redis_url,
                       rate_limit_namespace=namespace, ip_rate=0.5, ip_burst=3, token_rate=0,
                       trust_forwarded_for=True) as http:  # fmt: skip
        # The proxy (our peer) appends the address it saw last; the client made up the rest.
        forged = [f"198.51.100.{i}, 203.0.113.7" for i in range(1, 7)]
        got = await statuses(http, 6, forwarded=forged, **CUSTOMER)
    assert got[:3] == [200, 200, 200]
    assert set(got[3:]) == {429}


async def test_the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy(
    catalog: RunningService, redis_url: str, namespace: str
) -> None:
    async with gateway({"catalog": catalog.target}, redis_url=redis_url,
                       rate_limit_namespace=namespace, ip_rate=0.5, ip_burst=2, token_rate=0,
                       trusted_proxies=("127.0.0.0/8", "10.0.0.0/8")) as http:  # fmt: skip
        chain = ["6.6.6.6, 203.0.113.9, 10.1.2.3", "7.7.7.7, 203.0.113.9, 10.9.9.9"]
        got = await statuses(http, 3, forwarded=chain, **CUSTOMER)
        # Another client behind the same proxies has a bucket of its own.
        other = await statuses(http, 1, forwarded=["203.0.113.10, 10.1.2.3"], **CUSTOMER)
    assert (got, other) == ([200, 200, 429], [200])
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.exists(bucket_key("ip", "203.0.113.9", namespace))
        assert not await r.exists(bucket_key("ip", "6.6.6.6", namespace))
    finally:
        await r.aclose()


async def test_failed_unauthenticated_requests_do_not_use_up_the_shared_budget(
    catalog: RunningService, redis_url: str, namespace: str
) -> None:
    # No proxy trusted: every client behind the ingress shares the ingress's address.
    async with gateway({"catalog": catalog.target}, redis_url=redis_url,
                       rate_limit_namespace=namespace, ip_rate=0.5, ip_burst=5, token_rate=0,
                       fail_rate=0.5, fail_burst=3) as http:  # fmt: skip
        bad = await statuses(http, 6, forwarded=["-"], Authorization="Bearer not-a-token")
        async with http.session.get(PATH, headers=CUSTOMER) as resp:
            good = resp.status
        async with http.session.get(PATH) as resp:  # still refused: the failures' own bucket
            body = await resp.json()
            last_bad = resp.status
    assert bad[:3] == [401, 401, 401] and set(bad[3:]) == {429}
    assert good == 200
    assert last_bad == 429
    assert details(body, "ErrorInfo")[0]["metadata"]["scope"] == "fail"


def test_trusted_proxies_are_read_as_cidrs_and_a_bad_one_is_named() -> None:
    env = {"FOODMESH_DEV": "1", "FOODMESH_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7"}
    assert GatewayConfig.from_env(env).trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32")
    with pytest.raises(ConfigError, match="FOODMESH_GATEWAY_TRUSTED_PROXIES"):
        GatewayConfig.from_env({**env, "FOODMESH_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33"})
