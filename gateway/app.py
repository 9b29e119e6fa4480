"""The HTTP gateway: JSON REST and server-sent events in front of the gRPC mesh.

Routes come from the ``google.api.http`` annotations of every ``foodmesh.v1`` service,
read at start-up; who may call each route from ``(foodmesh.v1.access)``. The gateway
checks the bearer token itself (401/403 before any upstream call) and passes it on, so
each service checks it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import any_pb2, descriptor, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from foodmesh.auth import InvalidToken, Principal, verify_token
from gateway._config import ConfigError, GatewayConfig, service_key
from gateway._errors import (
    GatewayError,
    bad_request,
    error_info,
    http_status,
    status_from_proto,
    status_json,
    unpack_known,
)
from gateway._openapi import openapi
from gateway._routes import Match, Route, RouteTable, foodmesh_services
from gateway._transcode import FieldError, apply_body, apply_query, message_json, set_field

__all__ = ["Gateway", "main", "serve"]

log = logging.getLogger("foodmesh.gateway")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FORWARDED = ("traceparent", "tracestate")
_GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")


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
            ch = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.http2.max_pings_without_data", 0),
                ],
            )
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
    ) -> None:
        self.config = config or GatewayConfig.from_env()
        found = list(services) if services is not None else foodmesh_services()
        self.services = self.config.exposed(found)
        self.routes = RouteTable.from_services(self.services)
        self.upstreams = _Upstreams(self.config)
        self._openapi: bytes | None = None

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app[_GATEWAY_KEY] = self
        app.router.add_get("/healthz", self.healthz, allow_head=True)
        app.router.add_get("/readyz", self.readyz, allow_head=True)
        app.router.add_get("/openapi.json", self.openapi_json, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _: web.Application) -> None:
        await self.upstreams.close()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        async def check(svc: descriptor.ServiceDescriptor) -> tuple[str, str]:
            stub = health_pb2_grpc.HealthStub(self.upstreams.channel(svc))
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=svc.full_name), timeout=1.0
                )
            except grpc.aio.AioRpcError as exc:
                return svc.full_name, exc.code().name
            return svc.full_name, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        results = dict(await asyncio.gather(*(check(s) for s in self.services)))
        ready = all(v == "SERVING" for v in results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "upstreams": results},
            status=200 if ready else 503,
        )

    async def openapi_json(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            doc = openapi(self.routes)
            self._openapi = json.dumps(doc, separators=(",", ":")).encode()
        return web.Response(body=self._openapi, content_type="application/json")

    # ------------------------------------------------------------ transcode

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = _request_id(request)
        try:
            match = self.routes.match(request.method, request.raw_path)
            self._authorize(match.route, request)
            msg = await self._build(match, request)
            metadata = self._metadata(request, request_id)
            if match.route.server_streaming:
                return await self._stream(match.route, msg, metadata, request, request_id)
            return await self._unary(match.route, msg, metadata, request_id)
        except GatewayError as err:
            return self._error_response(err, request_id)
        except grpc.aio.AioRpcError as err:
            return self._error_response(self._upstream_error(err, request), request_id)
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

    def _error_response(self, err: GatewayError, request_id: str) -> web.Response:
        body = status_json(err.code, err.message, _with_request_id(err.details, request_id))
        headers = dict(err.headers)
        if err.status == 503:
            headers.setdefault("Retry-After", str(self.config.retry_after_s))
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="foodmesh"')
        return _json_response(err.status, body, request_id, **headers)

    def _upstream_error(self, err: grpc.aio.AioRpcError, request: web.Request) -> GatewayError:
        status = rpc_status.from_call(err)
        if status is not None:
            code, details = status_from_proto(status)
            return GatewayError(
                code, status.message, list(details), http=http_status(code, unpack_known(details))
            )
        code = err.code()
        message = err.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            message = "the service behind this route is unavailable; retry shortly"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = "the service behind this route did not answer in time"
        return GatewayError(code, message, [error_info(code.name, path=request.path)])

    def _authorize(self, route: Route, request: web.Request) -> Principal:
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
            principal = verify_token(self.config.auth_secret, token.strip())
        except InvalidToken as exc:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"invalid bearer token: {exc}",
                [error_info("INVALID_TOKEN")],
            ) from None
        if principal.role not in route.roles:
            allowed = ", ".join(sorted(route.roles))
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role!r} may not call {route.rpc.name} (allowed: {allowed})",
                [error_info("ROLE_NOT_ALLOWED", role=principal.role)],
            )
        return principal

    async def _build(self, match: Match, request: web.Request) -> Message:
        route = match.route
        msg = message_factory.GetMessageClass(route.rpc.input_type)()
        if route.body:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request body is larger than {self.config.max_body_bytes} bytes",
                    [error_info("BODY_TOO_LARGE", limit=str(self.config.max_body_bytes))],
                    http=413,
                ) from None
            apply_body(msg, route.body, raw)
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
        apply_query(msg, query, skip=match.path_values)
        self._idempotency(msg, request)
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
        md.extend((h, request.headers[h]) for h in _FORWARDED if h in request.headers)
        return tuple(md)

    async def _unary(
        self,
        route: Route,
        msg: Message,
        metadata: tuple[tuple[str, str], ...],
        request_id: str,
    ) -> web.Response:
        reply = await self.upstreams.unary(route)(
            msg, timeout=self.config.deadline_s, metadata=metadata
        )
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
    ) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        call = self.upstreams.stream(route)(
            msg, timeout=self.config.stream_deadline_s, metadata=metadata
        )
        try:
            if "text/event-stream" in accept:
                return await _Relay(self, route, request, request_id, sse=True).run(call)
            if _wants_snapshot(accept):
                return await self._snapshot(route, call, request_id)
            return await _Relay(self, route, request, request_id, sse=False).run(call)
        finally:
            call.cancel()

    async def _snapshot(
        self,
        route: Route,
        call: grpc.aio.UnaryStreamCall[Message, Message],
        request_id: str,
    ) -> web.Response:
        try:
            first = await asyncio.wait_for(call.read(), self.config.deadline_s)
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

    async def _write(self, chunk: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write(chunk)

    async def _message(self, msg: Message) -> None:
        self.sent += 1
        data = message_json(msg, response_body=self.route.response_body)
        if self.sse:
            await self._write(b"id: %d\ndata: %s\n\n" % (self.sent, data))
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
            error = self.gw._upstream_error(err, self.request)
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
) -> AsyncIterator[tuple[Gateway, int]]:
    """Runs the gateway on ``config.host:config.port`` (0: a free port); yields it and its port."""
    gw = Gateway(config, services=services)
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
    async with serve(config) as (gw, port):
        keys = ", ".join(service_key(s) for s in gw.services)
        log.info("gateway listening on http://%s:%d (%s)", config.host, port, keys)
        print(f"gateway listening on http://{config.host}:{port}", flush=True)
        await stop.wait()


def main(host: str | None = None, port: int | None = None) -> int:
    """Runs the gateway until SIGTERM/SIGINT; settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        print(f"gateway: {exc}", flush=True)
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
