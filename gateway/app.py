"""The HTTP gateway: JSON REST and server-sent events in front of the gRPC mesh.

Routes come from the ``google.api.http`` annotations of every ``foodmesh.v1`` service,
read at start-up; who may call each route from ``(foodmesh.v1.access)``. The gateway
checks the bearer token itself (401/403 before any upstream call) and passes it on, so
each service checks it again.

Before a request goes upstream: CORS preflights are answered, the client IP's and then
the caller's token bucket are charged (429 + Retry-After), the body is capped (413),
and the upstream deadline is the config's or the client's ``X-Request-Timeout`` /
``grpc-timeout`` header, capped. Streams resume from ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from google.protobuf import any_pb2, descriptor, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Gauge, Histogram

from foodmesh.core import telemetry
from foodmesh.core.auth import InvalidToken, Principal, TokenVerifier
from foodmesh.core.metrics import serve_metrics
from foodmesh.core.settings import read_at_start
from foodmesh.core.streams import StreamSlots, TooManyStreams
from foodmesh.v1 import options_pb2
from gateway._config import GatewayConfig, service_key
from gateway._docs import DOCS_HTML, DOCS_INIT_JS, asset
from gateway._errors import (
    GatewayError,
    bad_request,
    error_info,
    http_status,
    status_from_proto,
    status_json,
    unpack_known,
)
from gateway._limits import Decision, RateLimiter, parse_timeout
from gateway._openapi import openapi
from gateway._routes import Match, Route, RouteTable, foodmesh_services
from gateway._transcode import FieldError, apply_body, apply_query, message_json, set_field

__all__ = ["Gateway", "main", "serve"]

log = logging.getLogger("foodmesh.gateway")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_tracer = trace.get_tracer("foodmesh.gateway")
_ROUTE = web.RequestKey("foodmesh_route", str)
REQUESTS = Histogram(
    "foodmesh_gateway_request_seconds",
    "HTTP requests through the gateway (a stream: until it ends), by route template, "
    "method and HTTP status",
    ["route", "method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)
STREAMS_OPEN = Gauge("foodmesh_gateway_streams_open", "Server-sent event / NDJSON streams open")
_TIMEOUT_HEADERS = ("X-Request-Timeout", "grpc-timeout")
#: The request size of an RPC that declares no ``(foodmesh.v1.max_request_bytes)``: ids
#: and scalars (the services' own limit for such requests).
_UNDECLARED_REQUEST_BYTES = 64 * 1024
#: JSON spells field names and numbers out: room for it over the protobuf size.
_JSON_PER_PROTO_BYTE = 4
#: Bodies larger than this are parsed in a worker thread.
_THREAD_BODY_BYTES = 16 * 1024
#: Request headers a browser may send cross-origin (answered in preflights).
_CORS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, X-Request-Id, X-Request-Timeout, "
    "grpc-timeout, Last-Event-ID, traceparent, tracestate"
)
_CORS_EXPOSE_HEADERS = "X-Request-Id, Retry-After, Allow"
_GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
_APP_DIR = Path(__file__).parent / "static" / "app"
_APP_FILES = {f.name: f for f in _APP_DIR.glob("*") if f.suffix in (".html", ".js", ".css")}
_AIOHTTP_CODES = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _json_response(status: int, body: bytes, request_id: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=None if status == 204 else body,
        content_type=None if status == 204 else "application/json",
        headers={"X-Request-Id": request_id, **headers},
    )


def _with_request_id(details: list[Any], request_id: str) -> list[Any]:
    """The details with a RequestInfo naming the request (the service's own, if it sent one)."""
    for d in details:
        if isinstance(d, error_details_pb2.RequestInfo) or (
            isinstance(d, any_pb2.Any) and d.Is(error_details_pb2.RequestInfo.DESCRIPTOR)
        ):
            return details
    return [*details, error_details_pb2.RequestInfo(request_id=request_id)]


class _Upstreams:
    """One channel per upstream target, reused by every call; multicallables cached."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.channels: dict[str, grpc.aio.Channel] = {}
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Message, Message]] = {}

    def channel(self, service: descriptor.ServiceDescriptor) -> grpc.aio.Channel:
        target = self.config.target(service)
        ch = self.channels.get(target)
        if ch is None:
            options = [
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                # an error's details ride in the trailers: room for a long BadRequest
                ("grpc.max_metadata_size", 64 * 1024),
            ]
            credentials = self.config.tls.channel_credentials()
            if credentials is None:
                ch = grpc.aio.insecure_channel(target, options=options)
            else:
                ch = grpc.aio.secure_channel(target, credentials, options=options)
            self.channels[target] = ch
        return ch

    def unary(self, route: Route) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        mc = self._unary.get(route.grpc_path)
        if mc is None:
            out = message_factory.GetMessageClass(route.rpc.output_type)
            mc = self.channel(route.service).unary_unary(
                route.grpc_path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out.FromString,
            )
            self._unary[route.grpc_path] = mc
        return mc

    def stream(self, route: Route) -> grpc.aio.UnaryStreamMultiCallable[Message, Message]:
        mc = self._stream.get(route.grpc_path)
        if mc is None:
            out = message_factory.GetMessageClass(route.rpc.output_type)
            mc = self.channel(route.service).unary_stream(
                route.grpc_path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out.FromString,
            )
            self._stream[route.grpc_path] = mc
        return mc

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
        self.channels.clear()
        self._unary.clear()
        self._stream.clear()


class Gateway:
    """The gateway's state: the route table, the upstream channels, the settings."""

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
        self.upstreams = _Upstreams(self.config)
        self._openapi: bytes | None = None
        c = self.config
        self.verifier = verifier or TokenVerifier.configured(
            secret=c.auth_secret, jwks_url=c.auth_jwks_url, issuer=c.auth_issuer,
            audience=c.auth_audience,
        )  # fmt: skip
        self._principals: dict[str, tuple[Principal, float]] = {}
        self.streams = StreamSlots(
            per_caller=c.max_streams_per_caller, per_order=c.max_streams_per_order, unit="route"
        )
        self._trusted = tuple(ipaddress.ip_network(n) for n in c.trusted_proxies)
        # /readyz is open: one fan-out to the upstreams serves every caller for a second.
        self._ready: tuple[float, dict[str, str]] | None = None
        self._ready_lock = asyncio.Lock()
        self.readyz_fanouts = 0
        self.limiter: RateLimiter | None = None
        if c.redis_url and (c.ip_rate > 0 or c.token_rate > 0 or c.fail_rate > 0):
            self.limiter = RateLimiter(c.redis_url, namespace=c.rate_limit_namespace)
        elif c.ip_rate > 0 or c.token_rate > 0:
            log.info("rate limits off: no Redis (set FOODMESH_REDIS_URL)")

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._http_errors]
        )
        app[_GATEWAY_KEY] = self
        app.router.add_get("/healthz", self.healthz, allow_head=True)
        app.router.add_get("/readyz", self.readyz, allow_head=True)
        app.router.add_get("/openapi.json", self.openapi_json, allow_head=False)
        app.router.add_get("/docs", self.docs, allow_head=False)
        app.router.add_get("/docs/{name}", self.docs_asset, allow_head=False)
        # The customer web page: static files that use only the public API below.
        app.router.add_get("/app", self.customer_app, allow_head=False)
        app.router.add_get("/app/", self.customer_app, allow_head=False)
        app.router.add_get("/app/{name}", self.customer_app, allow_head=False)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        app.on_response_prepare.append(self._cors_headers)
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
            return self._error_response(err, _request_id(request))

    async def _cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and self.config.cors_allows(origin):
            response.headers["Access-Control-Allow-Origin"] = (
                "*" if "*" in self.config.cors_origins else origin
            )
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")

    async def docs(self, request: web.Request) -> web.Response:
        return web.Response(text=DOCS_HTML, content_type="text/html")

    async def docs_asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "init.js":
            return web.Response(text=DOCS_INIT_JS, content_type="application/javascript")
        path: Path | None = asset(name)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    async def customer_app(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not name:
            raise web.HTTPFound("/app/index.html")
        path = _APP_FILES.get(name)
        if path is None:  # a fixed set of files: no path from the request reaches the disk
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        results = await self._upstream_health()
        ready = all(v == "SERVING" for v in results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "upstreams": results},
            status=200 if ready else 503,
        )

    async def _upstream_health(self) -> dict[str, str]:
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
            self.readyz_fanouts += 1
            results = dict(await asyncio.gather(*(check(s) for s in self.services)))
            self._ready = (time.monotonic() + self.config.readyz_cache_s, results)
            return results

    async def openapi_json(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            doc = openapi(self.routes)
            self._openapi = json.dumps(doc, separators=(",", ":")).encode()
        return web.Response(body=self._openapi, content_type="application/json")

    # ------------------------------------------------------------ transcode

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
        request_id = _request_id(request)
        try:
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return self._preflight(request, request_id)
            try:
                match = self.routes.match(request.method, request.raw_path)
                request[_ROUTE] = match.route.template.source
                principal = await self._authorize(match.route, request)
            except GatewayError:
                # Failures before a caller is known fill a bucket of their own per address:
                # a flood of bad tokens from one client (or from behind one proxy) must
                # not use up the budget of the callers who present good ones.
                await self._charge_failure(request)
                raise
            await self._charge(principal, request)
            deadline_s = self._timeout(match.route, request)
            msg = await self._build(match, request)
            metadata = self._metadata(request, request_id)
            if match.route.server_streaming:
                release = self._stream_slot(match.route, principal, msg)
                try:
                    return await self._stream(
                        match.route, msg, metadata, request, request_id, deadline_s
                    )
                finally:
                    release()
            return await self._unary(match.route, msg, metadata, request_id, deadline_s)
        except GatewayError as err:
            return self._error_response(err, request_id)
        except grpc.aio.AioRpcError as err:
            return self._error_response(
                self._upstream_error(err, request, match.route.http_errors), request_id
            )
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("request %s failed in the gateway", request_id)
            internal = GatewayError(
                grpc.StatusCode.INTERNAL,
                f"internal gateway error (request id {request_id})",
                [error_info("INTERNAL")],
            )
            return self._error_response(internal, request_id)

    # ---------------------------------------------------------------- limits

    def _client_ip(self, request: web.Request) -> str:
        """The client's address: the right-most ``X-Forwarded-For`` hop not a trusted proxy.

        Entries left of it were written by the client and prove nothing; without trust
        the peer's address is the client's.
        """
        peer = request.remote or "unknown"
        if not self._trusted and not self.config.trust_forwarded_for:
            return peer
        hops = [
            h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
        ]
        client = peer
        if self._trusted and not self._is_trusted(peer):
            return peer  # not through our proxies: whatever it says is its own
        for hop in reversed([h for h in hops if h]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # garbage: the last hop we could believe
            client = hop
            if not self._trusted or not self._is_trusted(hop):
                return client  # trust_forwarded_for alone: the peer is the one proxy
        return client

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    async def _charge_failure(self, request: web.Request) -> None:
        if self.limiter is None or self.config.fail_rate <= 0:
            return
        self._limited(await self.limiter.take(
            "fail", self._client_ip(request),
            rate=self.config.fail_rate, burst=self.config.fail_burst,
        ))  # fmt: skip

    async def _charge(self, principal: Principal, request: web.Request) -> None:
        if self.limiter is None:
            return
        checks: list[Awaitable[Decision]] = []
        if self.config.ip_rate > 0:
            checks.append(self.limiter.take(
                "ip", self._client_ip(request),
                rate=self.config.ip_rate, burst=self.config.ip_burst,
            ))  # fmt: skip
        if self.config.token_rate > 0:
            checks.append(self.limiter.take(
                "caller", f"{principal.role}:{principal.subject}",
                rate=self.config.token_rate, burst=self.config.token_burst,
            ))  # fmt: skip
        for decision in await asyncio.gather(*checks):
            self._limited(decision)

    def _stream_slot(self, route: Route, principal: Principal, msg: Message) -> Callable[[], None]:
        """A slot among the caller's open streams; 429 when it holds too many."""
        order_id = getattr(msg, "order_id", "")  # a stream about one order counts for it too
        try:
            return self.streams.take(
                route.grpc_path, f"{principal.role}:{principal.subject}", str(order_id)
            )
        except TooManyStreams as exc:
            wait = self.config.retry_after_s
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{exc.message}, or retry in {wait} s",
                [error_info("TOO_MANY_STREAMS")],
                headers={"Retry-After": str(wait)},
            ) from None

    @staticmethod
    def _limited(decision: Decision) -> None:
        if decision.allowed:
            return
        wait = max(1, math.ceil(decision.retry_after_s))
        who = {"ip": "this client address", "fail": "this client address (failed requests)"}.get(
            decision.scope, "this caller"
        )
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(decision.retry_after_s * 1e9))
        raise GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"too many requests from {who} (limit {decision.limit:g}/s); retry in {wait} s",
            [error_info("RATE_LIMITED", scope=decision.scope, limit=f"{decision.limit:g}"), retry],
            headers={"Retry-After": str(wait)},
        )

    def _timeout(self, route: Route, request: web.Request) -> float:
        """The upstream deadline: the client's header (capped) or the configured one."""
        cap = (
            self.config.stream_deadline_s if route.server_streaming else self.config.max_deadline_s
        )
        default = (
            self.config.stream_deadline_s if route.server_streaming else self.config.deadline_s
        )
        for name in _TIMEOUT_HEADERS:
            raw = request.headers.get(name)
            if raw is None:
                continue
            try:
                return min(parse_timeout(raw), cap)
            except ValueError as exc:
                raise bad_request(f"bad {name} header: {exc}", [(name, str(exc))]) from None
        return default

    def _preflight(self, request: web.Request, request_id: str) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not origin or not self.config.cors_allows(origin):
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"cross-origin requests from {origin or 'an unnamed origin'} are not allowed",
                [error_info("CORS_ORIGIN_NOT_ALLOWED", origin=origin)],
            )
        wanted = request.headers["Access-Control-Request-Method"].upper()
        self.routes.match(wanted, request.raw_path)  # 404 / 405 when it does not exist
        return web.Response(
            status=204,
            headers={
                "X-Request-Id": request_id,
                "Access-Control-Allow-Methods": wanted,
                "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": str(self.config.cors_max_age_s),
            },
        )

    def _error_response(self, err: GatewayError, request_id: str) -> web.Response:
        body = status_json(err.code, err.message, _with_request_id(err.details, request_id))
        headers = dict(err.headers)
        if err.status == 503:
            headers.setdefault("Retry-After", str(self.config.retry_after_s))
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="foodmesh"')
        return _json_response(err.status, body, request_id, **headers)

    def _upstream_error(
        self,
        err: grpc.aio.AioRpcError,
        request: web.Request,
        rules: Sequence[options_pb2.HttpErrorRule] = (),
    ) -> GatewayError:
        try:
            status = rpc_status.from_call(err)
        except ValueError:  # details that disagree with the call's code (trailers cut short)
            status = None
        if status is not None:
            code, details = status_from_proto(status)
            return GatewayError(
                code,
                status.message,
                list(details),
                http=http_status(code, unpack_known(details), rules),
            )
        code = err.code()
        message = err.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            message = "the service behind this route is unavailable; retry shortly"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = "the service behind this route did not answer in time"
        return GatewayError(code, message, [error_info(code.name, path=request.path)])

    async def _authorize(self, route: Route, request: web.Request) -> Principal:
        if not route.roles:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{route.rpc.full_name} may not be called by anybody",
                [error_info("ROLE_NOT_ALLOWED")],
            )
        header = request.headers.get("Authorization", "")
        if not header:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this call needs a bearer token (Authorization: Bearer <token>)",
                [error_info("NO_TOKEN")],
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization must be 'Bearer <token>'",
                [error_info("INVALID_TOKEN")],
            )
        try:
            principal = await self._verify(token.strip())
        except InvalidToken as exc:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"invalid bearer token: {exc}",
                [error_info("INVALID_TOKEN")],
            ) from None
        if principal.role == "service":  # internal identities never come from outside
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "service identities may not call through the gateway",
                [error_info("ROLE_NOT_ALLOWED", role=principal.role)],
            )
        if principal.role not in route.roles:
            allowed = ", ".join(sorted(route.roles))
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role!r} may not call {route.rpc.name} (allowed: {allowed})",
                [error_info("ROLE_NOT_ALLOWED", role=principal.role)],
            )
        return principal

    async def _verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._principals.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await self.verifier.verify_async(token)
        if len(self._principals) >= 10_000:
            self._principals.clear()
        # Checked again at least every 30 s, and never kept past the token's expiry.
        self._principals[token] = (principal, min(now + 30.0, principal.expires_at))
        return principal

    def _body_limit(self, route: Route) -> int:
        """The largest JSON body ``route`` takes: its RPC's declared size, with room for JSON."""
        declared = route.max_request_bytes or _UNDECLARED_REQUEST_BYTES
        return min(self.config.max_body_bytes, _JSON_PER_PROTO_BYTE * declared)

    async def _build(self, match: Match, request: web.Request) -> Message:
        route = match.route
        msg = message_factory.GetMessageClass(route.rpc.input_type)()
        if route.body:
            limit = self._body_limit(route)
            too_large = GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request body is larger than {limit} bytes (the most {route.rpc.name} takes)",
                [error_info("BODY_TOO_LARGE", limit=str(limit))],
                http=413,
            )
            if (request.content_length or 0) > limit:
                raise too_large  # before reading a byte of it
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise too_large from None
            if len(raw) > limit:  # a chunked body, which announces no length
                raise too_large
            if len(raw) > _THREAD_BODY_BYTES:
                # Parsing a large body is CPU work: in a worker thread, so that the loop
                # goes on answering everybody else meanwhile.
                await asyncio.to_thread(apply_body, msg, route.body, raw, bound=match.path_values)
            else:
                apply_body(msg, route.body, raw, bound=match.path_values)
        problems: list[tuple[str, str]] = []
        for path, value in match.path_values.items():
            try:
                set_field(msg, path, value)
            except FieldError as exc:
                problems.append((exc.field, exc.description))
        if problems:
            raise bad_request("bad path: " + "; ".join(d for _, d in problems), problems)
        query = list(request.rel_url.query.items())
        if query and route.body == "*":
            names = sorted({k for k, _ in query})
            raise bad_request(
                "query parameters are not accepted here (the body carries the request): "
                + ", ".join(names),
                [(n, "not accepted as a query parameter") for n in names],
            )
        bound = [*match.path_values, *([route.body] if route.body not in ("", "*") else [])]
        apply_query(msg, query, bound=bound)
        self._idempotency(msg, request)
        if route.server_streaming:
            _resume(msg, request)
        return msg

    @staticmethod
    def _idempotency(msg: Message, request: web.Request) -> None:
        key = request.headers.get("Idempotency-Key")
        if key is None or "idempotency_key" not in msg.DESCRIPTOR.fields_by_name:
            return
        current = getattr(msg, "idempotency_key", "")
        if current and current != key:
            raise bad_request(
                "the Idempotency-Key header and the body's idempotency_key differ",
                [("idempotency_key", "differs from the Idempotency-Key header")],
            )
        msg.idempotency_key = key  # type: ignore[attr-defined]

    @staticmethod
    def _metadata(request: web.Request, request_id: str) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = [("x-request-id", request_id)]
        auth = request.headers.get("Authorization")
        if auth:
            md.append(("authorization", auth))
        # The gateway's span (current here) is the upstream call's parent.
        md.extend(telemetry.inject_headers().items())
        return tuple(md)

    async def _unary(
        self,
        route: Route,
        msg: Message,
        metadata: tuple[tuple[str, str], ...],
        request_id: str,
        deadline_s: float,
    ) -> web.Response:
        reply = await self.upstreams.unary(route)(msg, timeout=deadline_s, metadata=metadata)
        status = route.success_code
        body = b"" if status == 204 else message_json(reply, response_body=route.response_body)
        return _json_response(status, body, request_id)

    # -------------------------------------------------------------- streams

    async def _stream(
        self,
        route: Route,
        msg: Message,
        metadata: tuple[tuple[str, str], ...],
        request: web.Request,
        request_id: str,
        deadline_s: float,
    ) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        call = self.upstreams.stream(route)(msg, timeout=deadline_s, metadata=metadata)
        STREAMS_OPEN.inc()
        try:
            if "text/event-stream" in accept:
                return await _Relay(self, route, request, request_id, sse=True).run(call)
            if _wants_snapshot(accept):
                return await self._snapshot(route, call, request_id)
            return await _Relay(self, route, request, request_id, sse=False).run(call)
        finally:
            STREAMS_OPEN.dec()
            call.cancel()

    async def _snapshot(
        self,
        route: Route,
        call: grpc.aio.UnaryStreamCall[Message, Message],
        request_id: str,
    ) -> web.Response:
        try:
            async with asyncio.timeout(self.config.deadline_s):
                first = await call.read()
        except TimeoutError:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the stream sent nothing in time",
                [error_info("DEADLINE_EXCEEDED")],
            ) from None
        if first is grpc.aio.EOF:
            raise GatewayError(grpc.StatusCode.NOT_FOUND, "the stream ended without a message", [])
        assert isinstance(first, Message)
        body = message_json(first, response_body=route.response_body)
        return _json_response(route.success_code, body, request_id)


