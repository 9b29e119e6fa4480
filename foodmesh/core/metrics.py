"""Prometheus metrics for every RPC, and the HTTP endpoint that exposes them."""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

__all__ = ["MethodMetrics", "RpcMetrics", "rpc_metrics", "serve_metrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class RpcMetrics:
    """The standard RPC metric families (names follow grpc-ecosystem/go-grpc-prometheus)."""

    started: Counter
    handled: Counter
    latency: Histogram
    in_flight: Gauge
    stream_msgs_sent: Counter

    def method(self, service: str, name: str, kind: str) -> MethodMetrics:
        """The children labelled for one method, to hold instead of looking them up per call."""
        return MethodMetrics(self, (service, name, kind))


class MethodMetrics:
    """One method's labelled metric children, looked up once rather than on every call.

    ``labels()`` takes a lock and a dict lookup each time; a method's children never
    change (nothing here removes label sets), so they are fetched once. The
    ``handled`` child per status code and the stream-message child are made on first
    use, so the exposition only lists series that have happened, as before.
    """

    __slots__ = ("_family", "_handled", "_labels", "_sent", "in_flight", "latency", "started")

    def __init__(self, family: RpcMetrics, labels: tuple[str, str, str]) -> None:
        self._family = family
        self._labels = labels
        self._handled: dict[str, Counter] = {}
        self._sent: Counter | None = None
        self.started: Counter = family.started.labels(*labels)
        self.in_flight: Gauge = family.in_flight.labels(*labels)
        self.latency: Histogram = family.latency.labels(*labels)

    def handled(self, code: str) -> Counter:
        """The ``grpc_server_handled_total`` child for status ``code`` (e.g. ``"OK"``)."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._family.handled.labels(*self._labels, code)
        return child

    def msgs_sent(self) -> Counter:
        """The ``grpc_server_msg_sent_total`` child (streams only)."""
        if self._sent is None:
            self._sent = self._family.stream_msgs_sent.labels(*self._labels)
        return self._sent


_metrics: dict[int, RpcMetrics] = {}


def rpc_metrics(registry: CollectorRegistry = REGISTRY) -> RpcMetrics:
    """The RPC metric families registered in ``registry`` (created once per registry)."""
    found = _metrics.get(id(registry))
    if found is not None:
        return found
    labels = ("grpc_service", "grpc_method", "grpc_type")
    made = RpcMetrics(
        started=Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=registry
        ),
        handled=Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        ),
        latency=Histogram(
            "grpc_server_handling_seconds",
            "Time from receiving an RPC to its completion.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        in_flight=Gauge(
            "grpc_server_in_flight", "RPCs being handled right now.", labels, registry=registry
        ),
        stream_msgs_sent=Counter(
            "grpc_server_msg_sent_total",
            "Stream messages sent by the server.",
            labels,
            registry=registry,
        ),
    )
    _metrics[id(registry)] = made
    return made


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serves ``/metrics`` over HTTP on ``port`` (0 picks a free one) from a daemon thread."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
