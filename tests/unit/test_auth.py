"""Bearer tokens, and the access rules of the contracts enforced by every server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from foodmesh.core.auth import DEV_SECRET, InvalidToken, bearer, mint_token, verify_token
from foodmesh.v1 import eta_pb2, eta_pb2_grpc
from servers.runtime.auth import access_rules, current_principal
from servers.runtime.config import Settings
from servers.runtime.serve import Resources, RunningService, ServiceSpec, run_service


def test_a_token_round_trips_to_its_principal() -> None:
    token = mint_token("s3cret", subject="drv_1", role="driver")
    principal = verify_token("s3cret", token)
    assert (principal.subject, principal.role) == ("drv_1", "driver")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("abc", "malformed"),
        (mint_token("other", subject="drv_1", role="driver"), "bad signature"),
        (mint_token("s3cret", subject="drv_1", role="driver", now=1_000.0), "expired"),
    ],
)
def test_bad_tokens_are_refused_saying_why(token: str, why: str) -> None:
    with pytest.raises(InvalidToken, match=why):
        verify_token("s3cret", token)


def test_a_tampered_claim_breaks_the_signature() -> None:
    header, claims, sig = mint_token("s3cret", subject="cus_1", role="customer").split(".")
    forged = mint_token("s3cret", subject="cus_1", role="ops").split(".")[1]
    with pytest.raises(InvalidToken, match="bad signature"):
        verify_token("s3cret", f"{header}.{forged}.{sig}")


def test_access_rules_come_from_the_contracts() -> None:
    rules = access_rules(["foodmesh.v1.LocationService"])
    assert rules["/foodmesh.v1.LocationService/StreamLocations"] == {"driver"}
    assert rules["/foodmesh.v1.LocationService/TrackOrder"] == {"customer", "ops"}


class Eta(eta_pb2_grpc.EtaServiceServicer):
    async def Route(  # noqa: N802 — generated name
        self, request: eta_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.RouteResponse:
        who = current_principal()
        assert who is not None
        return eta_pb2.RouteResponse(polyline=f"{who.role}:{who.subject}")


@pytest.fixture
async def server() -> AsyncIterator[RunningService]:
    async def register(server: grpc.aio.Server, _: Resources) -> None:
        eta_pb2_grpc.add_EtaServiceServicer_to_server(Eta(), server)

    spec = ServiceSpec(name="eta", grpc_services=("foodmesh.v1.EtaService",), register=register)
    async with run_service(spec, Settings(service="eta", metrics_enabled=False)) as svc:
        yield svc


async def _route(target: str, metadata: tuple[tuple[str, str], ...]) -> eta_pb2.RouteResponse:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = eta_pb2_grpc.EtaServiceStub(ch)
        return await stub.Route(eta_pb2.RouteRequest(), timeout=2, metadata=metadata)


async def test_a_call_in_an_allowed_role_sees_its_caller(server: RunningService) -> None:
    token = mint_token(DEV_SECRET, subject="dispatch", role="service")
    reply = await _route(server.target, bearer(token))
    assert reply.polyline == "service:dispatch"


@pytest.mark.parametrize(
    ("metadata", "code", "reason"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "NO_TOKEN"),
        ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"),
        (bearer("not.a.token"), grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"),
        (
            bearer(mint_token(DEV_SECRET, subject="cus_1", role="customer")),
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        ),
    ],
)
async def test_a_call_without_the_right_role_is_refused_with_a_reason(
    server: RunningService,
    metadata: tuple[tuple[str, str], ...],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _route(server.target, metadata)
    assert err.value.code() == code
    status = rpc_status.from_call(err.value)
    assert status is not None
    infos = [error_details_pb2.ErrorInfo() for d in status.details if d.Is(_ERROR_INFO)]
    for info, d in zip(infos, [d for d in status.details if d.Is(_ERROR_INFO)], strict=True):
        d.Unpack(info)
    assert [i.reason for i in infos] == [reason]


_ERROR_INFO = error_details_pb2.ErrorInfo.DESCRIPTOR


async def test_health_needs_no_token(server: RunningService) -> None:
    async with grpc.aio.insecure_channel(server.target) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="foodmesh.v1.EtaService"), timeout=2
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_token_command_prints_a_token_the_services_accept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from foodmesh.cli import main

    monkeypatch.setenv("FOODMESH_AUTH_SECRET", "s3cret")
    assert main(["token", "--role", "driver", "--subject", "drv_9", "--ttl", "60"]) == 0
    principal = verify_token("s3cret", capsys.readouterr().out.strip())
    assert (principal.subject, principal.role) == ("drv_9", "driver")