# ------------------------------------------------------------- stream resume

#: The request field that ``Last-Event-ID`` sets: resume after this timeline position.
_RESUME_FIELD = "after_seq"
_INT_TYPES = frozenset({
    descriptor.FieldDescriptor.TYPE_INT64, descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_UINT32,
})  # fmt: skip
_seq_paths_cache: dict[str, tuple[tuple[str, ...], ...]] = {}


def resume_field(desc: descriptor.Descriptor) -> descriptor.FieldDescriptor | None:
    """The request's resume field (``after_seq``), if the stream can resume."""
    f = desc.fields_by_name.get(_RESUME_FIELD)
    if f is None or f.type not in _INT_TYPES or f.is_repeated:
        return None
    return f


def _resume(msg: Message, request: web.Request) -> None:
    raw = request.headers.get("Last-Event-ID")
    f = resume_field(cast(descriptor.Descriptor, msg.DESCRIPTOR))
    if raw is None or f is None:
        return  # streams without one send whole snapshots: a reconnect misses nothing
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(
            f"bad Last-Event-ID {raw[:40]!r}: expected the id of an event of this stream",
            [("Last-Event-ID", "not an event id (a non-negative integer)")],
        )
    if getattr(msg, f.name) == 0:  # an explicit ?after_seq= wins
        setattr(msg, f.name, int(raw))


