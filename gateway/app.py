"""The HTTP gateway: JSON REST and server-sent events in front of the gRPC mesh.

Routes come from the ``google.api.http`` annotations of every ``foodmesh.v1`` service,
read at start-up; who may call each route from ``(foodmesh.v1.access)``. The gateway
checks the bearer token itself (401/403 before any upstream call) and passes it on, so
each service checks it again.

Before a request goes upstream: CORS preflights are answered, the client IP's and then
the caller's token bucket are charged (429 + Retry-After), the body is capped (413),
and the upstream deadline is the config's or the client's ``X-Request-Timeout`` /
``grpc-timeout`` header, capped. Streams resume from ``Last-Event-ID``.

:class:`Gateway` composes one object per use case and routes requests through them:
CORS (``_cors``), tokens (``_auth``), rate limits and deadlines (``_admission``),
``/healthz`` and ``/readyz`` (``_health``), docs and the customer page (``_static``),
transcoded unary calls (``_proxy``) and streams (``_streams``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import descriptor
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram

from foodmesh.core import telemetry
from foodmesh.core.auth import TokenVerifier
from foodmesh.core.metrics import serve_metrics
from foodmesh.core.settings import read_at_start
from gateway._admission import Admission
from gateway._auth import Authenticator
from gateway._config import GatewayConfig, service_key
from gateway._cors import Cors
from gateway._errors import GatewayError, error_info, upstream_error
from gateway._health import Health
from gateway._http import error_response, request_id
from gateway._limits import RateLimiter
from gateway._proxy import Proxy
from gateway._routes import RouteTable, foodmesh_services
from gateway._static import Static
from gateway._streams import Streams
from gateway._upstreams import Upstreams

__all__ = ["Gateway", "main", "serve"]

log = logging.getLogger("foodmesh.gateway")

_tracer = trace.get_tracer("foodmesh.gateway")
_ROUTE = web.RequestKey("foodmesh_route", str)
REQUESTS = Histogram(
    "foodmesh_gateway_request_seconds",
    "HTTP requests through the gateway (a stream: until it ends), by route template, "
    "method and HTTP status",
    ["route", "method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
_GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
_AIOHTTP_CODES = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class Gateway:
    """The gateway: the route table, the upstream channels, the settings, and one part per
    use case, wired into one aiohttp application by :meth:`app`."""

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        services: Sequence[descriptor.ServiceDescriptor] | None = None,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.config = config or GatewayConfig.from_env()
        found = list(services) if services is not None else foodmesh_services()
        self.services = self.config.exposed(found)
        self.routes = RouteTable.from_services(self.services)
        self.upstreams = Upstreams(self.config)
        c = self.config
        self.verifier = verifier or TokenVerifier.configured(
            secret=c.auth_secret, jwks_url=c.auth_jwks_url, issuer=c.auth_issuer,
            audience=c.auth_audience,
        )  # fmt: skip
        limiter: RateLimiter | None = None
        if c.redis_url and (c.ip_rate > 0 or c.token_rate > 0 or c.fail_rate > 0):
            limiter = RateLimiter(c.redis_url, namespace=c.rate_limit_namespace)
        elif c.ip_rate > 0 or c.token_rate > 0:
            log.info("rate limits off: no Redis (set FOODMESH_REDIS_URL)")
        self.cors = Cors(c, self.routes)
        self.auth = Authenticator(self.verifier)
        self.admission = Admission(c, limiter)
        self.health = Health(c, self.services, self.upstreams)
        self.static = Static(self.routes)
        self.proxy = Proxy(c, self.upstreams)
        self.streams = Streams(c, self.upstreams)

    @property
    def limiter(self) -> RateLimiter | None:
        """The rate limits' buckets (None: no limits)."""
        return self.admission.limiter

    @property
    def readyz_fanouts(self) -> int:
        """How many fan-outs to the upstreams ``/readyz`` has made."""
        return self.health.fanouts

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._http_errors]
        )
        app[_GATEWAY_KEY] = self
        app.router.add_get("/healthz", self.health.healthz, allow_head=True)
        app.router.add_get("/readyz", self.health.readyz, allow_head=True)
        app.router.add_get("/openapi.json", self.static.openapi_json, allow_head=False)
        app.router.add_get("/docs", self.static.docs, allow_head=False)
        app.router.add_get("/docs/{name}", self.static.docs_asset, allow_head=False)
        # The customer web page: static files that use only the public API below.
        app.router.add_get("/app", self.static.customer_app, allow_head=False)
        app.router.add_get("/app/", self.static.customer_app, allow_head=False)
        app.router.add_get("/app/{name}", self.static.customer_app, allow_head=False)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        app.on_response_prepare.append(self.cors.on_response_prepare)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _: web.Application) -> None:
        await self.upstreams.close()
        if self.limiter is not None:
            await self.limiter.close()

    @web.middleware
    async def _http_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """aiohttp's own 4xx (a fixed route's wrong method, an unknown asset) as Status JSON."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _AIOHTTP_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            err = GatewayError(
                code,
                f"{exc.reason} ({request.method} {request.path})",
                [error_info(exc.reason.upper().replace(" ", "_"))],
                http=exc.status,
                headers=headers,
            )
            return self._error_response(err, request_id(request))

    def _error_response(self, err: GatewayError, rid: str) -> web.Response:
        return error_response(err, rid, retry_after_s=self.config.retry_after_s)

    # ------------------------------------------------------------ the API

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One API request, in a server span that continues the caller's ``traceparent``
        (and that the upstream call continues in turn), timed by route."""
        started = time.perf_counter()
        span = _tracer.start_span(
            f"HTTP {request.method}", context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        )  # fmt: skip
        token = otel_context.attach(trace.set_span_in_context(span))
        status = 500
        try:
            response = await self._handle(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's "client closed request")
            raise
        finally:
            otel_context.detach(token)
            route = request.get(_ROUTE, "unmatched")
            if span.is_recording():
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            REQUESTS.labels(route, request.method, str(status)).observe(
                time.perf_counter() - started
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """CORS preflight, or: route, caller, rate limits, deadline, request, upstream call."""
        rid = request_id(request)
        try:
            if self.cors.is_preflight(request):
                return self.cors.preflight(request, rid)
            try:
                match = self.routes.match(request.method, request.raw_path)
                request[_ROUTE] = match.route.template.source
                principal = await self.auth.authorize(match.route, request)
            except GatewayError:
                # Failures before a caller is known fill a bucket of their own per address:
                # a flood of bad tokens from one client (or from behind one proxy) must
                # not use up the budget of the callers who present good ones.
                await self.admission.charge_failure(request)
                raise
            await self.admission.charge(principal, request)
            deadline_s = self.admission.deadline(match.route, request)
            msg = await self.proxy.build(match, request)
            metadata = self.proxy.metadata(request, rid)
            if match.route.server_streaming:
                release = self.streams.slot(match.route, principal, msg)
                try:
                    return await self.streams.relay(
                        match.route, msg, metadata, request, rid, deadline_s
                    )
                finally:
                    release()
            return await self.proxy.unary(match.route, msg, metadata, rid, deadline_s)
        except GatewayError as err:
            return self._error_response(err, rid)
        except grpc.aio.AioRpcError as err:
            return self._error_response(
                upstream_error(err, request.path, match.route.http_errors), rid
            )
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("request %s failed in the gateway", rid)
            internal = GatewayError(
                grpc.StatusCode.INTERNAL,
                f"internal gateway error (request id {rid})",
                [error_info("INTERNAL")],
            )
            return self._error_response(internal, rid)


# -------------------------------------------------------------------- running


@contextlib.asynccontextmanager
async def serve(
    config: GatewayConfig | None = None,
    *,
    services: Sequence[descriptor.ServiceDescriptor] | None = None,
    verifier: TokenVerifier | None = None,
) -> AsyncIterator[tuple[Gateway, int]]:
    """Runs the gateway on ``config.host:config.port`` (0: a free port); yields it and its port."""
    gw = Gateway(config, services=services, verifier=verifier)
    # handler_cancellation: a client that goes away cancels its handler, and so the
    # upstream call, at once (a stream would otherwise notice only at its next write).
    runner = web.AppRunner(
        gw.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, gw.config.host, gw.config.port)
        await site.start()
        port = int(runner.addresses[0][1])
        yield gw, port
    finally:
        await runner.cleanup()


async def _run(config: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    telemetry.setup_tracing("gateway", exporter=config.trace_exporter)
    if config.metrics_port >= 0:
        metrics = serve_metrics(config.host, config.metrics_port)
        log.info("gateway metrics on http://%s:%d/metrics", config.host,
                 metrics.server_address[1])  # fmt: skip
    async with serve(config) as (gw, port):
        keys = ", ".join(service_key(s) for s in gw.services)
        log.info("gateway listening on http://%s:%d (%s)", config.host, port, keys)
        print(f"gateway listening on http://{config.host}:{port}", flush=True)
        await stop.wait()


def main(host: str | None = None, port: int | None = None) -> int:
    """Runs the gateway until SIGTERM/SIGINT; settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = read_at_start("gateway", GatewayConfig.from_env)
    if config is None:
        return 1
    config = dataclasses.replace(
        config,
        host=host if host is not None else config.host,
        port=port if port is not None else config.port,
    )
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        print(f"gateway: cannot listen on {config.host}:{config.port}: {exc}", flush=True)
        return 1
    return 0
