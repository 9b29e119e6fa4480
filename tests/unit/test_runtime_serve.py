"""servers.runtime.serve and its interceptor, on a real grpc.aio server with no dependencies.

The service under test is a generic handler (``test.Probe``) whose request's
``service`` string tells it what to do, so these tests exercise the runtime
without depending on any foodmesh contract.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from foodmesh.core import telemetry
from foodmesh.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from foodmesh.core.metrics import rpc_metrics
from servers.runtime.config import Settings
from servers.runtime.context import current_request_id, time_left
from servers.runtime.interceptors import ServerInterceptor, _StreamDeadline
from servers.runtime.serve import Resources, RunningService, ServiceSpec, StartupError, run_service

Req = health_pb2.HealthCheckRequest
Resp = health_pb2.HealthCheckResponse


class Probe:
    """Handlers that do what the request says; records what actually ran."""

    def __init__(self) -> None:
        self.work_done = 0
        self.seen_time_left: list[float] = []
        self.release = asyncio.Event()

    async def unary(self, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        cmd, _, arg = request.service.partition(":")
        self.seen_time_left.append(time_left(default=-1.0))
        if cmd == "sleep":
            await asyncio.sleep(float(arg))
        elif cmd == "wait":
            await self.release.wait()
        elif cmd == "invalid":
            raise InvalidArgument(
                [FieldViolation(arg, "must be set"), FieldViolation("items", "must not be empty")]
            )
        elif cmd == "illegal":
            raise FailedPrecondition("order is delivered", reason="ILLEGAL_TRANSITION")
        elif cmd == "boom":
            raise KeyError("secret-internal-detail")
        elif cmd == "masked":  # a library that turns its cancellation into its own error
            try:
                await asyncio.sleep(float(arg))
            except asyncio.CancelledError:
                raise RuntimeError("query cancellation interrupted") from None
        elif cmd == "rid":
            return Resp(status=Resp.SERVING if current_request_id() == arg else Resp.UNKNOWN)
        self.work_done += 1
        return Resp(status=Resp.SERVING)

    async def stream(
        self, request: Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        cmd, _, arg = request.service.partition(":")
        for _ in range(int(arg or 3)):
            yield Resp(status=Resp.SERVING)
        if cmd == "boom":
            raise RuntimeError("stream broke")
        if cmd == "hang":
            await asyncio.Event().wait()


def probe_spec(probe: Probe, **kw: Any) -> ServiceSpec:
    async def register(server: grpc.aio.Server, resources: Resources) -> None:
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(
                probe.unary,
                request_deserializer=Req.FromString,
                response_serializer=Resp.SerializeToString,
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                probe.stream,
                request_deserializer=Req.FromString,
                response_serializer=Resp.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Probe", handlers),)
        )
        return None

    return ServiceSpec(name="probe", grpc_services=("test.Probe",), register=register, **kw)


def settings(**kw: Any) -> Settings:
    base = Settings(
        service="probe",
        default_deadline_s=0.5,
        shutdown_grace_s=5.0,
        startup_timeout_s=2.0,
        health_check_interval_s=0.05,
        metrics_enabled=False,
    )
    return replace(base, **kw)


def unary(channel: grpc.aio.Channel) -> Callable[..., Any]:
    return channel.unary_unary(
        "/test.Probe/Unary",
        request_serializer=Req.SerializeToString,
        response_deserializer=Resp.FromString,
    )


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "error carried no google.rpc.Status details"
    return status


@pytest.fixture
async def probe() -> Probe:
    return Probe()


@pytest.fixture
async def running(probe: Probe) -> AsyncIterator[RunningService]:
    async with run_service(probe_spec(probe), settings()) as svc:
        yield svc


@pytest.fixture
async def channel(running: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.target) as ch:
        yield ch


async def test_call_without_deadline_gets_the_configured_default(
    channel: grpc.aio.Channel, probe: Probe
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(channel)(Req(service="sleep:5"))  # no timeout from the client
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.3 < probe.seen_time_left[0] <= 0.5


async def test_an_error_raised_by_the_deadlines_cancellation_is_deadline_exceeded(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="foodmesh.errors")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(channel)(Req(service="masked:5"))  # the server's default deadline ends it
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not caplog.records  # not an "unhandled error"


async def test_client_deadline_is_visible_to_service_code(
    channel: grpc.aio.Channel, probe: Probe
) -> None:
    await unary(channel)(Req(service="ok"), timeout=3.0)
    # gRPC's core clock and the event loop's clock are read at different
    # instants, so the budget seen can exceed the client's by a few ms.
    assert 2.0 < probe.seen_time_left[0] <= 3.05


async def test_call_whose_deadline_passed_in_transit_does_no_work(
    channel: grpc.aio.Channel, probe: Probe
) -> None:
    call = unary(channel)(Req(service="ok"), timeout=0.05)
    time.sleep(0.2)  # noqa: ASYNC251 - block the shared loop so the deadline passes in transit
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.05)
    assert probe.work_done == 0


async def test_invalid_argument_carries_bad_request_naming_each_field(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(channel)(Req(service="invalid:delivery_address.lat"), timeout=2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "delivery_address.lat" in (err.value.details() or "")
    status = rich_status(err.value)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("delivery_address.lat", "must be set"),
        ("items", "must not be empty"),
    ]


async def test_domain_error_keeps_its_code_and_reason(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(channel)(Req(service="illegal"), timeout=2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in rich_status(err.value).details)
    assert info.reason == "ILLEGAL_TRANSITION"


async def test_unexpected_exception_is_internal_with_a_request_id_that_is_logged(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="foodmesh.errors")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(channel)(Req(service="boom"), timeout=2)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in (err.value.details() or "")
    info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(info) for d in rich_status(err.value).details)
    assert info.request_id and info.request_id in (err.value.details() or "")
    logged = [r for r in caplog.records if info.request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_request_id_from_metadata_is_used(channel: grpc.aio.Channel) -> None:
    reply = await unary(channel)(
        Req(service="rid:abc123"), timeout=2, metadata=(("x-request-id", "abc123"),)
    )
    assert reply.status == Resp.SERVING


async def test_error_in_a_server_stream_ends_it_with_internal_not_a_hang(
    channel: grpc.aio.Channel,
) -> None:
    stream = channel.unary_stream(
        "/test.Probe/Stream",
        request_serializer=Req.SerializeToString,
        response_deserializer=Resp.FromString,
    )
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for msg in stream(Req(service="boom:2"), timeout=5):
            got.append(msg)
    assert len(got) == 2
    assert err.value.code() == grpc.StatusCode.INTERNAL


async def test_stream_outliving_its_max_age_ends_with_deadline_exceeded(probe: Probe) -> None:
    async with (
        run_service(probe_spec(probe), settings(stream_max_age_s=0.3)) as svc,
        grpc.aio.insecure_channel(svc.target) as ch,
    ):
        stream = ch.unary_stream(
            "/test.Probe/Stream",
            request_serializer=Req.SerializeToString,
            response_deserializer=Resp.FromString,
        )
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stream(Req(service="hang:1")):
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3


async def test_health_and_reflection_are_served(
    running: RunningService, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "test.Probe"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed: list[str] = []
    async for r in refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
    ):
        listed += [s.name for s in r.list_services_response.service]
    assert {"test.Probe", "grpc.health.v1.Health"} <= set(listed)


async def test_health_is_not_serving_until_dependencies_answer(probe: Probe) -> None:
    answering = False

    async def dependency() -> None:
        if not answering:
            raise ConnectionRefusedError("nobody home")

    spec = probe_spec(probe, extra_checks={"fake-dependency": dependency})
    async with (
        run_service(spec, settings(), wait_ready=False) as svc,
        grpc.aio.insecure_channel(svc.target) as ch,
    ):
        health = health_pb2_grpc.HealthStub(ch)
        await asyncio.sleep(0.2)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="test.Probe"), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        answering = True
        assert await svc.health.wait_serving(2.0)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="test.Probe"), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        answering = False  # a dependency that stops answering takes the service out again
        await asyncio.sleep(0.3)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_startup_fails_naming_the_dependency_that_never_answered(probe: Probe) -> None:
    async def dependency() -> None:
        raise ConnectionRefusedError("redis at 127.0.0.1:1 refused")

    spec = probe_spec(probe, extra_checks={"redis": dependency})
    with pytest.raises(StartupError, match="redis"):
        async with run_service(spec, settings(startup_timeout_s=0.3)):
            pass


async def test_port_in_use_is_a_one_line_startup_error(
    running: RunningService, probe: Probe
) -> None:
    with pytest.raises(StartupError, match=f"{running.port}.*FOODMESH_PROBE_PORT"):
        async with run_service(probe_spec(probe), settings(port=running.port)):
            pass


async def test_graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones(
    probe: Probe,
) -> None:
    spec = probe_spec(probe)
    ctx = run_service(spec, settings(default_deadline_s=10))
    svc = await ctx.__aenter__()
    async with grpc.aio.insecure_channel(svc.target) as ch:
        in_flight = asyncio.ensure_future(unary(ch)(Req(service="wait"), timeout=10))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(ctx.__aexit__(None, None, None))
        await asyncio.sleep(0.2)
        health = health_pb2_grpc.HealthStub(ch)
        assert not stopping.done(), "shutdown did not wait for the in-flight call"
        assert svc.health.serving is False
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(ch)(Req(service="ok"), timeout=1)
        probe.release.set()
        reply = await in_flight
        assert reply.status == Resp.SERVING
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_trace_continues_in_server_span(probe: Probe) -> None:
    telemetry.setup_tracing("probe", exporter="memory")
    exporter = telemetry.memory_exporter()
    assert exporter is not None
    exporter.clear()
    async with (
        run_service(probe_spec(probe), settings()) as svc,
        grpc.aio.insecure_channel(svc.target, interceptors=aio_client_interceptors()) as ch,
    ):
        with trace.get_tracer("test").start_as_current_span("customer-taps-order") as root:
            await unary(ch)(Req(service="ok"), timeout=2)
        trace_id = root.get_span_context().trace_id
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "test.Probe/Unary" and s.kind == trace.SpanKind.SERVER]
    assert server, [s.name for s in spans]
    assert server[0].context is not None and server[0].context.trace_id == trace_id
    client = [s for s in spans if s.kind == trace.SpanKind.CLIENT]
    assert client and server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id  # type: ignore[union-attr]


async def test_metrics_count_rpcs_by_code(probe: Probe) -> None:
    async with (
        run_service(probe_spec(probe), settings(metrics_enabled=True)) as svc,
        grpc.aio.insecure_channel(svc.target) as ch,
    ):
        await unary(ch)(Req(service="ok"), timeout=2)
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(ch)(Req(service="invalid:x"), timeout=2)
        assert svc.metrics_port
        url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=2).read().decode()
        )
    line = (
        'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Unary",'
        'grpc_service="test.Probe",grpc_type="unary"}'
    )
    assert line in body
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Unary"' in body


def test_status_for_maps_timeout_to_deadline_exceeded() -> None:
    from servers.runtime.interceptors import status_for

    assert status_for(TimeoutError(), "r1").code == code_pb2.DEADLINE_EXCEEDED


# --- the interceptor on its own, driven directly: the task that runs a handler is the test's ---

_REGISTRY = CollectorRegistry()


class FakeContext:
    """The parts of a grpc.aio servicer context the interceptor uses."""

    def __init__(
        self, *, timeout: float | None = None, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._timeout = timeout
        self._metadata = metadata
        self.aborted: grpc.StatusCode | None = None
        self.peer_asked = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._timeout

    def code(self) -> grpc.StatusCode | None:
        return None

    def peer(self) -> str:
        self.peer_asked += 1
        return "ipv4:127.0.0.1:1"

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.aborted = status.code
        raise grpc.aio.AbortError()


async def wrapped(
    handler: grpc.RpcMethodHandler[Any, Any], **kw: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    interceptor = ServerInterceptor(metrics=rpc_metrics(_REGISTRY), **kw)

    async def continuation(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    details = SimpleNamespace(method="/test.Direct/Call", invocation_metadata=())
    found = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
    assert found is not None
    return found


async def test_stream_deadline_passing_while_the_consumer_holds_a_message_cancels_nothing() -> None:
    steps = 0

    async def gen(request: bytes, context: Any) -> AsyncIterator[bytes]:
        nonlocal steps
        for _ in range(3):
            steps += 1
            yield b"x"

    handler = await wrapped(grpc.unary_stream_rpc_method_handler(gen))
    ctx = FakeContext(timeout=0.05)
    stream = handler.unary_stream(b"", ctx)
    assert await anext(stream) == b"x"
    # This task is grpc's sender here: it holds the message past the deadline and
    # must not be cancelled for it; the stream ends before its next step instead.
    await asyncio.sleep(0.15)
    with pytest.raises(grpc.aio.AbortError):
        await anext(stream)
    assert ctx.aborted == grpc.StatusCode.DEADLINE_EXCEEDED
    assert steps == 1


async def test_stream_deadline_cancels_inside_the_inner_generator_and_is_withdrawn() -> None:
    seen: list[str] = []

    async def gen(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"x"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled in the generator")
            raise
        yield b"never"

    handler = await wrapped(grpc.unary_stream_rpc_method_handler(gen))
    ctx = FakeContext(timeout=0.05)
    got = []
    with pytest.raises(grpc.aio.AbortError):
        async for item in handler.unary_stream(b"", ctx):
            got.append(item)
    assert got == [b"x"]
    assert seen == ["cancelled in the generator"]
    assert ctx.aborted == grpc.StatusCode.DEADLINE_EXCEEDED
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_stream_cancelled_by_someone_else_stays_cancelled_not_a_timeout() -> None:
    async def gen(request: bytes, context: Any) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b"never"

    handler = await wrapped(grpc.unary_stream_rpc_method_handler(gen))
    ctx = FakeContext(timeout=10.0)

    async def consume() -> None:
        async for _ in handler.unary_stream(b"", ctx):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    task.cancel()  # as grpc does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.aborted is None


def _stream_timers() -> list[asyncio.TimerHandle]:
    scheduled: list[asyncio.TimerHandle] = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    return [
        h
        for h in scheduled
        if not h.cancelled() and isinstance(getattr(h._callback, "__self__", None), _StreamDeadline)  # type: ignore[attr-defined]
    ]


async def test_finished_stream_leaves_no_timer_behind() -> None:
    async def gen(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"x"

    handler = await wrapped(grpc.unary_stream_rpc_method_handler(gen))
    stream = handler.unary_stream(b"", FakeContext(timeout=60.0))
    assert await anext(stream) == b"x"
    assert len(_stream_timers()) == 1
    assert [item async for item in stream] == []
    assert _stream_timers() == []


async def test_wrapped_handler_is_built_once_per_method() -> None:
    asked = 0

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    interceptor = ServerInterceptor(metrics=rpc_metrics(_REGISTRY))

    async def continuation(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        nonlocal asked
        asked += 1
        return grpc.unary_unary_rpc_method_handler(echo)

    details = SimpleNamespace(method="/test.Direct/Echo", invocation_metadata=())
    first = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
    second = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
    assert first is second and asked == 1
    assert first is not None and await first.unary_unary(b"hi", FakeContext()) == b"hi"


async def test_successful_calls_log_at_debug_failures_at_info_and_nothing_is_formatted_when_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handle(request: bytes, context: Any) -> bytes:
        if request == b"bad":
            raise InvalidArgument([FieldViolation("x", "must be set")])
        return request

    handler = await wrapped(grpc.unary_unary_rpc_method_handler(handle))
    caplog.set_level(logging.INFO, logger="foodmesh.access")
    quiet = FakeContext()
    await handler.unary_unary(b"ok", quiet)
    assert quiet.peer_asked == 0, "the access line was built though DEBUG is off"
    with pytest.raises(grpc.aio.AbortError):
        await handler.unary_unary(b"bad", FakeContext())
    caplog.set_level(logging.DEBUG, logger="foodmesh.access")
    await handler.unary_unary(b"ok", FakeContext())
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "foodmesh.access"]
    assert [(level, "code=INVALID_ARGUMENT" in msg) for level, msg in lines] == [
        (logging.INFO, True),
        (logging.DEBUG, False),
    ]


async def test_without_an_exporter_only_a_callers_sampled_trace_is_recorded_yet_ids_propagate() -> (
    None
):
    provider = TracerProvider(sampler=telemetry._sampler_for("none"))
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    seen: list[trace.SpanContext] = []

    async def handle(request: bytes, context: Any) -> bytes:
        seen.append(trace.get_current_span().get_span_context())
        return request

    handler = await wrapped(grpc.unary_unary_rpc_method_handler(handle), tracer_provider=provider)
    caller_trace = 0x0AF7651916CD43DD8448EB211C80319C
    sampled = f"00-{caller_trace:032x}-b7ad6b7169203331-01"
    await handler.unary_unary(b"", FakeContext(metadata=(("traceparent", sampled),)))
    await handler.unary_unary(b"", FakeContext())
    assert [s.context.trace_id for s in exported.get_finished_spans()] == [caller_trace]  # type: ignore[union-attr]
    continued, own = seen
    assert continued.trace_id == caller_trace and continued.trace_flags.sampled
    assert own.is_valid and not own.trace_flags.sampled  # still a trace id to pass on


# --- a dependency's own exceptions that mean "busy", not "bug" ---


def test_status_for_maps_an_exhausted_postgres_pool_to_unavailable() -> None:
    from psycopg_pool import PoolTimeout, TooManyRequests

    from servers.runtime.interceptors import status_for

    for exc in (PoolTimeout("couldn't get a connection after 5.00 sec"), TooManyRequests("x")):
        status = status_for(exc, "r1")
        assert status.code == code_pb2.UNAVAILABLE
        assert status.message == "database busy: retry"
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details)
        assert info.reason == "DATABASE_BUSY"
    assert status_for(KeyError("x"), "r1").code == code_pb2.INTERNAL  # anything else: a bug


def test_status_for_maps_unreachable_redis_postgres_and_nats_to_unavailable() -> None:
    import nats.errors
    import psycopg
    import redis.exceptions

    from servers.runtime.interceptors import status_for

    cases = {
        redis.exceptions.ConnectionError("Error 111 connecting"): "REDIS_UNAVAILABLE",
        redis.exceptions.TimeoutError("Timeout reading from socket"): "REDIS_UNAVAILABLE",
        psycopg.OperationalError("connection failed: Connection refused"): "DATABASE_UNAVAILABLE",
        nats.errors.NoServersError(): "NATS_UNAVAILABLE",
        nats.errors.ConnectionClosedError(): "NATS_UNAVAILABLE",
    }  # fmt: skip
    for exc, reason in cases.items():
        status = status_for(exc, "r1")
        assert status.code == code_pb2.UNAVAILABLE, exc
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details)
        assert info.reason == reason
    # a serialization failure is a conflict to retry, not an outage
    conflict = status_for(psycopg.errors.SerializationFailure("could not serialize"), "r1")
    assert conflict.code == code_pb2.ABORTED
    # a query cancelled by the call's deadline is not an outage
    assert status_for(psycopg.errors.QueryCanceled("canceling statement"), "r1").code != (
        code_pb2.UNAVAILABLE
    )


async def test_a_real_pool_timeout_in_a_handler_is_unavailable_and_not_logged_as_a_bug(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(pg_url, min_size=1, max_size=1, timeout=0.2) as pool:

        async def handle(request: bytes, context: Any) -> bytes:
            async with pool.connection(), pool.connection():  # the second waits, then gives up
                return request

        handler = await wrapped(grpc.unary_unary_rpc_method_handler(handle))
        caplog.set_level(logging.ERROR, logger="foodmesh.errors")
        ctx = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await handler.unary_unary(b"x", ctx)
        assert ctx.aborted == grpc.StatusCode.UNAVAILABLE
        assert not caplog.records  # not an "unhandled error"


# --- Redis: a burst beyond the pool's size waits for a connection instead of failing ---


async def test_200_concurrent_redis_commands_all_succeed(redis_url: str, namespace: str) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import MaxConnectionsError

    from foodmesh.core.redis import open_redis

    key = f"{namespace}:empty-list"

    async def burst(client: aioredis.Redis) -> list[Any]:
        # BLPOP on an empty list holds its connection for 0.2 s: 200 of them overlap.
        return await asyncio.gather(
            *(client.blpop([key], timeout=0.2) for _ in range(200)), return_exceptions=True
        )

    plain = aioredis.Redis.from_url(redis_url)  # redis-py's default pool: 100 at most
    try:
        assert any(isinstance(r, MaxConnectionsError) for r in await burst(plain))
    finally:
        await plain.aclose()
    client = await open_redis(redis_url, name="test")
    try:
        results = await burst(client)
        assert results == [None] * 200
        pool = client.connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.max_connections == 100
    finally:
        await client.aclose()
    # A small pool makes the point sharper: 200 commands through 10 connections.
    small = await open_redis(redis_url, name="test", max_connections=10)
    try:
        results = await asyncio.gather(*(small.incr(key + ":n") for _ in range(200)))
        assert sorted(results) == list(range(1, 201))
    finally:
        await small.delete(key + ":n")
        await small.aclose()


async def test_a_stream_closed_from_another_context_finishes_without_an_error() -> None:
    """A stream whose client left is closed by the loop's async-generator finalizer, in a
    task (and context) of its own: the call still finishes, logged, with nothing raised."""

    async def gen(request: bytes, context: Any) -> AsyncIterator[bytes]:
        while True:
            yield b"x"

    handler = await wrapped(grpc.unary_stream_rpc_method_handler(gen))
    stream = handler.unary_stream(b"", FakeContext())
    assert await asyncio.create_task(anext(stream)) == b"x"  # started in its own context
    # Closed from this task's context, as the finalizer would: no ValueError about tokens
    # "created in a different Context".
    await asyncio.create_task(stream.aclose())
