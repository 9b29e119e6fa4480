"""Transcoding: an HTTP request into the RPC's request message (path, query, body, headers),
and a unary call's reply back into JSON.

The body is capped by the RPC's declared size (413 before a byte is read when the
length says so); large bodies are parsed in a worker thread.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message

from foodmesh.core import telemetry
from gateway._config import GatewayConfig
from gateway._errors import GatewayError, bad_request, error_info
from gateway._http import json_response
from gateway._routes import Match, Route
from gateway._streams import resume
from gateway._transcode import FieldError, apply_body, apply_query, message_json, set_field
from gateway._upstreams import Upstreams

__all__ = ["Metadata", "Proxy"]

Metadata = tuple[tuple[str, str], ...]

#: The request size of an RPC that declares no ``(foodmesh.v1.max_request_bytes)``: ids
#: and scalars (the services' own limit for such requests).
_UNDECLARED_REQUEST_BYTES = 64 * 1024
#: JSON spells field names and numbers out: room for it over the protobuf size.
_JSON_PER_PROTO_BYTE = 4
#: Bodies larger than this are parsed in a worker thread.
_THREAD_BODY_BYTES = 16 * 1024


class Proxy:
    """Requests built from HTTP, unary calls made upstream."""

    def __init__(self, config: GatewayConfig, upstreams: Upstreams) -> None:
        self.config = config
        self.upstreams = upstreams

    def body_limit(self, route: Route) -> int:
        """The largest JSON body ``route`` takes: its RPC's declared size, with room for JSON."""
        declared = route.max_request_bytes or _UNDECLARED_REQUEST_BYTES
        return min(self.config.max_body_bytes, _JSON_PER_PROTO_BYTE * declared)

    async def build(self, match: Match, request: web.Request) -> Message:
        """The RPC's request: the body, then the path's values, the query, the headers."""
        route = match.route
        msg = message_factory.GetMessageClass(route.rpc.input_type)()
        if route.body:
            limit = self.body_limit(route)
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
        _idempotency(msg, request)
        if route.server_streaming:
            resume(msg, request)
        return msg

    @staticmethod
    def metadata(request: web.Request, request_id: str) -> Metadata:
        """What goes upstream with the call: the request id, the token, the trace context."""
        md: list[tuple[str, str]] = [("x-request-id", request_id)]
        auth = request.headers.get("Authorization")
        if auth:
            md.append(("authorization", auth))
        # The gateway's span (current here) is the upstream call's parent.
        md.extend(telemetry.inject_headers().items())
        return tuple(md)

    async def unary(
        self, route: Route, msg: Message, metadata: Metadata, request_id: str, deadline_s: float
    ) -> web.Response:
        reply = await self.upstreams.unary(route)(msg, timeout=deadline_s, metadata=metadata)
        status = route.success_code
        body = b"" if status == 204 else message_json(reply, response_body=route.response_body)
        return json_response(status, body, request_id)


def _idempotency(msg: Message, request: web.Request) -> None:
    if "idempotency_key" not in msg.DESCRIPTOR.fields_by_name:
        return
    key = request.headers.get("Idempotency-Key")
    if key is None:
        if not getattr(msg, "idempotency_key", "") and request.method == "POST":
            # The design's own example sends no key: the request is then a new one (as any
            # POST), its retry another; a client that retries sends the header (or the field).
            msg.idempotency_key = f"gw-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
        return
    current = getattr(msg, "idempotency_key", "")
    if current and current != key:
        raise bad_request(
            "the Idempotency-Key header and the body's idempotency_key differ",
            [("idempotency_key", "differs from the Idempotency-Key header")],
        )
    msg.idempotency_key = key  # type: ignore[attr-defined]
