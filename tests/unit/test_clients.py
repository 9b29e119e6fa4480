"""The typed clients against a real server built by the runtime: deadlines and retries."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from clients import (
    CatalogClient,
    ClientOptions,
    DispatchClient,
    EtaClient,
    LocationClient,
    NotificationClient,
    OrderClient,
    PricingClient,
)
from clients._base import (
    BaseClient,
    RetryPolicy,
    mesh_channel_args,
    retryable_methods,
    service_config,
)
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.core.errors import Unavailable
from foodmesh.v1 import eta_pb2, eta_pb2_grpc, order_pb2
from servers.runtime.config import Settings
from servers.runtime.serve import Resources, RunningService, ServiceSpec, run_service

SERVICE_AUTH = bearer(mint_token(DEV_SECRET, subject="tests", role="service"))
ALL_CLIENTS = [
    CatalogClient,
    OrderClient,
    LocationClient,
    DispatchClient,
    EtaClient,
    PricingClient,
    NotificationClient,
]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class FlakyEta(eta_pb2_grpc.EtaServiceServicer):
    """Fails the first ``failures`` calls of each method with UNAVAILABLE."""

    def __init__(self, failures: int, *, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures:
            raise Unavailable("road graph is loading")

    async def Route(  # noqa: N802 — generated name
        self, request: eta_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eta_pb2.RouteResponse:
        self._count("Route")
        await asyncio.sleep(self.delay_s)
        return eta_pb2.RouteResponse(distance_meters=1200.0, duration_seconds=240.0)


@pytest.fixture
async def eta_server(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[RunningService, FlakyEta]]:
    servicer = FlakyEta(**getattr(request, "param", {"failures": 0}))

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        eta_pb2_grpc.add_EtaServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(name="eta", grpc_services=("foodmesh.v1.EtaService",), register=register)
    settings = Settings(service="eta", metrics_enabled=False, health_check_interval_s=0.05)
    async with run_service(spec, settings) as svc:
        yield svc, servicer


def route_request() -> eta_pb2.RouteRequest:
    req = eta_pb2.RouteRequest()
    req.origin.lat, req.origin.lon = 37.77, -122.42
    req.destination.lat, req.destination.lon = 37.78, -122.41
    return req


def test_only_methods_the_contract_calls_idempotent_are_retried() -> None:
    order = order_pb2.DESCRIPTOR.services_by_name["OrderService"]
    retried = set(retryable_methods(order))
    assert {"PlaceOrder", "GetOrder", "CancelOrder"} <= retried
    assert "WatchOrder" not in retried  # a stream is never retried by the channel
    config = json.loads(service_config([order], options=ClientOptions(deadline_s=2)))
    streams = [n for c in config["methodConfig"] for n in c["name"] if n["method"] == "WatchOrder"]
    assert streams == []  # and gets no 2 s deadline from the config
    assert {c["waitForReady"] for c in config["methodConfig"]} == {False}  # fail fast by default
    waiting = service_config([order], options=ClientOptions(wait_for_ready=True))
    assert {c["waitForReady"] for c in json.loads(waiting)["methodConfig"]} == {True}


@pytest.mark.parametrize("eta_server", [{"failures": 2}], indirect=True)
async def test_an_idempotent_call_is_retried_through_unavailable(
    eta_server: tuple[RunningService, FlakyEta],
) -> None:
    svc, servicer = eta_server
    opts = ClientOptions(
        retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05), metadata=SERVICE_AUTH
    )
    async with EtaClient(svc.target, options=opts) as eta:
        reply = await eta.route(route_request())
    assert reply.duration_seconds == 240.0
    assert servicer.calls["Route"] == 3


@pytest.mark.parametrize("eta_server", [{"failures": 5}], indirect=True)
async def test_retries_give_up_after_max_attempts(
    eta_server: tuple[RunningService, FlakyEta],
) -> None:
    svc, servicer = eta_server
    opts = ClientOptions(
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01), metadata=SERVICE_AUTH
    )
    async with EtaClient(svc.target, options=opts) as eta:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await eta.route(route_request())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls["Route"] == 3


@pytest.mark.parametrize("eta_server", [{"failures": 0, "delay_s": 2.0}], indirect=True)
async def test_every_call_has_the_default_deadline(
    eta_server: tuple[RunningService, FlakyEta],
) -> None:
    svc, _ = eta_server
    loop = asyncio.get_running_loop()
    async with EtaClient(
        svc.target, options=ClientOptions(deadline_s=0.3, metadata=SERVICE_AUTH)
    ) as eta:
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await eta.route(route_request())
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert loop.time() - started < 1.5


async def test_a_peer_restarted_on_its_port_is_reached_at_once() -> None:
    """A peer that crashed and came back is reached by the next call, from a new client and
    from an old one that may wait: no subchannel is left in a long reconnect backoff (gRPC's
    default grows to 120 s, and is shared by every channel to the same target)."""
    servicer = FlakyEta(failures=0)

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        eta_pb2_grpc.add_EtaServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(name="eta", grpc_services=("foodmesh.v1.EtaService",), register=register)
    settings = Settings(service="eta", metrics_enabled=False, shutdown_grace_s=0.1)
    opts = ClientOptions(metadata=SERVICE_AUTH, retry=RetryPolicy(max_attempts=2))
    async with run_service(spec, settings) as svc:
        old = EtaClient(svc.target, options=dataclasses.replace(opts, wait_for_ready=True))
        assert (await old.route(route_request())).duration_seconds == 240.0
        port = int(svc.target.rsplit(":", 1)[1])
    try:
        # The peer is gone: calls fail until its deadline, while the subchannel backs off.
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await old.route(route_request(), deadline_s=1.0)
            assert err.value.code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
            )  # fmt: skip
        again = Settings(service="eta", metrics_enabled=False, shutdown_grace_s=0.1, port=port)
        async with run_service(spec, again):
            async with EtaClient(f"127.0.0.1:{port}", options=opts) as new:
                assert (await new.route(route_request(), deadline_s=5)).duration_seconds == 240.0
            assert (await old.route(route_request(), deadline_s=5)).duration_seconds == 240.0
    finally:
        await old.close()


async def test_a_target_naming_several_replicas_spreads_calls_over_all_of_them() -> None:
    """What a caller sees of a headless Service in Kubernetes: several addresses. Each call
    goes to the next replica (round robin), not all to the first connection's."""
    servicers = [FlakyEta(failures=0), FlakyEta(failures=0)]

    def spec_of(servicer: FlakyEta) -> ServiceSpec:
        async def register(server: grpc.aio.Server, _: Resources) -> None:
            eta_pb2_grpc.add_EtaServiceServicer_to_server(servicer, server)

        return ServiceSpec(name="eta", grpc_services=("foodmesh.v1.EtaService",),
                           register=register)  # fmt: skip

    settings = Settings(service="eta", metrics_enabled=False, shutdown_grace_s=0.1)
    opts = ClientOptions(metadata=SERVICE_AUTH, wait_for_ready=True)
    async with (
        run_service(spec_of(servicers[0]), settings) as one,
        run_service(spec_of(servicers[1]), settings) as two,
    ):
        async with EtaClient(f"ipv4:{one.target},{two.target}", options=opts) as client:
            # Until both connections are up (on a loaded machine the second may come late),
            # then 20 calls: round robin alternates; pick_first sent every one to the first.
            async with asyncio.timeout(10):
                while min(s.calls.get("Route", 0) for s in servicers) == 0:
                    await client.route(route_request(), deadline_s=5)
            before = [s.calls.get("Route", 0) for s in servicers]
            for _ in range(20):
                await client.route(route_request(), deadline_s=5)
    served = [s.calls.get("Route", 0) - b for s, b in zip(servicers, before, strict=True)]
    assert sum(served) == 20 and min(served) >= 5, served


