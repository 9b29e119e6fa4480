"""OpenTelemetry set-up: one tracer provider per process, W3C trace context across hops."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = [
    "extract_context",
    "inject_headers",
    "memory_exporter",
    "setup_tracing",
    "tracer",
]

_TRACER_NAME = "foodmesh"
_memory_exporter: InMemorySpanExporter | None = None


def setup_tracing(service: str, *, exporter: str = "none") -> TracerProvider:
    """Installs the global tracer provider (once per process) and returns it.

    ``exporter`` is ``none`` (spans are made, so context still propagates, but
    go nowhere), ``console`` or ``memory`` (tests read them back through
    :func:`memory_exporter`).
    """
    global _memory_exporter
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if exporter == "memory" and _memory_exporter is None:
            _memory_exporter = InMemorySpanExporter()
            current.add_span_processor(SimpleSpanProcessor(_memory_exporter))
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": f"foodmesh-{service}"}))
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
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
