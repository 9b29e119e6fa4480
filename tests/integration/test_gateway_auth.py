"""Production auth end to end: RS256 tokens from a JWKS, checked by the gateway and the service.

The JWKS is served over real HTTP from a thread of its own (the services under test
run on this test's loop, and fetch keys in a worker thread, never on the loop).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clients import ClientOptions, OrderClient
from foodmesh.core.auth import DEV_SECRET, JwksCache, TokenVerifier, mint_token
from foodmesh.v1 import order_pb2
from tests.integration._gateway import Http, details, gateway, scripted_orders

ISS, AUD = "https://id.foodmesh.example/", "foodmesh-api"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**doc, "kid": kid, "use": "sig", "alg": "RS256"}


def sign(key: rsa.RSAPrivateKey, kid: str = "k1", *, ttl: int = 300, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "cus_1", "role": "customer", "iss": ISS, "aud": AUD, "iat": now,
            "exp": now + ttl, **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Jwks:
    """An OIDC provider's JWKS endpoint on a free port; the test rotates its keys."""

    def __init__(self) -> None:
        self.keys = [jwk(KEY, "k1")]
        self.fetches = 0
        self.delay_s = 0.0  # a slow provider
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 — http.server's name
                owner.fetches += 1
                time.sleep(owner.delay_s)
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    provider = Jwks()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()
        thread.join(5)


@pytest.fixture
async def http(jwks: Jwks, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Http]:
    # The service reads its auth settings from the environment, like a deployed one.
    for name, value in {"FOODMESH_AUTH_JWKS_URL": jwks.url, "FOODMESH_AUTH_ISSUER": ISS,
                        "FOODMESH_AUTH_AUDIENCE": AUD,
                        "FOODMESH_AUTH_JWKS_MIN_REFRESH_S": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    cache = JwksCache(jwks.url, min_refresh_s=0)
    verifier = TokenVerifier(None, jwks=cache, issuer=ISS, audience=AUD)
    async with (
        scripted_orders() as (_, target),
        gateway({"order": target}, verifier=verifier, auth_jwks_url=jwks.url) as h,
    ):
        yield h


async def get(http: Http, token: str, order: str = "ord_1") -> tuple[int, dict[str, Any]]:
    async with http.session.get(f"/api/v1/orders/{order}", headers=bearer(token)) as resp:
        return resp.status, await resp.json()


async def test_an_identity_provider_token_is_checked_by_the_gateway_and_the_service(
    http: Http, jwks: Jwks
) -> None:
    status, body = await get(http, sign(KEY))
    # 200 means the service took it too: in JWKS mode it refuses HS256 with the dev secret.
    assert status == 200, body
    assert body["order"]["customer_id"] == "cus_1"
    for _ in range(3):
        assert (await get(http, sign(KEY)))[0] == 200
    assert jwks.fetches == 2  # once by the gateway, once by the service; then cached


async def test_expired_badly_signed_wrong_role_and_dev_tokens_are_refused(http: Http) -> None:
    cases = {
        "expired": (sign(KEY, ttl=-120), 401, "expired"),
        "forged": (sign(rsa.generate_private_key(public_exponent=65537, key_size=2048)), 401,
                   "bad signature"),
        "audience": (sign(KEY, aud="other-api"), 401, "audience"),
        "dev token": (mint_token(DEV_SECRET, subject="cus_1", role="customer"), 401, "HS256"),
    }  # fmt: skip
    for name, (token, status, says) in cases.items():
        got, body = await get(http, token)
        assert got == status, (name, body)
        assert says in body["message"], (name, body["message"])
    driver = bearer(sign(KEY, role="driver", sub="drv_1"))
    async with http.session.post("/api/v1/orders", json={}, headers=driver) as resp:
        assert resp.status == 403  # PlaceOrder is the customers'
        assert "may not call PlaceOrder" in (await resp.json())["message"]
    got, body = await get(http, sign(KEY, sub="cus_2"))
    assert got == 404, body  # someone else's order does not exist for them (the service says)
    assert "ord_1" in body["message"]
    assert details(body, "RequestInfo")


async def test_a_rotated_key_is_fetched_on_first_sight(http: Http, jwks: Jwks) -> None:
    assert (await get(http, sign(KEY)))[0] == 200
    before = jwks.fetches
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.keys = [jwk(new, "k2"), *jwks.keys]
    status, body = await get(http, sign(new, "k2"))
    assert status == 200, body
    assert jwks.fetches == before + 2  # the gateway's cache and the service's each refetched once
    status, body = await get(http, sign(new, "k-unknown"))
    assert status == 401 and "unknown signing key" in body["message"]


async def test_the_service_itself_takes_provider_tokens_and_refuses_others(
    jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOODMESH_AUTH_JWKS_URL", jwks.url)
    monkeypatch.setenv("FOODMESH_AUTH_AUDIENCE", AUD)
    async with scripted_orders() as (_, target):
        ok = ClientOptions(metadata=(("authorization", f"Bearer {sign(KEY)}"),))
        async with OrderClient(target, options=ok) as client:
            reply = await client.get_order(order_pb2.GetOrderRequest(order_id="ord_1"))
        assert reply.order.order_id == "ord_1"
        expired = ClientOptions(metadata=(("authorization", f"Bearer {sign(KEY, ttl=-120)}"),))
        async with OrderClient(target, options=expired) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.get_order(order_pb2.GetOrderRequest(order_id="ord_1"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in (err.value.details() or "")


async def test_a_slow_key_fetch_does_not_stall_the_services_other_calls(
    jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOODMESH_AUTH_JWKS_URL", jwks.url)
    monkeypatch.setenv("FOODMESH_AUTH_AUDIENCE", AUD)
    monkeypatch.setenv("FOODMESH_AUTH_JWKS_MIN_REFRESH_S", "0")
    async with scripted_orders() as (_, target):
        known = ClientOptions(metadata=(("authorization", f"Bearer {sign(KEY)}"),))
        async with OrderClient(target, options=known) as client:
            await client.get_order(order_pb2.GetOrderRequest(order_id="ord_1"))  # keys held
            new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwks.keys = [jwk(new, "k2"), *jwks.keys]
            jwks.delay_s = 1.5  # under the fetch timeout (2 s)
            rotated = ClientOptions(metadata=(("authorization", f"Bearer {sign(new, 'k2')}"),))
            async with OrderClient(target, options=rotated) as other:
                slow = asyncio.create_task(
                    other.get_order(order_pb2.GetOrderRequest(order_id="ord_1"), deadline_s=10)
                )
                await asyncio.sleep(0.5)  # the service is fetching the new key now
                served_meanwhile = 0
                while not slow.done() and served_meanwhile < 5:
                    await client.get_order(order_pb2.GetOrderRequest(order_id="ord_1"))
                    served_meanwhile += 1
                # Five calls went through while the fetch was still under way: the
                # service's loop did not wait on the provider.
                assert served_meanwhile == 5 and not slow.done()
                reply = await slow
        assert reply.order.order_id == "ord_1"  # and the new key's call succeeded
