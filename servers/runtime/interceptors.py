"""The one server interceptor every foodmesh service runs behind.

Per RPC, in this order: request id, the caller's credential checked against the
method's access rule, trace span (continuing the caller's trace), deadline (a
call without one gets the configured default; a call whose deadline has passed
is refused before any work), metrics, the access log line, and the mapping
of exceptions to ``google.rpc.Status`` — the only place in the code base where
an exception becomes a status code.

It runs on every call of every service, so per-call work is kept small: what
depends only on the method (the wrapped handler, metric children, labels) is
worked out on a method's first call, and the access log line for a call that
succeeded is at DEBUG.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from foodmesh.core.errors import FoodmeshError, InvalidArgument, Unauthenticated, dependency_error
from foodmesh.core.metrics import MethodMetrics, RpcMetrics
from foodmesh.core.streams import StreamSlots
from servers.runtime import auth as _auth
from servers.runtime import context as _ctx
from servers.runtime.auth import Authorizer
from servers.runtime.limits import Refused, guarded_deserializer, guarded_requests

__all__ = ["ERROR_DOMAIN", "ServerInterceptor", "status_for"]

ERROR_DOMAIN = "foodmesh.v1"
_log = logging.getLogger("foodmesh.access")
_errlog = logging.getLogger("foodmesh.errors")
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Handler = Callable[..., Any]
T = TypeVar("T")

_OK = grpc.StatusCode.OK
_STATUS_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _nothing() -> None:
    """Gives back no stream slot (a call that took none)."""


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
    if not isinstance(exc, FoodmeshError):
        exc = dependency_error(exc) or exc
    if isinstance(exc, FoodmeshError):
        code = exc.code.value[0]
        message = exc.message
        if exc.reason:
            details.insert(
                0, _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
            )
        if isinstance(exc, InvalidArgument):
            shown = exc.violations[:_MAX_VIOLATIONS]
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_clip(v.field), description=_clip(v.description)
                    )
                    for v in shown
                ]
            )
            if len(exc.violations) > len(shown):
                bad.field_violations.add(
                    field="", description=f"and {len(exc.violations) - len(shown)} more"
                )
            details.insert(0, _pack(bad))
    elif isinstance(exc, TimeoutError):
        code = code_pb2.DEADLINE_EXCEEDED
        message = f"deadline exceeded (request id {request_id})"
    else:
        code = code_pb2.INTERNAL
        message = f"internal error (request id {request_id})"
    return status_pb2.Status(code=code, message=_clip(message, 1000), details=details)


# The status travels in the trailers, which HTTP/2 peers cap (gRPC's default soft limit
# is 8 KiB): a request bad in a thousand places gets the first ones, each clipped.
_MAX_VIOLATIONS = 10


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Method:
    """What every call of one method shares, worked out on its first call."""

    __slots__ = ("attributes", "kind", "metrics", "name", "quiet", "span_name")

    def __init__(self, method: str, kind: str, metrics: RpcMetrics) -> None:
        self.name = method
        self.kind = kind
        self.span_name = method.lstrip("/")
        service, _, rpc = self.span_name.partition("/")
        self.attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        self.metrics: MethodMetrics = metrics.method(service, rpc, kind)
        self.quiet = method.startswith(_QUIET_PREFIXES)


class _Call:
    """Book-keeping for one RPC: span, timings, deadline, and how it ended."""

    __slots__ = (
        "code",
        "context",
        "denied",
        "deadline",
        "method",
        "peer",
        "request_id",
        "span",
        "started",
        "tokens",
    )

    def __init__(
        self,
        interceptor: ServerInterceptor,
        method: _Method,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.method = method
        self.context = context
        self.code: grpc.StatusCode | None = None
        self.started = time.perf_counter()
        #: A stream's peer, read at its start (see _streaming); None: read at the end.
        self.peer: str | None = None
        metadata = dict(context.invocation_metadata() or ())
        rid = metadata.get("x-request-id")
        self.request_id = str(rid) if rid else os.urandom(8).hex()
        self.denied: FoodmeshError | None = None
        principal = None
        if interceptor.authorizer is not None:
            try:
                principal = interceptor.authorizer.authorize(method.name, metadata)
            except FoodmeshError as exc:
                self.denied = exc
        # The propagators read only their own text headers (traceparent, baggage),
        # so the metadata needs no copy with every value made a str.
        parent = propagate.extract(metadata)
        self.span = interceptor.tracer.start_span(
            method.span_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**method.attributes, "foodmesh.request_id": self.request_id},
        )
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        budget = (
            remaining
            if remaining is not None
            else (
                interceptor.default_deadline_s
                if method.kind == "unary"
                else interceptor.stream_max_age_s
            )
        )
        self.deadline = loop.time() + budget
        self.tokens = (
            _ctx._request_id.set(self.request_id),
            _ctx._deadline.set(self.deadline),
            otel_context.attach(trace.set_span_in_context(self.span)),
            _auth._principal.set(principal),
        )
        m = method.metrics
        m.started.inc()
        m.in_flight.inc()

    async def admit(self, interceptor: ServerInterceptor) -> None:
        """Ends the call (raises) unless it may run.

        A token naming a signing key not held yet waits for the JWKS, fetched in a
        worker thread so that the other calls on this loop go on meanwhile.
        """
        if isinstance(self.denied, _auth.KeysPending) and interceptor.authorizer is not None:
            await interceptor.authorizer.fetch_keys()
            metadata = dict(self.context.invocation_metadata() or ())
            try:
                _auth._principal.set(interceptor.authorizer.authorize(self.method.name, metadata))
                self.denied = None
            except _auth.KeysPending as exc:  # fetched, and the key is still unknown
                self.denied = Unauthenticated(str(exc), reason="INVALID_TOKEN")
            except FoodmeshError as exc:
                self.denied = exc
        if (refused := self.refusal()) is not None:
            await self.fail(refused)

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
        if status.code == code_pb2.INTERNAL and asyncio.get_running_loop().time() >= self.deadline:
            # An error raised while the deadline cancelled the handler (psycopg, say,
            # turning an interrupted query cancel into its own error) is the deadline's.
            status = status_for(TimeoutError(), self.request_id)
        self.code = _STATUS_CODES[status.code]
        if status.code == code_pb2.INTERNAL:
            _errlog.error(
                "unhandled error in %s (request id %s)",
                self.method.name,
                self.request_id,
                exc_info=exc,
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
        code = self.code or _OK
        method = self.method
        m = method.metrics
        m.in_flight.dec()
        m.handled(code.name).inc()
        m.latency.observe(elapsed)
        span = self.span
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not _OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        if not method.quiet:
            # A call that succeeded is routine: DEBUG, and nothing is formatted unless
            # that level is on. One that failed stays at INFO.
            level = logging.DEBUG if code is _OK else logging.INFO
            if _log.isEnabledFor(level):
                _log.log(
                    level,
                    "rpc %s code=%s ms=%.1f peer=%s",
                    method.name,
                    code.name,
                    elapsed * 1000,
                    self.context.peer() if self.peer is None else self.peer,
                    extra={"request_id": self.request_id},
                )
        try:
            _ctx._request_id.reset(self.tokens[0])
        except ValueError:
            # Finished in another context: a stream whose client went away is closed by
            # the event loop's async-generator finalizer, in a task of its own, where
            # these values were never set (nothing to restore; raising lost the status).
            return
        _ctx._deadline.reset(self.tokens[1])
        otel_context.detach(self.tokens[2])
        _auth._principal.reset(self.tokens[3])


class _StreamDeadline:
    """One timer for a whole server stream, instead of one per message.

    At the deadline it cancels the stream's task, but only while the inner
    generator is computing the next message, so the cancellation lands in that
    generator's frame (where its cleanup runs) and never while we are suspended
    at our own ``yield`` with the task off doing grpc's sending. A deadline that
    passes while we are at ``yield`` is noticed before the next step, which
    then does not run.
    """

    __slots__ = ("_cancelling", "_handle", "_ours", "_running", "_task", "expired")

    def __init__(self, deadline: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a stream is always driven by a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._running = False
        self._ours = False
        self.expired = False
        self._handle = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._running:
            self._ours = True
            self._task.cancel()

    def _took_back(self) -> bool:
        """Withdraws our cancellation, if any; True if no one else asked to cancel."""
        if not self._ours:
            return False
        self._ours = False
        return self._task.uncancel() <= self._cancelling

    async def next_item(self, items: AsyncIterator[T]) -> T:
        """The next item of ``items``; TimeoutError once the deadline has passed."""
        if self.expired:
            raise TimeoutError
        self._running = True
        try:
            return await anext(items)
        except asyncio.CancelledError:
            if self._took_back():
                raise TimeoutError from None
            raise
        finally:
            self._running = False
            self._took_back()  # the generator swallowed our cancellation: undo it all the same

    def close(self) -> None:
        self._handle.cancel()


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler with request id, tracing, deadlines, metrics, logging, error mapping.

    Wrapped handlers are kept per method: a server's handler for a method does not
    change once it serves, so later calls skip the continuation. This must be the
    last (here: the only) interceptor, since interceptors after it run only on a
    method's first call.
    """

    def __init__(
        self,
        *,
        metrics: RpcMetrics,
        default_deadline_s: float = 5.0,
        stream_max_age_s: float = 3600.0,
        tracer_provider: trace.TracerProvider | None = None,
        authorizer: Authorizer | None = None,
        stream_slots: StreamSlots | None = None,
    ) -> None:
        self.metrics = metrics
        self.authorizer = authorizer
        self.stream_slots = stream_slots or StreamSlots()
        self.default_deadline_s = default_deadline_s
        self.stream_max_age_s = stream_max_age_s
        self.tracer = trace.get_tracer("foodmesh.grpc.server", tracer_provider=tracer_provider)
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # not cached: the names of unknown methods are the caller's to choose
        wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # Each request message is checked against the method's limits as it is decoded.
        decode = guarded_deserializer(method, handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(_Method(method, "unary", self.metrics), handler.unary_unary),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(_Method(method, "server_stream", self.metrics), handler.unary_stream),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(_Method(method, "client_stream", self.metrics), handler.stream_unary),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._stream(_Method(method, "bidi_stream", self.metrics), handler.stream_stream),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    async def _checked(call: _Call, request: Any) -> Any:
        """The request, or the end of the call if its message was refused when decoded."""
        if call.method.kind in ("client_stream", "bidi_stream"):
            return guarded_requests(request)
        if isinstance(request, Refused):
            await call.fail(request.error)
        return request

    def _slot(self, call: _Call, request: Any) -> Callable[[], None]:
        """Takes a slot among the caller's open streams; returns what gives it back.

        Raises ResourceExhausted when the caller has none left.
        """
        who = _auth.current_principal()
        if who is None or who.role == "service":  # services hold streams for many users
            return _nothing
        order_id = "" if call.method.kind == "bidi_stream" else getattr(request, "order_id", "")
        return self.stream_slots.take(call.method.name, f"{who.role}:{who.subject}",
                                      str(order_id))  # fmt: skip

    def _unary(self, method: _Method, behavior: Handler) -> Handler:
        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(self, method, context)
            ended: BaseException | None = None
            try:
                await call.admit(self)
                request = await self._checked(call, request)
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

    def _stream(self, method: _Method, behavior: Handler) -> Handler:
        if inspect.isasyncgenfunction(behavior):

            async def run_gen(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                call = _Call(self, method, context)
                # A stream's end may come after grpc has freed its call (a client gone,
                # thousands of streams cancelled at once): peer() on it then crashes the
                # process (a segfault the soak found in Dispatch). Read it while it lives.
                call.peer = context.peer()
                ended: BaseException | None = None
                release = _nothing
                try:
                    await call.admit(self)
                    request = await self._checked(call, request)
                    try:
                        release = self._slot(call, request)
                    except FoodmeshError as exc:
                        await call.fail(exc)
                    responses = behavior(request, context)
                    sent = method.metrics.msgs_sent()
                    deadline = _StreamDeadline(call.deadline)
                    try:
                        while True:
                            try:
                                item = await deadline.next_item(responses)
                            except StopAsyncIteration:
                                break
                            yield item
                            sent.inc()
                    except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                        raise
                    except Exception as exc:
                        await call.fail(exc)
                    finally:
                        deadline.close()
                        await responses.aclose()
                    call.code = context.code() or grpc.StatusCode.OK
                except BaseException as exc:
                    ended = exc
                    raise
                finally:
                    release()
                    call.finish(ended)

            return run_gen

        async def run_coro(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            call = _Call(self, method, context)
            call.peer = context.peer()  # a stream (see run_gen)
            ended: BaseException | None = None
            release = _nothing
            try:
                await call.admit(self)
                request = await self._checked(call, request)
                try:
                    release = self._slot(call, request)
                except FoodmeshError as exc:
                    await call.fail(exc)
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
                release()
                call.finish(ended)

        return run_coro
