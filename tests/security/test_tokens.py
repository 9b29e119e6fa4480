"""Issue 17, low items on tokens: exp, sub, caches past expiry, JWKS issuer, /readyz fan-out."""

from __future__ import annotations

import asyncio
import time

import pytest

from foodmesh.core.auth import DEV_SECRET, InvalidToken, TokenVerifier, mint_token, verify_token
from foodmesh.core.errors import Unauthenticated
from servers.runtime.auth import Authorizer, access_rules
from tests.integration._gateway import Http, gateway
from tests.integration._order import order_mesh
from tests.security._identity import hs256

_BAD_EXP = [
    pytest.param('{"sub":"cus_1","role":"customer","exp":Infinity}', id="infinity"),
    pytest.param('{"sub":"cus_1","role":"customer","exp":NaN}', id="nan"),
    pytest.param('{"sub":"cus_1","role":"customer","exp":1e300}', id="absurd"),
    pytest.param('{"sub":"cus_1","role":"customer","exp":true}', id="bool"),
]
_BAD_SUB = ["cus.1", "cus_*", "cus_>", "cus 1", "cus\t1", "x" * 200, ""]


@pytest.mark.parametrize("raw", _BAD_EXP)
def test_a_non_finite_or_absurd_expiry_is_refused(raw: str) -> None:
    with pytest.raises(InvalidToken, match="exp|JSON"):
        verify_token(DEV_SECRET, hs256({}, raw=raw))


@pytest.mark.parametrize("sub", _BAD_SUB)
def test_a_subject_unfit_for_nats_subjects_is_refused_at_verification(sub: str) -> None:
    token = hs256({"sub": sub, "role": "driver", "exp": time.time() + 600})
    with pytest.raises(InvalidToken, match="sub"):
        TokenVerifier(DEV_SECRET).verify(token)


async def test_the_gateway_refuses_bad_exp_and_bad_sub_live(order_http: Http) -> None:
    http = order_http
    tokens = [
        hs256({}, raw='{"sub":"cus_1","role":"customer","exp":Infinity}'),
        hs256({"sub": "cus.>", "role": "customer", "exp": time.time() + 600}),
    ]
    for token in tokens:
        async with http.session.get(
            "/api/v1/orders/ord_nope", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 401, await r.text()


def test_the_services_cache_never_outlives_a_token() -> None:
    authz = Authorizer(DEV_SECRET, access_rules(["foodmesh.v1.OrderService"]),
                       verifier=TokenVerifier(DEV_SECRET, leeway_s=0))  # fmt: skip
    token = mint_token(DEV_SECRET, subject="cus_1", role="customer", ttl_s=3)
    md = {"authorization": f"Bearer {token}"}
    assert authz.authorize("/foodmesh.v1.OrderService/GetOrder", md) is not None
    time.sleep(4.1)  # past exp (whole seconds), well inside the old 60 s cache
    with pytest.raises(Unauthenticated, match="expired"):
        authz.authorize("/foodmesh.v1.OrderService/GetOrder", md)


async def test_the_gateway_cache_never_outlives_a_token(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with (
        order_mesh(
            pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace
        ) as mesh,  # fmt: skip
        gateway(
            {"order": mesh.order.target}, verifier=TokenVerifier(DEV_SECRET, leeway_s=0)
        ) as http,  # fmt: skip
    ):
        token = mint_token(DEV_SECRET, subject="cus_1", role="customer", ttl_s=3)
        headers = {"Authorization": f"Bearer {token}"}
        async with http.session.get("/api/v1/orders/ord_nope", headers=headers) as r:
            assert r.status == 404, await r.text()  # through: the order does not exist
        await asyncio.sleep(4.1)  # past exp, well inside the old 30 s cache
        async with http.session.get("/api/v1/orders/ord_nope", headers=headers) as r:
            assert r.status == 401, await r.text()
            assert "expired" in await r.text()


async def test_readyz_fans_out_at_most_once_per_second(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with (
        order_mesh(
            pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace
        ) as mesh,  # fmt: skip
        gateway(
            {"order": mesh.order.target, "catalog": mesh.catalog.target}, readyz_cache_s=60.0
        ) as http,  # fmt: skip
    ):

        async def ready() -> int:
            async with http.session.get("/readyz") as r:
                return r.status

        statuses = await asyncio.gather(*(ready() for _ in range(20)))
        statuses += [await ready() for _ in range(5)]
        assert set(statuses) <= {200, 503}
        assert http.gateway.readyz_fanouts == 1


def test_an_expiry_too_large_for_a_float_is_refused_not_a_crash() -> None:
    token = hs256({}, raw='{"sub":"cus_1","role":"customer","exp":1' + "0" * 400 + "}")
    with pytest.raises(InvalidToken, match="exp"):
        verify_token(DEV_SECRET, token)


def test_a_token_not_valid_yet_is_refused() -> None:
    now = time.time()
    token = hs256({"sub": "cus_1", "role": "customer", "exp": now + 600, "nbf": now + 300})
    with pytest.raises(InvalidToken, match="nbf"):
        verify_token(DEV_SECRET, token)
    ok = hs256({"sub": "cus_1", "role": "customer", "exp": now + 600, "nbf": now - 5})
    assert verify_token(DEV_SECRET, ok).subject == "cus_1"
