"""What every typed client shares: one channel, default deadlines, retries, tracing.

Retries are gRPC's own (a service config on the channel, gRFC A6), derived from
each method's ``idempotency_level`` in the contract: ``NO_SIDE_EFFECTS`` and
``IDEMPOTENT`` methods are retried on UNAVAILABLE with exponential backoff and
jitter; every other method is tried once. Every call carries a deadline.

Reconnection suits a mesh whose peers restart in seconds: each channel has its own
subchannels (gRPC shares them between channels to one target, so a new client would
inherit an old failure), and reconnect backoff is capped at two seconds (gRPC's default
grows to 120 s). Calls fail fast while a peer is unreachable, so callers with a fallback
(a cached menu, a routing estimate) use it at once; a client whose calls may rather wait
for the peer within their deadline sets ``wait_for_ready`` (``waitForReady`` in the
service config: safe for every method, as a call is not sent until the connection is up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
from google.protobuf import descriptor, descriptor_pb2

from foodmesh.core.tls import TlsFiles

__all__ = [
    "ClientOptions",
    "RetryPolicy",
    "BaseClient",
    "mesh_channel_args",
    "open_channel",
    "retryable_methods",
    "service_config",
]

#: Call metadata: ``(("authorization", "Bearer ..."),)``.
Metadata = Sequence[tuple[str, str]]

_IDEMPOTENT = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's retry policy for idempotent methods (transparent, with jittered backoff)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def as_json(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s:g}s",
            "maxBackoff": f"{self.max_backoff_s:g}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client calls: default deadline, retries, tracing."""

    deadline_s: float = 5.0
    #: Deadline of a stream (driver sessions, tracking): long, but never infinite.
    stream_deadline_s: float = 3600.0
    retry: RetryPolicy = RetryPolicy()
    tracing: bool = True
    #: Metadata sent with every call (e.g. the caller's bearer token).
    metadata: tuple[tuple[str, str], ...] = ()
    #: Called before every call for metadata that changes: a service's short-lived token
    #: (``foodmesh.core.auth.ServiceCredentials.metadata``), minted again before it expires.
    credentials: Callable[[], Metadata] | None = None
    #: Extra channel arguments, e.g. ``(("grpc.max_receive_message_length", 8 << 20),)``.
    channel_args: tuple[tuple[str, Any], ...] = ()
    #: Reconnect backoff after a lost connection: first wait, and the cap it grows to.
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 2.0
    #: Unary calls wait (within their deadline) for a connection instead of failing fast.
    wait_for_ready: bool = False
    #: TLS to dial with; None reads ``FOODMESH_TLS_CA`` (see foodmesh.core.tls), plaintext without.
    tls: TlsFiles | None = None


def retryable_methods(service: descriptor.ServiceDescriptor) -> list[str]:
    """Names of the unary methods whose contract says a retry is safe."""
    return [
        m.name
        for m in service.methods
        if not m.client_streaming
        and not m.server_streaming
        and m.GetOptions().idempotency_level in _IDEMPOTENT
    ]


def service_config(
    services: Iterable[descriptor.ServiceDescriptor], *, options: ClientOptions
) -> str:
    """The JSON service config: retries for idempotent methods, a timeout for each unary."""
    configs: list[dict[str, Any]] = []
    for svc in services:
        retry = retryable_methods(svc)
        if retry:
            configs.append(
                {
                    "name": [{"service": svc.full_name, "method": m} for m in retry],
                    "retryPolicy": options.retry.as_json(),
                    "timeout": f"{options.deadline_s:g}s",
                    "waitForReady": options.wait_for_ready,
                }
            )
        once = [
            m.name
            for m in svc.methods
            if not m.client_streaming and not m.server_streaming and m.name not in retry
        ]
        if once:
            # Streams get no entry: they live for minutes, under their own deadline.
            configs.append(
                {
                    "name": [{"service": svc.full_name, "method": m} for m in once],
                    "timeout": f"{options.deadline_s:g}s",
                    "waitForReady": options.wait_for_ready,
                }
            )
    return json.dumps({"methodConfig": configs})


#: How long one connection attempt may take (gRPC's "min connect timeout", 20 s by default):
#: a refused connection fails at once anyway; this bounds a peer that does not answer.
_CONNECT_TIMEOUT_MS = 5000


def mesh_channel_args(
    *, reconnect_initial_s: float = 0.2, reconnect_max_s: float = 2.0
) -> list[tuple[str, Any]]:
    """Channel arguments of every channel into the mesh (the typed clients', the gateway's,
    the dashboard's): keepalives, subchannels of its own, and reconnects suited to peers that
    restart in seconds (see the module's docstring)."""
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),
        # Each call to the next ready address: a target naming several replicas (a headless
        # Service's dns:/// name in Kubernetes) spreads its calls over all of them.
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.initial_reconnect_backoff_ms", int(reconnect_initial_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", _CONNECT_TIMEOUT_MS),
        ("grpc.max_reconnect_backoff_ms", int(reconnect_max_s * 1000)),
    ]


def _interceptors(options: ClientOptions) -> Sequence[grpc.aio.ClientInterceptor]:
    if not options.tracing:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def open_channel(
    target: str,
    *,
    services: Iterable[descriptor.ServiceDescriptor],
    options: ClientOptions | None = None,
) -> grpc.aio.Channel:
    """A channel to ``target`` configured for ``services``, over TLS when given a CA bundle."""
    options = options or ClientOptions()
    args: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(services, options=options)),
        ("grpc.enable_retries", 1),
        *mesh_channel_args(
            reconnect_initial_s=options.reconnect_initial_s,
            reconnect_max_s=options.reconnect_max_s,
        ),
        *options.channel_args,
    ]
    tls = options.tls if options.tls is not None else TlsFiles.from_env()
    credentials = tls.channel_credentials()
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=args, interceptors=_interceptors(options)
        )
    return grpc.aio.insecure_channel(target, options=args, interceptors=_interceptors(options))


class BaseClient:
    """A typed client of one service: owns its channel when given a target string."""

    SERVICE: ClassVar[descriptor.ServiceDescriptor]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        self.options = options or ClientOptions()
        if isinstance(target, str):
            self.channel = open_channel(target, services=[self.SERVICE], options=self.options)
            self._owns_channel = True
        else:
            self.channel = target
            self._owns_channel = False

    def _deadline(self, deadline_s: float | None) -> float:
        return self.options.deadline_s if deadline_s is None else deadline_s

    def _metadata(self, extra: Metadata) -> tuple[tuple[str, str], ...]:
        fresh = self.options.credentials() if self.options.credentials is not None else ()
        return (*self.options.metadata, *fresh, *extra)

    def _stream_deadline(self, deadline_s: float | None) -> float:
        return self.options.stream_deadline_s if deadline_s is None else deadline_s

    async def close(self) -> None:
        """Closes the channel if this client opened it."""
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