async def test_clients_share_a_channel_they_do_not_own() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    order = OrderClient(channel)
    location = LocationClient(channel)
    await order.close()
    await location.close()
    assert channel.get_state() != grpc.ChannelConnectivity.SHUTDOWN
    await channel.close()


@pytest.mark.parametrize("client", ALL_CLIENTS, ids=lambda c: c.__name__)
def test_every_rpc_of_the_contract_has_a_client_method(client: type[BaseClient]) -> None:
    service = client.SERVICE
    missing = [m.name for m in service.methods if not hasattr(client, _snake(m.name))]
    assert missing == [], f"{client.__name__} lacks methods for {missing}"


def test_the_gateway_and_dashboard_dial_with_the_meshs_reconnect_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Their channels are made outside the typed clients: they must reconnect as those do."""
    from dashboard import app as dashboard_app
    from gateway._config import GatewayConfig
    from gateway._upstreams import Upstreams

    seen: list[dict[str, Any]] = []

    def record(target: str, options: Any = None, **_: Any) -> object:
        seen.append(dict(options or ()))
        return object()

    monkeypatch.delenv("FOODMESH_TLS_CA", raising=False)
    monkeypatch.setattr(grpc.aio, "insecure_channel", record)
    config = GatewayConfig(host="127.0.0.1", port=0, targets={"eta": "127.0.0.1:1"},
                           services=frozenset({"eta"}))  # fmt: skip
    Upstreams(config).channel(eta_pb2.DESCRIPTOR.services_by_name["EtaService"])
    dashboard_app._channel("127.0.0.1:1")
    wanted = dict(mesh_channel_args())
    assert len(seen) == 2
    for options in seen:
        assert {k: options.get(k) for k in wanted} == wanted
        assert options["grpc.use_local_subchannel_pool"] == 1
        assert options["grpc.max_reconnect_backoff_ms"] <= 2000
