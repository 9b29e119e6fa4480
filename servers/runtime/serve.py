"""``serve()``: how every foodmesh service starts, runs and stops.

Every service is a :class:`ServiceSpec`: a name, the dependencies it needs and
a function that adds its servicers to a server. ``serve`` builds the rest the
same way for all of them: the interceptor stack, the health service (NOT_SERVING
until every dependency answers, and again whenever one stops answering),
reflection, Prometheus metrics, tracing, and graceful shutdown on SIGTERM or
SIGINT (health NOT_SERVING, stop accepting, drain in-flight calls within the
grace period, then close pools).
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from foodmesh.core import telemetry
from foodmesh.core.errors import DependencyUnavailable, FoodmeshError
from foodmesh.core.events import Stream
from foodmesh.core.metrics import rpc_metrics, serve_metrics
from foodmesh.core.nats import Subjects, check_nats, open_nats
from foodmesh.core.redis import Keys, check_redis, redis_client
from foodmesh.core.services import KNOWN
from foodmesh.core.settings import env_int
from foodmesh.core.streams import StreamSlots
from foodmesh.core.tls import TlsConfigError, require_tls_outside_dev
from servers.runtime.auth import Authorizer, access_rules
from servers.runtime.config import Settings
from servers.runtime.context import RequestIdFilter
from servers.runtime.health import Check, HealthReporter
from servers.runtime.interceptors import ServerInterceptor
from servers.runtime.limits import MAX_REQUEST_BYTES
from servers.runtime.outbox import OutboxRelay, RelayFactory, RelayStart
from servers.runtime.postgres import check_postgres, describe_url

__all__ = [
    "Dependency",
    "Resources",
    "RunningService",
    "ServiceSpec",
    "StartupError",
    "configure_logging",
    "run_service",
    "serve",
]

_log = logging.getLogger("foodmesh.serve")


class Dependency(enum.Enum):
    POSTGRES = "postgres"
    REDIS = "redis"
    NATS = "nats"


class StartupError(FoodmeshError):
    """The service cannot start (port in use, dependency never answered); the message says why."""


class Resources:
    """The connections a service uses, opened lazily so health can report while they come up.

    Service code reads ``resources.pg`` / ``.redis`` / ``.nats`` / ``.js``; each
    raises :class:`DependencyUnavailable` if the dependency is not declared or
    not (yet) connected, which callers see as UNAVAILABLE.
    """

    def __init__(self, settings: Settings, needs: frozenset[Dependency]) -> None:
        self.settings = settings
        self.needs = needs
        self.keys = Keys(settings.namespace)
        self.subjects = Subjects(settings.namespace)
        self._pg: AsyncConnectionPool | None = None
        self._redis: aioredis.Redis | None = None
        self._nats: NATS | None = None
        self._nats_lock = asyncio.Lock()

    def _missing(self, dep: Dependency, var: str) -> DependencyUnavailable:
        if dep not in self.needs:
            return DependencyUnavailable(f"{dep.value} is not a declared dependency")
        return DependencyUnavailable(f"{dep.value} is not connected yet ({var})")

    @property
    def pg(self) -> AsyncConnectionPool:
        if self._pg is None:
            raise self._missing(Dependency.POSTGRES, "FOODMESH_POSTGRES_URL")
        return self._pg

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise self._missing(Dependency.REDIS, "FOODMESH_REDIS_URL")
        return self._redis

    @property
    def nats(self) -> NATS:
        if self._nats is None or not self._nats.is_connected:
            raise self._missing(Dependency.NATS, "FOODMESH_NATS_URL")
        return self._nats

    @property
    def js(self) -> JetStreamContext:
        return self.nats.jetstream()

    def configured_target(self, service: str) -> str | None:
        """Where ``service`` listens if ``FOODMESH_<THIS>_<SERVICE>_TARGET`` says so, else None."""
        s = self.settings
        return s.extra.get(f"FOODMESH_{s.service.upper()}_{service.upper()}_TARGET") or None

    def target(self, service: str) -> str:
        """Where ``service`` listens: :meth:`configured_target`, else its port on this host."""
        explicit = self.configured_target(service)
        if explicit:
            return explicit
        port = next(i.grpc_port for i in KNOWN if i.name == service)
        return f"{self.settings.host}:{port}"

    def start_relay(
        self,
        stream: Stream,
        schema: str,
        *,
        make: RelayFactory | None = OutboxRelay,
        on_start: Callable[[OutboxRelay], None] | None = None,
    ) -> RelayStart:
        """Starts publishing the outbox in ``schema`` to ``stream`` once NATS answers.

        ``make`` builds the relay (None: declare the stream, publish nothing);
        ``on_start`` is handed it when it runs. Stop it with ``await ....stop()``.
        """
        starter = RelayStart(
            js=lambda: self.js,
            pool=lambda: self.pg,
            stream=stream.config(self.subjects),
            schema=schema,
            make=make,
            on_start=on_start,
        )
        starter.start()
        return starter

    async def open(self) -> None:
        """Creates clients without waiting for servers; checks connect them."""
        s = self.settings
        for dep, url, var in (
            (Dependency.POSTGRES, s.postgres_url, "FOODMESH_POSTGRES_URL"),
            (Dependency.REDIS, s.redis_url, "FOODMESH_REDIS_URL"),
            (Dependency.NATS, s.nats_url, "FOODMESH_NATS_URL"),
        ):
            if dep in self.needs and not url:
                raise StartupError(
                    f"{var} is not set but the {s.service} service needs {dep.value}: "
                    "run `foodmesh infra up` and export the URLs it prints"
                )
        if Dependency.POSTGRES in self.needs:
            self._pg = AsyncConnectionPool(
                s.postgres_url,
                min_size=1,
                max_size=int(s.extra.get(f"FOODMESH_{s.service.upper()}_PG_POOL_MAX", "10")),
                name=s.service,
                timeout=s.default_deadline_s,
                open=False,
                kwargs={"application_name": f"foodmesh-{s.service}", "connect_timeout": 2},
            )
            await self._pg.open(wait=False)
        if Dependency.REDIS in self.needs:
            # a burst beyond the pool waits for a connection instead of failing
            self._redis = redis_client(s.redis_url, name=s.service)

    async def _check_nats(self) -> None:
        async with self._nats_lock:
            if self._nats is None:
                self._nats = await open_nats(self.settings.nats_url, name=self.settings.service)
        await check_nats(self._nats)

    async def _check_pg(self) -> None:
        try:
            await check_postgres(self.pg)
        except Exception as exc:
            raise DependencyUnavailable(
                f"PostgreSQL at {describe_url(self.settings.postgres_url)}: {exc}"
            ) from None

    async def _check_redis(self) -> None:
        await check_redis(self.redis)

    def checks(self) -> dict[str, Check]:
        found: dict[str, Check] = {}
        if Dependency.POSTGRES in self.needs:
            found["postgres"] = self._check_pg
        if Dependency.REDIS in self.needs:
            found["redis"] = self._check_redis
        if Dependency.NATS in self.needs:
            found["nats"] = self._check_nats
        return found

    async def close(self) -> None:
        if self._nats is not None:
            try:
                await self._nats.drain()
            except Exception:  # already closed or never connected: nothing left to flush
                await self._nats.close()
            self._nats = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None


#: Adds a service's servicers to the server; may return a coroutine function run on stop.
Register = Callable[[grpc.aio.Server, Resources], Awaitable[Callable[[], Awaitable[None]] | None]]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What makes one service: its name, gRPC services, dependencies and registration."""

    name: str
    #: Fully-qualified gRPC service names, e.g. ``("foodmesh.v1.OrderService",)``.
    grpc_services: tuple[str, ...]
    register: Register
    needs: frozenset[Dependency] = frozenset()
    migrations: Path | None = None
    #: Extra health checks beyond the declared dependencies (e.g. another service).
    extra_checks: Mapping[str, Check] = field(default_factory=dict)
    #: Services it always calls (at their default address when no ``_TARGET`` says
    #: otherwise): outside dev mode it needs a CA bundle to verify them.
    calls: tuple[str, ...] = ()