def _seq_paths(desc: descriptor.Descriptor, depth: int = 0) -> tuple[tuple[str, ...], ...]:
    """Paths to the integer ``seq`` fields of a message type (timeline positions)."""
    cached = _seq_paths_cache.get(desc.full_name) if depth == 0 else None
    if cached is not None:
        return cached
    found: list[tuple[str, ...]] = []
    for f in desc.fields:
        if f.name == "seq" and f.type in _INT_TYPES and not f.is_repeated:
            found.append((f.name,))
        elif f.message_type is not None and depth < 3 and not f.message_type.GetOptions().map_entry:
            found += [(f.name, *p) for p in _seq_paths(f.message_type, depth + 1)]
    out = tuple(sorted(found, key=len))
    if depth == 0:
        _seq_paths_cache[desc.full_name] = out
    return out


def _seq_at(msg: Message, path: tuple[str, ...]) -> int:
    name, rest = path[0], path[1:]
    if not rest:
        return int(getattr(msg, name))
    value = getattr(msg, name)
    if msg.DESCRIPTOR.fields_by_name[name].is_repeated:
        return max((_seq_at(v, rest) for v in value), default=0)
    return _seq_at(value, rest) if msg.HasField(name) else 0


def event_id(msg: Message) -> int:
    """A message's SSE event id: the timeline position it reports (0: none).

    The shallowest ``seq`` that is set wins: a change's own (``change.seq``) before the
    snapshot's (the highest of ``order.timeline[].seq``), which may be ahead of it.
    """
    for path in _seq_paths(cast(descriptor.Descriptor, msg.DESCRIPTOR)):
        seq = _seq_at(msg, path)
        if seq > 0:
            return seq
    return 0


