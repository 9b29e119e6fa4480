"""One request's trace across processes, exported over OTLP to a collector.

The gateway and the Catalog service run as their own processes (``foodmesh serve``),
configured as in Kubernetes with ``OTEL_EXPORTER_OTLP_ENDPOINT``; the collector is
a real OTLP/gRPC TraceService on a free port in this test. A request carrying a
``traceparent`` comes back as one trace: the gateway's server span continues the
caller's, and the Catalog's span is the gateway's child.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from foodmesh.core.auth import DEV_SECRET, mint_token
from servers import catalog
from servers.runtime.migrate import load_migrations, migrate

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it: (service.name, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.arrived = asyncio.Event()

    async def Export(  # noqa: N802 — the OTLP service's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), "")  # fmt: skip
            for ss in rs.scope_spans:
                self.spans.extend((service, span) for span in ss.spans)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    found = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield found, port
    finally:
        await server.stop(0)


async def test_a_request_is_one_trace_from_the_gateway_to_the_service(
    collector: tuple[Collector, int], pg_url: str, redis_url: str, nats_url: str,
    namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    found, otlp_port = collector
    assert catalog.SPEC.migrations is not None
    await migrate(pg_url, service="catalog", migrations=load_migrations(catalog.SPEC.migrations))
    catalog_port, gateway_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the spans end
        "FOODMESH_POSTGRES_URL": pg_url, "FOODMESH_REDIS_URL": redis_url,
        "FOODMESH_NATS_URL": nats_url, "FOODMESH_NAMESPACE": namespace,
        "FOODMESH_CATALOG_PORT": str(catalog_port), "FOODMESH_CATALOG_METRICS_PORT": "0",
        "FOODMESH_GATEWAY_PORT": str(gateway_port), "FOODMESH_GATEWAY_SERVICES": "catalog",
        "FOODMESH_GATEWAY_CATALOG_TARGET": f"127.0.0.1:{catalog_port}",
        "FOODMESH_GATEWAY_IP_RATE": "0", "FOODMESH_GATEWAY_TOKEN_RATE": "0",
    }  # fmt: skip
    env.pop("FOODMESH_TRACE_EXPORTER", None)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "foodmesh",
            "serve",
            name,
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for name in ("catalog", "gateway")
    ]
    base = f"http://127.0.0.1:{gateway_port}"
    token = mint_token(DEV_SECRET, subject="cus_1", role="customer")
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):  # both up, the gateway seeing the Catalog serve
                while True:
                    await asyncio.sleep(0.3)
                    try:
                        async with http.get(f"{base}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
            headers = {"Authorization": f"Bearer {token}",
                       "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}  # fmt: skip
            search = "/api/v1/restaurants/search?lat=37.7749&lon=-122.4194"
            async with http.get(base + search, headers=headers) as r:
                assert r.status == 200, await r.text()

        def ours() -> list[tuple[str, Span]]:
            return [(svc, s) for svc, s in found.spans if s.trace_id.hex() == TRACE_ID]

        async with asyncio.timeout(20):
            while {svc for svc, _ in ours()} < {"foodmesh-gateway", "foodmesh-catalog"}:
                found.arrived.clear()
                await found.arrived.wait()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            async with asyncio.timeout(20):
                await p.wait()
    spans = ours()
    gw = [s for svc, s in spans if svc == "foodmesh-gateway"]
    assert [s.name for s in gw] == ["GET /api/v1/restaurants/search"]
    assert gw[0].parent_span_id.hex() == CALLER_SPAN
    cat = [s for svc, s in spans if svc == "foodmesh-catalog"]
    server = [s for s in cat if s.parent_span_id == gw[0].span_id]
    assert [s.name for s in server] == ["foodmesh.v1.CatalogService/SearchRestaurants"], [
        (s.name, s.parent_span_id.hex()) for s in cat
    ]
