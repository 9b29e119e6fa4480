"""Issue 17 item 9: service identity apart from user identity; the gateway refuses it."""

from __future__ import annotations

import time

import grpc
import pytest

from foodmesh.core.auth import (
    DEV_SECRET,
    MAX_SERVICE_TOKEN_S,
    InvalidToken,
    ServiceCredentials,
    TokenVerifier,
    bearer,
    mint_service_token,
    mint_token,
    service_secret_for,
)
from foodmesh.v1 import order_pb2
from tests.integration._gateway import Http
from tests.integration._order import order_mesh
from tests.security._identity import REAL_SECRET, hs256

#: The key a dev mesh's services sign their own tokens with.
DEV_SERVICE_KEY = service_secret_for(DEV_SECRET)


def _old_service_token(secret: str = DEV_SECRET) -> str:
    """What services minted before: role service, the user key, valid for a year."""
    return hs256({"sub": "order", "role": "service", "iat": int(time.time()),
                  "exp": int(time.time()) + 365 * 86400}, secret=secret)  # fmt: skip


async def test_the_gateway_refuses_service_and_internal_tokens_from_outside(
    order_http: Http,
) -> None:
    http = order_http
    internal = [
        _old_service_token(),  # role service under the user key
        mint_token(DEV_SECRET, subject="order", role="service"),  # a real service token
        # what Dispatch mints to act for a driver: the service key, only for services
        mint_service_token(DEV_SERVICE_KEY, subject="drv_1", role="driver", ttl_s=120),
    ]
    for token in internal:
        async with http.session.get(
            "/api/v1/orders/ord_nope", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status in (401, 403), (r.status, await r.text())
    # a customer's token still goes through (to a 404: no such order)
    user = mint_token(DEV_SECRET, subject="cus_1", role="customer")
    async with http.session.get(
        "/api/v1/orders/ord_nope", headers={"Authorization": f"Bearer {user}"}
    ) as r:
        assert r.status == 404, await r.text()


async def test_services_take_short_service_tokens_and_refuse_year_long_ones(
    pg_url: str, redis_url: str, nats_url: str, namespace: str
) -> None:
    async with order_mesh(pg_url=pg_url, redis_url=redis_url, nats_url=nats_url,
                          namespace=namespace) as mesh:  # fmt: skip
        async with grpc.aio.insecure_channel(mesh.order.target) as ch:
            get = ch.unary_unary(
                "/foodmesh.v1.OrderService/GetOrder",
                request_serializer=order_pb2.GetOrderRequest.SerializeToString,
                response_deserializer=order_pb2.GetOrderResponse.FromString,
            )
            req = order_pb2.GetOrderRequest(order_id="ord_nope")
            short = mint_service_token(DEV_SERVICE_KEY, subject="dispatch")
            with pytest.raises(grpc.aio.AioRpcError) as ok:
                await get(req, metadata=bearer(short), timeout=5)
            assert ok.value.code() == grpc.StatusCode.NOT_FOUND  # through the auth check
            year = {"sub": "order", "role": "service", "aud": "foodmesh-service",
                    "exp": time.time() + 365 * 86400}  # fmt: skip
            for token in (_old_service_token(), hs256(year, secret=DEV_SERVICE_KEY, service=True)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await get(req, metadata=bearer(token), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_service_credentials_are_short_lived_and_refreshed_before_expiry() -> None:
    now = [1_000_000.0]
    creds = ServiceCredentials(DEV_SERVICE_KEY, subject="order", clock=lambda: now[0])
    verifier = TokenVerifier(None, service_secret=DEV_SERVICE_KEY)
    first = creds.token()
    who = verifier.verify(first, now=now[0])
    assert (who.subject, who.role) == ("order", "service")
    assert who.expires_at - now[0] <= MAX_SERVICE_TOKEN_S
    now[0] += creds.ttl_s * 0.9  # near its end: a new one is minted before it lapses
    second = creds.token()
    assert second != first and verifier.verify(second, now=now[0]).role == "service"
    with pytest.raises(ValueError, match="service token lives"):
        mint_service_token(DEV_SERVICE_KEY, subject="order", ttl_s=365 * 86400)


def test_jwks_mode_takes_no_hs256_user_tokens_even_with_a_real_secret() -> None:
    v = TokenVerifier.configured(secret=REAL_SECRET, jwks_url="https://id.example/jwks",
                                 issuer="https://id.example")  # fmt: skip
    with pytest.raises(InvalidToken):
        v.verify(mint_token(REAL_SECRET, subject="ops_1", role="ops"))
    with pytest.raises(InvalidToken):  # nor service tokens: this is the gateway's verifier
        v.verify(mint_token(REAL_SECRET, subject="order", role="service"))


def test_a_user_key_cannot_sign_the_service_role() -> None:
    with pytest.raises(InvalidToken, match="service"):
        TokenVerifier(DEV_SECRET, service_secret=DEV_SERVICE_KEY).verify(_old_service_token())


def test_a_service_token_cannot_carry_customer_restaurant_or_ops() -> None:
    verifier = TokenVerifier(None, service_secret=DEV_SERVICE_KEY)
    for role in ("customer", "restaurant", "ops"):
        with pytest.raises(ValueError, match="service token"):
            mint_service_token(DEV_SERVICE_KEY, subject="x_1", role=role)
        forged = hs256({"sub": "x_1", "role": role, "aud": "foodmesh-service",
                        "exp": time.time() + 60}, secret=DEV_SERVICE_KEY, service=True)  # fmt: skip
        with pytest.raises(InvalidToken, match="may not carry role"):
            verifier.verify(forged)
    driver = hs256({"sub": "drv_1", "role": "driver", "aud": "foodmesh-service",
                    "exp": time.time() + 60}, secret=DEV_SERVICE_KEY, service=True)  # fmt: skip
    assert verifier.verify(driver).role == "driver"  # Dispatch acting for its driver
