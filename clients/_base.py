"""What every typed client shares: one channel, default deadlines, retries, tracing.

Retries are gRPC's own (a service config on the channel, gRFC A6), derived from
each method's ``idempotency_level`` in the contract: ``NO_SIDE_EFFECTS`` and
``IDEMPOTENT`` methods are retried on UNAVAILABLE with exponential backoff and
jitter; every other method is tried once. Every call carries a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
from google.protobuf import descriptor, descriptor_pb2

__all__ = [
    "ClientOptions",
    "RetryPolicy",
    "BaseClient",
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
    #: (``foodmesh.auth.ServiceCredentials.metadata``), minted again before it expires.
    credentials: Callable[[], Metadata] | None = None
    #: Extra channel arguments, e.g. ``(("grpc.max_receive_message_length", 8 << 20),)``.
    channel_args: tuple[tuple[str, Any], ...] = ()


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
                }
            )
    return json.dumps({"methodConfig": configs})


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
    """An insecure channel to ``target`` configured for ``services`` (TLS ends at the mesh)."""
    options = options or ClientOptions()
    args: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(services, options=options)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        *options.channel_args,
    ]
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
