"""The gateway in front of the real Location service: REST, auth, errors, health."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servers.runtime.serve import RunningService
from tests.integration._gateway import Http, auth, details, gateway, violations
from tests.integration._location import location_service

SF = (37.7749, -122.4194)


def fix_body(lat: float = SF[0], lon: float = SF[1], **extra: object) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"lat": lat, "lon": lon, "accuracy": 5.0, "heading": 90.0, "speed": 10.0,
            "timestamp": now, **extra}  # fmt: skip


@pytest.fixture
async def loc(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[RunningService]:
    async with location_service(
        pg_url=pg_url, redis_url=redis_url, nats_url=nats_url, namespace=namespace,
        state_dir=tmp_path,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def http(loc: RunningService) -> AsyncIterator[Http]:
    async with gateway({"location": loc.target}, max_body_bytes=64 * 1024) as h:
        yield h


async def test_a_driver_posts_a_fix_gets_204_and_is_then_found(http: Http) -> None:
    async with http.session.post(
        "/api/v1/drivers/location", json=fix_body(), headers=auth("driver", "drv_gw")
    ) as resp:
        assert resp.status == 204
        assert await resp.read() == b""
        assert resp.headers["X-Request-Id"]
    async with http.session.get(
        "/api/v1/drivers/drv_gw/location", headers=auth("ops", "ops_1")
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    pos = body["position"]
    assert pos["driver_id"] == "drv_gw"
    assert (pos["lat"], pos["lon"]) == pytest.approx(SF)
    assert pos["last_updated"].endswith("Z")  # RFC 3339
    assert pos["status"].startswith("DRIVER_STATUS_")


async def test_a_bad_fix_is_400_with_field_violations(http: Http) -> None:
    async with http.session.post(
        "/api/v1/drivers/location", json=fix_body(lat=123.0), headers=auth("driver", "drv_gw")
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["code"] == 3
    assert "lat" in violations(body)
    assert details(body, "RequestInfo")[0]["request_id"] == resp.headers["X-Request-Id"]


async def test_tokens_and_roles_are_checked_before_the_service(http: Http) -> None:
    async with http.session.post("/api/v1/drivers/location", json=fix_body()) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert details(await resp.json(), "ErrorInfo")[0]["reason"] == "NO_TOKEN"
    bad = {"Authorization": "Bearer not.a.token"}
    async with http.session.post("/api/v1/drivers/location", json=fix_body(), headers=bad) as r:
        assert r.status == 401
        assert details(await r.json(), "ErrorInfo")[0]["reason"] == "INVALID_TOKEN"
    async with http.session.post(
        "/api/v1/drivers/location", json=fix_body(), headers=auth("customer", "cus_1")
    ) as resp:
        assert resp.status == 403
        body = await resp.json()
    assert details(body, "ErrorInfo")[0]["reason"] == "ROLE_NOT_ALLOWED"
    assert "customer" in body["message"]
    # Another driver's id in the body: the service's own check answers.
    async with http.session.post(
        "/api/v1/drivers/location", json=fix_body(driver_id="drv_other"),
        headers=auth("driver", "drv_gw"),
    ) as resp:  # fmt: skip
        assert resp.status == 403
        assert details(await resp.json(), "ErrorInfo")[0]["reason"] == "NOT_YOUR_DRIVER"


async def test_malformed_unknown_and_oversized_bodies_are_refused(http: Http) -> None:
    headers = auth("driver", "drv_gw", **{"Content-Type": "application/json"})
    async with http.session.post(
        "/api/v1/drivers/location", data=b'{"lat": 1,\n "lon": }', headers=headers
    ) as resp:
        assert resp.status == 400
        assert "line 2 column 9" in (await resp.json())["message"]
    async with http.session.post(
        "/api/v1/drivers/location", json=fix_body(altitude=3), headers=headers
    ) as resp:
        assert resp.status == 400
        assert violations(await resp.json()) == {"altitude": "unknown field"}
    async with http.session.post(
        "/api/v1/drivers/location?lat=1", json=fix_body(), headers=headers
    ) as resp:
        assert resp.status == 400  # the body carries the whole request
        assert set(violations(await resp.json())) == {"lat"}
    big = b'{"driver_id": "' + b"x" * 100_000 + b'"}'
    async with http.session.post("/api/v1/drivers/location", data=big, headers=headers) as resp:
        assert resp.status == 413
        assert (await resp.json())["code"] == 8


async def test_unknown_routes_are_404_and_wrong_methods_405(http: Http) -> None:
    async with http.session.get("/api/v1/nope", headers=auth("ops", "o")) as resp:
        assert resp.status == 404
        body = await resp.json()
        assert body["code"] == 5 and "no route" in body["message"]
    async with http.session.get("/api/v1/drivers/location", headers=auth("ops", "o")) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert details(await resp.json(), "ErrorInfo")[0]["reason"] == "METHOD_NOT_ALLOWED"


async def test_the_request_id_is_kept_or_made_and_returned(http: Http) -> None:
    async with http.session.get(
        "/api/v1/drivers/nobody/location", headers=auth("ops", "o", **{"X-Request-Id": "req-42"})
    ) as resp:
        assert resp.status == 404
        assert resp.headers["X-Request-Id"] == "req-42"
        assert details(await resp.json(), "RequestInfo") == [
            {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": "req-42"}
        ]


async def test_health_readiness_and_openapi(http: Http) -> None:
    async with http.session.get("/healthz") as resp:
        assert resp.status == 200
    async with http.session.get("/readyz") as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["upstreams"] == {"foodmesh.v1.LocationService": "SERVING"}
    async with http.session.get("/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/api/v1/drivers/location", "/api/v1/orders/{order_id}/track"}
    assert "/api/v1/orders" not in doc["paths"]  # only the exposed services


async def test_an_upstream_that_is_down_is_503_with_retry_after_at_once() -> None:
    async with gateway({"location": "127.0.0.1:1"}) as http:
        started = time.monotonic()
        async with http.session.post(
            "/api/v1/drivers/location", json=fix_body(), headers=auth("driver", "drv_gw")
        ) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            body = await resp.json()
        assert body["code"] == 14 and "127.0.0.1" not in body["message"]
        assert time.monotonic() - started < 3
        async with http.session.get("/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["upstreams"]["foodmesh.v1.LocationService"] != "SERVING"
