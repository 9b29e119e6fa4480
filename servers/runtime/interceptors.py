"""The one server interceptor every foodmesh service runs behind.

Per RPC, in this order: request id, the caller's credential checked against the
method's access rule, trace span (continuing the caller's trace), deadline (a
call without one gets the configured default; a call whose deadline has passed
is refused before any work), metrics, the access log line, and the mapping
of exceptions to ``google.rpc.Status`` — the only place in the code base where
an exception becomes a status code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from servers.runtime import auth as _auth
from servers.runtime import context as _ctx
from servers.runtime.auth import Authorizer
from servers.runtime.errors import FoodmeshError, InvalidArgument
from servers.runtime.metrics import RpcMetrics

__all__ = ["ERROR_DOMAIN", "ServerInterceptor", "status_for"]

ERROR_DOMAIN = "foodmesh.v1"
_log = logging.getLogger("foodmesh.access")
_errlog = logging.getLogger("foodmesh.errors")
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Handler = Callable[..., Any]


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def status_for(exc: BaseException, request_id: str) -> status_pb2.Status:
    """The ``google.rpc.Status`` a caller receives for ``exc``.

    Our own errors keep their code and message and carry ``ErrorInfo`` (and
    ``BadRequest`` field violations for bad input). Anything else is a bug:
    INTERNAL with only the request id, so no internals leak, and the traceback
    goes to the log under the same id.
    """
    details = [_pack(error_details_pb2.RequestInfo(request_id=request_id))]
    if isinstance(exc, FoodmeshError):
        code = exc.code.value[0]
        message = exc.message
        if exc.reason:
            details.insert(
                0, _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
            )
        if isinstance(exc, InvalidArgument):
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
            details.insert(0, _pack(bad))
    elif isinstance(exc, TimeoutError):
        code = code_pb2.DEADLINE_EXCEEDED
        message = f"deadline exceeded (request id {request_id})"
    else:
        code = code_pb2.INTERNAL
        message = f"internal error (request id {request_id})"
    return status_pb2.Status(code=code, message=message, details=details)


def _code_name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "OK"


class _Call:
    """Book-keeping for one RPC: span, timings, deadline, and how it ended."""

    __slots__ = (
        "code",
        "context",
        "denied",
        "deadline",
        "interceptor",
        "labels",
        "method",
        "request_id",
        "span",
        "started",
        "tokens",
    )

    def __init__(
        self,
        interceptor: ServerInterceptor,
        method: str,
        kind: str,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.interceptor = interceptor
        self.method = method
        self.context = context
        service, _, name = method.lstrip("/").partition("/")
        self.labels = (service, name, kind)
        self.code: grpc.StatusCode | None = None
        self.started = time.perf_counter()
        metadata = dict(context.invocation_metadata() or ())
        rid = metadata.get("x-request-id")
        self.request_id = str(rid) if rid else uuid.uuid4().hex[:16]
        self.denied: FoodmeshError | None = None
        principal = None
        if interceptor.authorizer is not None:
            try:
                principal = interceptor.authorizer.authorize(method, metadata)
            except FoodmeshError as exc:
                self.denied = exc
        parent = propagate.extract({k: str(v) for k, v in metadata.items()})
        self.span = interceptor.tracer.start_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "foodmesh.request_id": self.request_id,
            },
        )
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        budget = (
            remaining
            if remaining is not None
            else (
                interceptor.default_deadline_s if kind == "unary" else interceptor.stream_max_age_s
            )
        )
        self.deadline = loop.time() + budget
        self.tokens = (
            _ctx._request_id.set(self.request_id),
            _ctx._deadline.set(self.deadline),
            otel_context.attach(trace.set_span_in_context(self.span)),
            _auth._principal.set(principal),
        )
        m = interceptor.metrics
        m.started.labels(*self.labels).inc()
        m.in_flight.labels(*self.labels).inc()

    def refusal(self) -> BaseException | None:
        """Why the call must not run at all: no right to call it, or no time left."""
        if self.denied is not None:
            return self.denied
        if asyncio.get_running_loop().time() >= self.deadline:
            return TimeoutError()
        return None

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with the status that ``exc`` maps to (always raises)."""
        status = status_for(exc, self.request_id)
        self.code = grpc.StatusCode(
            next(c.value for c in grpc.StatusCode if c.value[0] == status.code)
        )
        if status.code == code_pb2.INTERNAL:
            _errlog.error(
                "unhandled error in %s (request id %s)", self.method, self.request_id, exc_info=exc
            )
            self.span.record_exception(exc)
        await self.context.abort_with_status(rpc_status.to_status(status))

    def finish(self, exc: BaseException | None = None) -> None:
        if exc is not None and self.code is None:
            if isinstance(exc, asyncio.CancelledError):
                self.code = grpc.StatusCode.CANCELLED
            else:
                self.code = self.context.code() or grpc.StatusCode.UNKNOWN
        elapsed = time.perf_counter() - self.started
        code = _code_name(self.code)
        m = self.interceptor.metrics
        m.in_flight.labels(*self.labels).dec()
        m.handled.labels(*self.labels, code).inc()
        m.latency.labels(*self.labels).observe(elapsed)
        self.span.set_attribute("rpc.grpc.status_code", (self.code or grpc.StatusCode.OK).value[0])
        if self.code not in (None, grpc.StatusCode.OK):
            self.span.set_status(Status(StatusCode.ERROR, code))
        self.span.end()
        if not self.method.startswith(_QUIET_PREFIXES):
            _log.info(
                "rpc %s code=%s ms=%.1f peer=%s",
                self.method,
                code,
                elapsed * 1000,
                self.context.peer(),
                extra={"request_id": self.request_id},
            )
        _ctx._request_id.reset(self.tokens[0])
        _ctx._deadline.reset(self.tokens[1])
        otel_context.detach(self.tokens[2])
        _auth._principal.reset(self.tokens[3])


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler with request id, tracing, deadlines, metrics, logging, error mapping."""

    def __init__(
        self,
        *,
        metrics: RpcMetrics,
        default_deadline_s: float = 5.0,
        stream_max_age_s: float = 3600.0,
        tracer_provider: trace.TracerProvider | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.metrics = metrics
        self.authorizer = authorizer
        self.default_deadline_s = default_deadline_s
        self.stream_max_age_s = stream_max_age_s
        self.tracer = trace.get_tracer("foodmesh.grpc.server", tracer_provider=tracer_provider)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, "server_stream"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary, "client_stream"),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream, "bidi_stream"),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, method: str, behavior: Handler, kind: str = "unary") -> Handler:
        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(self, method, kind, context)
            ended: BaseException | None = None
            try:
                if (refused := call.refusal()) is not None:
                    await call.fail(refused)
                try:
                    async with asyncio.timeout_at(call.deadline):
                        response = await behavior(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await call.fail(exc)
                call.code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException as exc:
                ended = exc
                raise
            finally:
                call.finish(ended)

        return run

    def _stream(self, method: str, behavior: Handler, kind: str) -> Handler:
        if inspect.isasyncgenfunction(behavior):

            async def run_gen(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                call = _Call(self, method, kind, context)
                ended: BaseException | None = None
                try:
                    if (refused := call.refusal()) is not None:
                        await call.fail(refused)
                    responses = behavior(request, context)
                    sent = self.metrics.stream_msgs_sent.labels(*call.labels)
                    try:
                        while True:
                            # The timeout wraps only the step of the inner generator,
                            # never our own yield, so cancellation lands in its frame.
                            try:
                                async with asyncio.timeout_at(call.deadline):
                                    item = await anext(responses)
                            except StopAsyncIteration:
                                break
                            yield item
                            sent.inc()
                    except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                        raise
                    except Exception as exc:
                        await call.fail(exc)
                    finally:
                        await responses.aclose()
                    call.code = context.code() or grpc.StatusCode.OK
                except BaseException as exc:
                    ended = exc
                    raise
                finally:
                    call.finish(ended)

            return run_gen

        async def run_coro(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            call = _Call(self, method, kind, context)
            ended: BaseException | None = None
            try:
                if (refused := call.refusal()) is not None:
                    await call.fail(refused)
                try:
                    async with asyncio.timeout_at(call.deadline):
                        await behavior(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await call.fail(exc)
                call.code = context.code() or grpc.StatusCode.OK
            except BaseException as exc:
                ended = exc
                raise
            finally:
                call.finish(ended)

        return run_coro