@dataclass(slots=True)
class RunningService:
    """A service that is up: where it listens and handles to its parts."""

    spec: ServiceSpec
    settings: Settings
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    resources: Resources
    health: HealthReporter
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def target(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


_LOG_FORMAT = "%(asctime)s %(levelname)-5s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """One log format for every process, with the request id on each line."""
    root = logging.getLogger()
    if any(getattr(h, "_foodmesh", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler._foodmesh = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def _server_options() -> list[tuple[str, int]]:
    return [
        # Without this two servers silently share a port and split its traffic.
        ("grpc.so_reuseport", 0),
        # The largest any method takes; each method's own limit is the interceptor's check.
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Rebalances long-lived clients across replicas after scale-out.
        ("grpc.max_connection_age_ms", 30 * 60_000),
        ("grpc.max_connection_age_grace_ms", 60_000),
        # Calls accepted but not yet taken by the handler loop. At gRPC's default (1,000)
        # a fleet reconnecting at once (a Location replica restarted: thousands of driver
        # streams in the same second) has most of its streams cancelled, and they all
        # reconnect again; these only bound what waits a moment to be served.
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 40_000),
    ]


def _stream_slots(settings: Settings) -> StreamSlots:
    """Concurrent streams one caller may hold: per method, and per order (0: no limit)."""
    p = f"FOODMESH_{settings.service.upper()}_"
    return StreamSlots(
        per_caller=env_int(settings.extra, f"{p}MAX_STREAMS_PER_CALLER", 8, lo=0),
        per_order=env_int(settings.extra, f"{p}MAX_STREAMS_PER_ORDER", 4, lo=0),
    )


def _server_credentials(spec: ServiceSpec, settings: Settings) -> grpc.ServerCredentials | None:
    try:
        return settings.tls.server_credentials()
    except TlsConfigError as exc:
        raise StartupError(f"{spec.name}: {exc}") from None


async def _plaintext_health(
    spec: ServiceSpec, settings: Settings, servicer: HealthServicer
) -> grpc.aio.Server | None:
    """A plaintext server of gRPC health only, for the kubelet (its probes speak no TLS).

    Served on ``FOODMESH_<SERVICE>_HEALTH_PORT`` when that is set; it answers the
    health protocol and nothing else, so the services stay behind TLS.
    """
    var = f"FOODMESH_{spec.name.upper()}_HEALTH_PORT"
    raw = settings.extra.get(var, "")
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StartupError(f"{var}={raw!r} is not valid: expected a port 1..65535")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        server.add_insecure_port(f"{settings.host}:{raw}")
    except RuntimeError:
        raise StartupError(
            f"cannot listen on {settings.host}:{raw}: set {var} to a free port"
        ) from None
    await server.start()
    return server


@asynccontextmanager
async def run_service(
    spec: ServiceSpec, settings: Settings, *, wait_ready: bool = True
) -> AsyncIterator[RunningService]:
    """Runs ``spec`` until the block exits, then shuts it down gracefully.

    With ``wait_ready`` the block is entered only once every dependency answers
    (health SERVING); if that takes longer than ``startup_timeout_s``,
    :class:`StartupError` names the dependencies that did not answer.
    """
    telemetry.setup_tracing(spec.name, exporter=settings.trace_exporter)
    interceptor = ServerInterceptor(
        metrics=rpc_metrics(),
        default_deadline_s=settings.default_deadline_s,
        stream_max_age_s=settings.stream_max_age_s,
        authorizer=Authorizer(
            settings.auth_secret,
            access_rules(spec.grpc_services),
            service_secret=settings.service_key,
        ),
        stream_slots=_stream_slots(settings),
    )
    server = grpc.aio.server(interceptors=[interceptor], options=_server_options())
    resources = Resources(settings, spec.needs)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    checks = {**resources.checks(), **spec.extra_checks}
    health = HealthReporter(
        health_servicer, spec.grpc_services, checks, interval_s=settings.health_check_interval_s
    )
    on_stop: Callable[[], Awaitable[None]] | None = None
    metrics_server: WSGIServer | None = None
    health_server: grpc.aio.Server | None = None
    started = False
    try:
        await resources.open()
        on_stop = await spec.register(server, resources)
        reflection.enable_server_reflection(
            (
                *spec.grpc_services,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{settings.host}:{settings.port}"
        credentials = _server_credentials(spec, settings)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise StartupError(
                f"cannot listen on {address} (port in use?): set "
                f"FOODMESH_{spec.name.upper()}_PORT to a free port, or 0 to pick one"
            )
        metrics_port: int | None = None
        if settings.metrics_enabled:
            try:
                metrics_server = serve_metrics(settings.host, settings.metrics_port)
                metrics_port = int(metrics_server.server_address[1])
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {settings.host}:{settings.metrics_port} ({exc}): "
                    f"set FOODMESH_{spec.name.upper()}_METRICS_PORT to a free port"
                ) from None
        await health.start()
        health_server = await _plaintext_health(spec, settings, health_servicer)
        await server.start()
        started = True
        # What start-up made lives as long as the process: out of the collector's sight,
        # full collections stop walking it (they had cost ~30 ms at p99.9). Collect first
        # so no garbage is frozen for good.
        gc.collect()
        gc.freeze()
        # Streams keep many small objects alive for minutes, which the default thresholds
        # promote and then walk in full collections every few seconds (40-65 ms each, the
        # ack tail of Location's ingest); a tenth as often, here.
        gc.set_threshold(700, 10, 100)
        running = RunningService(spec, settings, server, port, metrics_port, resources, health)
        _log.info(
            "%s listening on %s:%d (metrics :%s)", spec.name, settings.host, port, metrics_port
        )
        if wait_ready and not await health.wait_serving(settings.startup_timeout_s):
            failing = ", ".join(f"{k} ({v})" for k, v in health.failing.items()) or "unknown"
            raise StartupError(
                f"{spec.name}: dependencies did not answer within "
                f"{settings.startup_timeout_s:g}s: {failing}"
            )
        yield running
    finally:
        await health.shutdown()
        if started:
            _log.info("%s draining (grace %.1fs)", spec.name, settings.shutdown_grace_s)
            await server.stop(settings.shutdown_grace_s)
        if health_server is not None:
            await health_server.stop(None)
        if on_stop is not None:
            await on_stop()
        await resources.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if started:
            _log.info("%s stopped", spec.name)


async def _serve(spec: ServiceSpec, settings: Settings) -> None:
    async with run_service(spec, settings) as running:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, running.request_stop)
        await running.wait_stopped()
        _log.info("%s: stop requested", spec.name)


def serve(spec: ServiceSpec, settings: Settings | None = None) -> int:
    """Runs one service in the foreground until SIGTERM/SIGINT; returns the exit code.

    Expected failures (bad configuration, port in use, a dependency that never
    answers) print one line naming the problem and return 1, without a traceback.
    """
    # Before the settings are read, so what reading them logs (FOODMESH_DEV=1's WARNING)
    # has the one format; the level follows FOODMESH_LOG_LEVEL below.
    configure_logging("INFO")
    try:
        settings = settings or Settings.from_env(spec.name)
        # Production speaks TLS between services; plaintext is for dev machines only.
        dials = bool(spec.calls) or any(k.endswith("_TARGET") for k in settings.extra)
        require_tls_outside_dev(settings.tls, who=spec.name, serves=True, dials=dials)
    except FoodmeshError as exc:
        print(f"foodmesh {spec.name}: {exc.message}", file=sys.stderr)
        return 1
    except TlsConfigError as exc:
        print(f"foodmesh {spec.name}: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve(spec, settings))
    except FoodmeshError as exc:
        print(f"foodmesh {spec.name}: {exc.message}", file=sys.stderr)
        return 1
    return 0
