"""Server streams over HTTP: relayed as server-sent events or NDJSON (or their first message
as JSON), resumed from ``Last-Event-ID``, bounded by stream slots per caller and per order.

A client that goes away cancels the upstream call; an upstream that fails mid-stream ends
the relay with an ``error`` event (before the first byte, it is a plain HTTP error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import grpc
from aiohttp import web
from google.protobuf import descriptor
from google.protobuf.message import Message
from prometheus_client import Gauge

from foodmesh.core.auth import Principal
from foodmesh.core.streams import StreamSlots, TooManyStreams
from foodmesh.v1 import options_pb2
from gateway._config import GatewayConfig
from gateway._errors import (
    GatewayError,
    bad_request,
    error_info,
    status_json,
    upstream_error,
    with_request_id,
)
from gateway._http import json_response
from gateway._routes import Route
from gateway._transcode import message_json
from gateway._upstreams import Upstreams

__all__ = ["STREAMS_OPEN", "Streams", "event_id", "resume", "resume_field"]

log = logging.getLogger("foodmesh.gateway")

STREAMS_OPEN = Gauge("foodmesh_gateway_streams_open", "Server-sent event / NDJSON streams open")


class Streams:
    """The gateway's open streams: their slots, and the relay of each."""

    def __init__(self, config: GatewayConfig, upstreams: Upstreams) -> None:
        self.config = config
        self.upstreams = upstreams
        self.slots = StreamSlots(
            per_caller=config.max_streams_per_caller,
            per_order=config.max_streams_per_order,
            unit="route",
        )

    def slot(self, route: Route, principal: Principal, msg: Message) -> Callable[[], None]:
        """A slot among the caller's open streams; 429 when it holds too many."""
        order_id = getattr(msg, "order_id", "")  # a stream about one order counts for it too
        try:
            return self.slots.take(
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

    async def relay(
        self,
        route: Route,
        msg: Message,
        metadata: tuple[tuple[str, str], ...],
        request: web.Request,
        request_id: str,
        deadline_s: float,
    ) -> web.StreamResponse:
        """The upstream stream, in the form the client's ``Accept`` asks for."""
        accept = request.headers.get("Accept", "")
        call = self.upstreams.stream(route)(msg, timeout=deadline_s, metadata=metadata)
        STREAMS_OPEN.inc()
        try:
            if "text/event-stream" in accept:
                return await _Relay(self.config, route, request, request_id, sse=True).run(call)
            if _wants_snapshot(accept) or (
                _snapshot_by_default(route) and not _wants_ndjson(accept)
            ):
                return await self._snapshot(route, call, request_id)
            return await _Relay(self.config, route, request, request_id, sse=False).run(call)
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
        return json_response(route.success_code, body, request_id)


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


def resume(msg: Message, request: web.Request) -> None:
    """Sets the request's resume field from ``Last-Event-ID`` (400 for one not an event id)."""
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


_NDJSON = {"application/x-ndjson", "application/jsonl", "application/json-seq"}


def _snapshot_by_default(route: Route) -> bool:
    """``(foodmesh.v1.http_snapshot_by_default)``: a GET documented as one JSON reply."""
    return bool(route.rpc.GetOptions().Extensions[options_pb2.http_snapshot_by_default])


def _wants_ndjson(accept: str) -> bool:
    kinds = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return bool(_NDJSON & kinds)


def _wants_snapshot(accept: str) -> bool:
    """``Accept: application/json`` (and no NDJSON) asks for the stream's first message."""
    kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    ndjson = {"application/x-ndjson", "application/jsonl", "application/json-seq"}
    return "application/json" in kinds and not ndjson.intersection(kinds)


class _Relay:
    """Relays a server stream as SSE or NDJSON; a gone client cancels the upstream call."""

    def __init__(
        self,
        config: GatewayConfig,
        route: Route,
        request: web.Request,
        request_id: str,
        *,
        sse: bool,
    ) -> None:
        self.config = config
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
                done, _ = await asyncio.wait({pending}, timeout=self.config.heartbeat_s)
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
            error = upstream_error(err, self.request.path, self.route.http_errors)
            if not self.resp.prepared:
                raise error from None  # nothing sent yet: a plain HTTP error
            body = status_json(
                error.code, error.message, with_request_id(error.details, self.request_id)
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
