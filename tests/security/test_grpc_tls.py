"""gRPC between services over TLS: a service serves with its certificate, callers verify it
against the CA, plaintext callers get nothing, and production refuses plaintext.

The certificates come from a throwaway CA made with ``cryptography`` (in k8s,
cert-manager writes the same ``tls.crt``/``tls.key``/``ca.crt`` into each pod's Secret).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients import CatalogClient, ClientOptions
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.core.tls import TlsFiles
from foodmesh.services import load_spec
from foodmesh.v1 import catalog_pb2
from servers.catalog import SPEC
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, run_service, serve
from tests.integration._gateway import auth, gateway
from tests.security._prod import Pki, free_port, make_pki

pytestmark = pytest.mark.integration

#: No TLS session, so the service never saw the call (the retries may outlast the deadline).
NOT_REACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
OPS = bearer(mint_token(DEV_SECRET, subject="tests", role="ops"))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def health_port() -> int:
    return free_port()


@pytest.fixture
async def catalog_tls(
    pki: Pki,
    health_port: int,
    pg_url: str,
    redis_url: str,
    namespace: str,
    redis_client: aioredis.Redis,
) -> AsyncIterator[RunningService]:
    assert SPEC.migrations is not None
    await migrate(pg_url, service="catalog", migrations=load_migrations(SPEC.migrations))
    settings = Settings(
        service="catalog",
        postgres_url=pg_url,
        redis_url=redis_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.05,
        shutdown_grace_s=0.5,
        tls=pki.server,
        extra={"FOODMESH_CATALOG_HEALTH_PORT": str(health_port)},
    )
    async with run_service(SPEC, settings) as running:
        yield running


async def test_a_typed_client_with_the_ca_reaches_a_service_served_over_tls(
    catalog_tls: RunningService, pki: Pki
) -> None:
    opts = ClientOptions(metadata=OPS, tls=pki.client, deadline_s=5.0)
    async with CatalogClient(catalog_tls.target, options=opts) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id="rest_missing")
            )
        # The service itself answered (over TLS): not a transport failure.
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


async def test_a_plaintext_client_is_refused_by_a_tls_service(
    catalog_tls: RunningService,
) -> None:
    opts = ClientOptions(metadata=OPS, tls=TlsFiles(), deadline_s=2.0)
    async with CatalogClient(catalog_tls.target, options=opts) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id="rest_missing")
            )
        assert err.value.code() in NOT_REACHED, err.value.details()


async def test_a_client_trusting_another_ca_refuses_the_service(
    catalog_tls: RunningService, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", ca_name="someone else's CA")
    opts = ClientOptions(metadata=OPS, tls=other.client, deadline_s=2.0)
    async with CatalogClient(catalog_tls.target, options=opts) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id="rest_missing")
            )
        assert err.value.code() in NOT_REACHED, err.value.details()


async def test_the_plaintext_health_port_answers_health_and_nothing_else(
    catalog_tls: RunningService, health_port: int
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        client = CatalogClient(ch, options=ClientOptions(metadata=OPS))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id="rest_missing")
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_gateway_calls_a_tls_service_with_the_ca_and_not_without(
    catalog_tls: RunningService, pki: Pki
) -> None:
    headers = auth("ops", "tests")
    async with gateway({"catalog": catalog_tls.target}, tls=pki.client) as http:
        async with http.session.get("/api/v1/restaurants/rest_missing", headers=headers) as r:
            assert r.status == 404, await r.text()  # the service answered, over TLS
    async with gateway({"catalog": catalog_tls.target}, deadline_s=2.0) as http:
        async with http.session.get("/api/v1/restaurants/rest_missing", headers=headers) as r:
            assert r.status in (502, 503, 504), await r.text()


def test_a_service_refuses_to_start_in_plaintext_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FOODMESH_DEV", raising=False)
    settings = Settings(service="catalog", metrics_enabled=False)
    assert serve(SPEC, settings) == 1
    err = capsys.readouterr().err
    assert "plaintext gRPC is for dev only" in err and "FOODMESH_TLS_CERT" in err


def test_a_caller_service_needs_the_ca_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    monkeypatch.delenv("FOODMESH_DEV", raising=False)
    settings = Settings(
        service="catalog",
        metrics_enabled=False,
        tls=pki.server,
        extra={"FOODMESH_CATALOG_PRICING_TARGET": "pricing:7053"},
    )
    assert serve(SPEC, settings) == 1
    assert "FOODMESH_TLS_CA" in capsys.readouterr().err


def test_a_service_that_always_calls_others_needs_the_ca_without_any_target_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    """Order, Location, Pricing and Dispatch call their peers at default addresses: with a
    certificate but no CA they would serve TLS and dial plaintext, failing every call."""
    monkeypatch.delenv("FOODMESH_DEV", raising=False)
    caller = dataclasses.replace(SPEC, calls=("pricing",))
    settings = Settings(service="catalog", metrics_enabled=False, tls=pki.server)
    assert serve(caller, settings) == 1
    assert "FOODMESH_TLS_CA" in capsys.readouterr().err
    for name in ("order", "location", "pricing", "dispatch"):
        assert load_spec(name).calls, f"{name} calls other services"


@pytest.mark.parametrize("app", ["gateway", "dashboard"])
def test_the_gateway_and_dashboard_refuse_plaintext_upstreams_outside_dev_mode(
    app: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("FOODMESH_DEV", "FOODMESH_TLS_CA", "FOODMESH_TLS_CERT", "FOODMESH_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    # A real secret: what is missing is TLS (each process checks its secret first).
    monkeypatch.setenv("FOODMESH_AUTH_SECRET", "x" * 40)
    if app == "gateway":
        from gateway.app import main
    else:
        from dashboard.app import main
    # A port already taken: should the check be missing, main() stops there, not forever.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv(f"FOODMESH_{app.upper()}_HOST", "127.0.0.1")
        monkeypatch.setenv(f"FOODMESH_{app.upper()}_PORT", str(taken.getsockname()[1]))
        assert main() == 1
    out = capsys.readouterr()
    assert "plaintext gRPC is for dev only" in out.out + out.err
