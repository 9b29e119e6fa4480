"""OpenTelemetry set-up: one tracer provider per process, W3C trace context across hops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

__all__ = [
    "EXPORTERS",
    "consumer_span",
    "exporter_from_env",
    "extract_context",
    "inject_headers",
    "memory_exporter",
    "setup_tracing",
    "tracer",
]

_TRACER_NAME = "foodmesh"
_memory_exporter: InMemorySpanExporter | None = None


class _Sampler(sampling.Sampler):
    """Delegates to a sampler that can be swapped after tracers have been handed out.

    Tracers keep the sampler they were made with, and the SDK caches tracers by
    name, so a process that started with spans going nowhere and later gets an
    exporter (tests do) needs the decision itself to change.
    """

    def __init__(self, inner: sampling.Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return self.inner.get_description()


def _sampler_for(exporter: str) -> sampling.Sampler:
    if exporter == "none":
        # Nothing is exported, so a span of our own would be recorded for nobody.
        # A caller's sampled trace is still recorded and continued; otherwise the
        # span is non-recording but still carries the trace id on to the next hop.
        return sampling.ParentBased(sampling.ALWAYS_OFF)
    # What TracerProvider picks when given none: OTEL_TRACES_SAMPLER, else parent-based always-on.
    return sampling._get_from_env_or_default()


def exporter_from_env(env: Mapping[str, str], default: str = "none") -> str:
    """``FOODMESH_TRACE_EXPORTER``, else ``otlp`` when an OTLP endpoint is configured.

    The endpoint is OpenTelemetry's own variable (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), which the OTLP exporter reads itself.
    """
    explicit = env.get("FOODMESH_TRACE_EXPORTER", "").strip()
    if explicit:
        return explicit
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return default


EXPORTERS = frozenset({"none", "console", "memory", "otlp"})


def setup_tracing(service: str, *, exporter: str = "none") -> TracerProvider:
    """Installs the global tracer provider (once per process) and returns it.

    ``exporter`` is ``none`` (only spans continuing a caller's sampled trace are
    recorded; trace context propagates either way), ``console``, ``otlp`` (OTLP over
    gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT``, batched; sampling per ``OTEL_TRACES_SAMPLER``,
    parent-based always-on by default) or ``memory`` (tests read spans back through
    :func:`memory_exporter`).
    """
    global _memory_exporter
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if exporter == "memory" and _memory_exporter is None:
            _memory_exporter = InMemorySpanExporter()
            current.add_span_processor(SimpleSpanProcessor(_memory_exporter))
            if isinstance(current.sampler, _Sampler):
                current.sampler.inner = _sampler_for(exporter)
        return current
    provider = TracerProvider(
        sampler=_Sampler(_sampler_for(exporter)),
        resource=Resource.create({"service.name": f"foodmesh-{service}"}),
    )
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "memory":
        _memory_exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_memory_exporter))
    trace.set_tracer_provider(provider)
    return provider


def memory_exporter() -> InMemorySpanExporter | None:
    """The in-memory exporter when tracing was set up with ``exporter="memory"``."""
    return _memory_exporter


def tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def inject_headers(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Adds the current trace context (``traceparent``) to message headers (NATS, HTTP)."""
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> object:
    """The trace context carried by message headers, to parent a consumer's span."""
    return propagate.extract(dict(headers or {}))


@contextlib.contextmanager
def consumer_span(
    name: str,
    headers: Mapping[str, str] | None = None,
    *,
    subject: str = "",
    batch: Iterable[Mapping[str, str] | None] = (),
) -> Iterator[trace.Span]:
    """A CONSUMER span around handling messages from NATS.

    One message: the span continues the trace its publisher put in ``headers``
    (``traceparent``, written with the outbox row), so an event's publish and its
    handling in another service are one trace. A ``batch`` handled at once: a new
    trace, linked to each message's (OpenTelemetry's convention for batch receives).
    """
    links = []
    for h in batch:
        ctx = trace.get_current_span(propagate.extract(dict(h or {}))).get_span_context()
        if ctx.is_valid:
            links.append(Link(ctx))
    attributes: dict[str, str | int] = {"messaging.system": "nats"}
    if subject:
        attributes["messaging.destination.name"] = subject
    if links:
        attributes["messaging.batch.message_count"] = len(links)
    with tracer().start_as_current_span(
        name,
        context=propagate.extract(dict(headers or {})) if headers else None,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    ) as span:
        yield span
