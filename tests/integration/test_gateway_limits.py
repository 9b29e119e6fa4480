"""The gateway's limits and its answers to bad input: rate limits in Redis, CORS, bodies, paths."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from yarl import URL

from gateway._limits import bucket_key
from tests.integration._gateway import (
    Http,
    ScriptedOrders,
    auth,
    details,
    gateway,
    scripted_orders,
    violations,
)

CUSTOMER = auth("customer", "cus_1")
PLACE = {"restaurant_id": "rest_1", "payment_method_id": "pm_card_visa",
         "items": [{"item_id": "margherita", "quantity": 1}]}  # fmt: skip


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedOrders, str]]:
    async with scripted_orders() as running:
        yield running


@pytest.fixture
async def http(scripted: tuple[ScriptedOrders, str]) -> AsyncIterator[Http]:
    async with gateway({"order": scripted[1]}, max_body_bytes=64 * 1024) as h:
        yield h


async def test_a_caller_over_its_rate_gets_429_with_retry_after(
    scripted: tuple[ScriptedOrders, str], redis_url: str, namespace: str
) -> None:
    async with gateway({"order": scripted[1]}, redis_url=redis_url, rate_limit_namespace=namespace,
                       token_rate=0.5, token_burst=3, ip_rate=0) as http:  # fmt: skip
        for _ in range(3):  # the burst
            async with http.session.get("/api/v1/orders/ord_1", headers=CUSTOMER) as resp:
                assert resp.status == 200
        async with http.session.get("/api/v1/orders/ord_1", headers=CUSTOMER) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            body = await resp.json()
        assert body["code"] == 8 and "retry in" in body["message"]
        info = details(body, "ErrorInfo")[0]
        assert (info["reason"], info["metadata"]["scope"]) == ("RATE_LIMITED", "caller")
        assert float(details(body, "RetryInfo")[0]["retry_delay"].rstrip("s")) > 0
        # Another caller has a bucket of its own.
        other = auth("ops", "ops_1")
        async with http.session.get("/api/v1/orders/ord_1", headers=other) as resp:
            assert resp.status == 200
    # One hash per bucket, its whole name in a hash tag (one Redis Cluster slot).
    key = bucket_key("caller", "customer:cus_1", namespace)
    assert key == f"gw:rl:{{{namespace}caller:customer:cus_1}}"
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert float(await r.hget(key, "tokens") or 99) < 1
        assert 0 < await r.pttl(key) <= 7000  # gone once it would be full again
    finally:
        await r.aclose()


async def test_one_address_is_limited_across_callers_and_failed_requests(
    scripted: tuple[ScriptedOrders, str], redis_url: str, namespace: str
) -> None:
    async with gateway({"order": scripted[1]}, redis_url=redis_url, rate_limit_namespace=namespace,
                       ip_rate=0.5, ip_burst=3, token_rate=0) as http:  # fmt: skip
        statuses = []
        for who in ("cus_1", "cus_2"):
            async with http.session.get("/api/v1/orders/ord_1", headers=auth("customer", who)) as r:
                statuses.append(r.status)
        # No token: 401, counted in the address's bucket of failures, not in this one.
        async with http.session.get("/api/v1/orders/ord_1") as resp:
            statuses.append(resp.status)
        for _ in range(2):
            async with http.session.get("/api/v1/orders/ord_1", headers=CUSTOMER) as resp:
                statuses.append(resp.status)
                body = await resp.json()
        assert statuses == [200, 404, 401, 200, 429]
        assert details(body, "ErrorInfo")[0]["metadata"]["scope"] == "ip"


async def test_rate_limits_fail_open_when_redis_is_down(
    scripted: tuple[ScriptedOrders, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "foodmesh.gateway.limits")
    async with gateway({"order": scripted[1]}, redis_url="redis://127.0.0.1:1/0",
                       ip_rate=0.1, ip_burst=1, token_rate=0.1, token_burst=1) as http:  # fmt: skip
        for _ in range(3):
            async with http.session.get("/api/v1/orders/ord_1", headers=CUSTOMER) as resp:
                assert resp.status == 200
        assert http.gateway.limiter is not None and http.gateway.limiter.failures >= 3
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "failing open" in logged[0]  # one line, not one per request


async def test_cors_preflight_and_headers_for_allowed_origins_only(
    scripted: tuple[ScriptedOrders, str],
) -> None:
    app = "https://app.foodmesh.example"
    async with gateway({"order": scripted[1]}, cors_origins=frozenset({app})) as http:
        preflight = {
            "Origin": app,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, idempotency-key",
        }
        async with http.session.options("/api/v1/orders", headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == app
            assert resp.headers["Access-Control-Allow-Methods"] == "POST"
            allowed = resp.headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed and "idempotency-key" in allowed
            assert resp.headers["Access-Control-Max-Age"] == "600"
        async with http.session.options(
            "/api/v1/orders", headers={**preflight, "Access-Control-Request-Method": "DELETE"}
        ) as resp:
            assert resp.status == 405  # no such route to allow
        evil = {**preflight, "Origin": "https://evil.example"}
        async with http.session.options("/api/v1/orders", headers=evil) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.session.get(
            "/api/v1/orders/ord_1", headers={**CUSTOMER, "Origin": app}
        ) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == app
            assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
        from_evil = {**CUSTOMER, "Origin": "https://evil.example"}
        async with http.session.get("/api/v1/orders/ord_1", headers=from_evil) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
    async with gateway({"order": scripted[1]}) as http:  # CORS off by default
        async with http.session.get(
            "/api/v1/orders/ord_1", headers={**CUSTOMER, "Origin": app}
        ) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b'{"restaurant_id": "r", "items": [}', "", "malformed JSON at line 1 column 34"),
        (b'{"restaurant_id": 5}', "restaurant_id", "restaurant_id"),
        (b'{"items": [{"quantity": "lots"}]}', "items.quantity", "quantity"),
        (b'{"items": "margherita"}', "items", "items"),
        (b'{"restaurant_id": "\xff\xfe"}', "", "not UTF-8"),
        (b'{"note": ' + b"[" * 200 + b"]" * 200 + b"}", "", "nested deeper than 64"),
        (b"[" * 60_000, "", "nested deeper than 64"),
        (b'"just a string"', "", "must be a JSON object"),
    ],
)  # fmt: skip
async def test_bad_bodies_are_400_with_a_clear_body(
    http: Http, body: bytes, field: str, says: str
) -> None:
    headers = {**CUSTOMER, "Content-Type": "application/json", "Idempotency-Key": "k"}
    async with http.session.post("/api/v1/orders", data=body, headers=headers) as resp:
        assert resp.status == 400, await resp.text()
        doc = await resp.json()
    assert doc["code"] == 3 and says in doc["message"], doc["message"]
    assert field in violations(doc), violations(doc)


async def test_a_huge_body_is_413_before_it_is_read_whole(http: Http) -> None:
    headers = {**CUSTOMER, "Content-Type": "application/json", "Idempotency-Key": "k"}
    huge = b'{"restaurant_id": "' + b"x" * (2 << 20) + b'"}'
    async with http.session.post("/api/v1/orders", data=io.BytesIO(huge), headers=headers) as resp:
        assert resp.status == 413
        doc = await resp.json()
    assert details(doc, "ErrorInfo")[0]["reason"] == "BODY_TOO_LARGE"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/orders/..%2F..%2Fetc%2Fpasswd", "/api/v1/orders/%2e%2e", "/api/v1/orders/a%00b",
     "/api/v1/orders/%FF%FE", "/api/v1/orders/ord_1/../../../etc/passwd"],
)  # fmt: skip
async def test_path_traversal_in_path_variables_is_a_clear_4xx(http: Http, path: str) -> None:
    async with http.session.get(URL(http.base + path, encoded=True), headers=CUSTOMER) as resp:
        assert 400 <= resp.status < 500, (path, resp.status)
        doc = await resp.json()
    assert doc["code"] in (3, 5) and doc["message"]


async def test_docs_are_served_from_the_vendored_bundle(http: Http) -> None:
    async with http.session.get("/docs") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "/docs/swagger-ui-bundle.js" in page and "//" not in page.replace("<!DOCTYPE", "")
    async with http.session.get("/docs/init.js") as resp:
        assert "/openapi.json" in await resp.text()
    async with http.session.get("/docs/swagger-ui-bundle.js") as resp:
        assert resp.status == 200
        assert len(await resp.read()) > 100_000
    for missing in ("/docs/index.j2", "/docs/nope.js", "/docs/..%2F__init__.py"):
        async with http.session.get(URL(http.base + missing, encoded=True)) as resp:
            assert resp.status == 404, missing
