"""Running the real Location service for a test, and driving it like a driver's app."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from clients import ClientOptions, LocationClient
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
from foodmesh.v1 import location_pb2
from servers import location
from servers.location.tracking import EtaSource, OrderSource
from servers.runtime.config import Settings
from servers.runtime.migrate import load_migrations, migrate
from servers.runtime.serve import RunningService, ServiceSpec, run_service


def token(role: str, subject: str) -> tuple[tuple[str, str], ...]:
    return bearer(mint_token(DEV_SECRET, subject=subject, role=role))


class FreshServiceToken(tuple[tuple[str, str], ...]):
    """Service-token metadata minted again each time a client sends it.

    Service tokens live at most 15 minutes and a session is longer than that; a client
    unpacks its metadata per call, which iterates this afresh.
    """

    def __new__(cls, subject: str = "tests") -> FreshServiceToken:
        fresh = super().__new__(cls, token("service", subject))
        fresh.subject = subject
        return fresh

    subject: str

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(token("service", self.subject))


SERVICE = FreshServiceToken()


@asynccontextmanager
async def location_service(
    *,
    pg_url: str,
    redis_url: str,
    nats_url: str,
    namespace: str,
    state_dir: Path,
    extra: Mapping[str, str] | None = None,
    orders: OrderSource | None = None,
    eta: EtaSource | None = None,
    migrated: bool = False,
) -> AsyncIterator[RunningService]:
    if not migrated:
        assert location.SPEC.migrations is not None
        await migrate(
            pg_url, service="location", migrations=load_migrations(location.SPEC.migrations)
        )
    settings = Settings(
        service="location",
        postgres_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        metrics_enabled=False,
        health_check_interval_s=0.2,
        shutdown_grace_s=1.0,
        extra={
            # Services a test does not hand in are away (port 1 refuses at once), never
            # whatever happens to listen on the default ports (a developer's `up`).
            "FOODMESH_LOCATION_ORDER_TARGET": "127.0.0.1:1",
            "FOODMESH_LOCATION_DISPATCH_TARGET": "127.0.0.1:1",
            "FOODMESH_LOCATION_ETA_TARGET": "127.0.0.1:1",
            "FOODMESH_LOCATION_PRESENCE_TIMEOUT_S": "30",
            "FOODMESH_LOCATION_HISTORY_FLUSH_S": "0.1",
            "FOODMESH_LOCATION_STATE_DIR": str(state_dir),
            **(extra or {}),
        },
    )
    spec = ServiceSpec(
        name="location",
        grpc_services=location.SPEC.grpc_services,
        register=functools.partial(location.build, orders=orders, eta=eta),
        needs=location.SPEC.needs,
    )
    async with run_service(spec, settings) as running:
        yield running


def fix(
    lat: float, lon: float, *, ts: float | None = None, seq: int = 0, speed_mph: float = 0.0
) -> location_pb2.LocationFix:
    f = location_pb2.LocationFix(
        lat=lat, lon=lon, accuracy=5.0, heading=90.0, speed=speed_mph, seq=seq
    )
    f.timestamp.FromNanoseconds(int((time.time() if ts is None else ts) * 1e9))
    return f


class DriverApp:
    """One driver's open StreamLocations: send fixes, read acks."""

    def __init__(self, target: str, driver_id: str) -> None:
        self.driver_id = driver_id
        self.client = LocationClient(
            target, options=ClientOptions(metadata=token("driver", driver_id))
        )
        self._out: asyncio.Queue[location_pb2.StreamLocationsRequest | None] = asyncio.Queue()
        self._acks: AsyncIterator[location_pb2.StreamLocationsResponse] | None = None

    async def __aenter__(self) -> DriverApp:
        async def requests() -> AsyncIterator[location_pb2.StreamLocationsRequest]:
            while (req := await self._out.get()) is not None:
                yield req

        self._acks = self.client.stream_locations(requests())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._out.put(None)
        await self.client.close()

    async def send(self, *fixes: location_pb2.LocationFix) -> location_pb2.StreamLocationsResponse:
        assert self._acks is not None
        await self._out.put(location_pb2.StreamLocationsRequest(fixes=list(fixes)))
        async with asyncio.timeout(5):  # not wait_for: it can swallow a cancellation (3.11)
            return await anext(self._acks)


async def wait_for(predicate: object, *, within: float = 3.0, every: float = 0.02) -> float:
    """Polls an async predicate until true; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if await predicate():  # type: ignore[operator]
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


__all__ = ["SERVICE", "DriverApp", "fix", "grpc", "location_service", "token", "wait_for"]