def _wants_snapshot(accept: str) -> bool:
    """``Accept: application/json`` (and no NDJSON) asks for the stream's first message."""
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    ndjson = {"application/x-ndjson", "application/jsonl", "application/json-seq"}
    return "application/json" in kinds and not ndjson.intersection(kinds)


class _Relay:
    """Relays a server stream as SSE or NDJSON; a gone client cancels the upstream call."""

    def __init__(
        self, gw: Gateway, route: Route, request: web.Request, request_id: str, *, sse: bool
    ) -> None:
        self.gw = gw
        self.route = route
        self.request = request
        self.request_id = request_id
        self.sse = sse
        self.resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request_id,
            },
        )
        self.sent = 0
        # Streams without timeline positions number their events, on from the last seen.
        last = request.headers.get("Last-Event-ID", "").strip()
        self.counter = int(last) if last.isdigit() and len(last) <= 18 else 0

    async def _write(self, chunk: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write(chunk)

    async def _message(self, msg: Message) -> None:
        self.sent += 1
        data = message_json(msg, response_body=self.route.response_body)
        if self.sse:
            seq = event_id(msg)
            if seq <= 0:
                self.counter += 1
                seq = self.counter
            await self._write(b"id: %d\ndata: %s\n\n" % (seq, data))
        else:
            await self._write(data + b"\n")

    async def run(self, call: grpc.aio.UnaryStreamCall[Message, Message]) -> web.StreamResponse:
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({pending}, timeout=self.gw.config.heartbeat_s)
                if not done:
                    if self.sse:
                        await self._write(b": keep-alive\n\n")
                    continue
                item = pending.result()
                pending = None
                if item is grpc.aio.EOF:
                    break
                await self._message(item)
        except grpc.aio.AioRpcError as err:
            error = self.gw._upstream_error(err, self.request, self.route.http_errors)
            if not self.resp.prepared:
                raise error from None  # nothing sent yet: a plain HTTP error
            body = status_json(
                error.code, error.message, _with_request_id(error.details, self.request_id)
            )
            with contextlib.suppress(ConnectionError):
                if self.sse:
                    await self._write(b"event: error\ndata: %s\n\n" % body)
                else:
                    await self._write(b'{"error":%s}\n' % body)
        except ConnectionError:
            log.debug("stream client went away")
        finally:
            if pending is not None:
                pending.cancel()
            call.cancel()
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        with contextlib.suppress(ConnectionError):
            await self.resp.write_eof()
        return self.resp


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
