"""``/healthz`` (the process answers) and ``/readyz`` (every upstream serves), both open.

One fan-out of health checks to the upstreams serves every ``/readyz`` caller for
``readyz_cache_s``: an open endpoint must not multiply into upstream calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
from aiohttp import web
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._config import GatewayConfig
from gateway._upstreams import Upstreams

__all__ = ["Health"]


class Health:
    """The gateway's liveness, and its upstreams' health, cached."""

    def __init__(
        self,
        config: GatewayConfig,
        services: Sequence[descriptor.ServiceDescriptor],
        upstreams: Upstreams,
    ) -> None:
        self.config = config
        self.services = services
        self.upstreams = upstreams
        self._ready: tuple[float, dict[str, str]] | None = None
        self._ready_lock = asyncio.Lock()
        #: How many fan-outs ``/readyz`` has made (the cache's hits made none).
        self.fanouts = 0

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        results = await self.upstream_health()
        ready = all(v == "SERVING" for v in results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "upstreams": results},
            status=200 if ready else 503,
        )

    async def upstream_health(self) -> dict[str, str]:
        """Every upstream's health, asked at most once per ``readyz_cache_s``."""

        async def check(svc: descriptor.ServiceDescriptor) -> tuple[str, str]:
            stub = health_pb2_grpc.HealthStub(self.upstreams.channel(svc))
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=svc.full_name), timeout=1.0
                )
            except grpc.aio.AioRpcError as exc:
                return svc.full_name, exc.code().name
            return svc.full_name, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        def fresh() -> dict[str, str] | None:
            if self._ready is not None and time.monotonic() < self._ready[0]:
                return self._ready[1]
            return None

        if (hit := fresh()) is not None:
            return hit
        async with self._ready_lock:  # callers arriving meanwhile share the one fan-out
            if (hit := fresh()) is not None:
                return hit
            self.fanouts += 1
            results = dict(await asyncio.gather(*(check(s) for s in self.services)))
            self._ready = (time.monotonic() + self.config.readyz_cache_s, results)
            return results
