"""The Location service: live driver positions, presence, history and order tracking.

``SPEC`` is what ``foodmesh serve location`` runs. Its parts: ``fixes`` (validation,
ordering, throttling) and ``policy`` (the reporting interval) are pure; ``ingest``
batches fixes into ``store`` (Redis) and NATS; ``history`` writes them to
PostgreSQL; ``presence`` takes silent drivers offline; ``tracking`` is TrackOrder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from clients import ClientOptions, DispatchClient, EtaClient, OrderClient
from foodmesh.core.auth import ServiceCredentials
from foodmesh.v1 import location_pb2_grpc
from servers.location.history import HistoryWriter
from servers.location.ingest import Ingest
from servers.location.presence import Presence
from servers.location.service import LocationConfig, LocationServicer
from servers.location.store import LiveStore
from servers.location.tracking import EtaSource, OrderSource, Tracker
from servers.runtime.redis_wire import RedisWire
from servers.runtime.serve import Dependency, Resources, ServiceSpec

__all__ = ["SPEC", "build"]


async def build(
    server: grpc.aio.Server,
    resources: Resources,
    *,
    orders: OrderSource | None = None,
    eta: EtaSource | None = None,
) -> Callable[[], Awaitable[None]]:
    """Wires the service's parts, starts its tasks; returns what stops them.

    ``orders`` and ``eta`` replace the clients of those services (a test hands in
    clients of its own servers).
    """
    s = resources.settings
    state_dir = s.extra.get("FOODMESH_LOCATION_STATE_DIR")
    config = LocationConfig.from_extra(
        s.extra, state_dir=Path(state_dir) / "history-spill" if state_dir else None
    )
    # Fix writes take a lean pipelined connection (hiredis, one timer per batch).
    wire = RedisWire(s.redis_url) if s.redis_url.startswith("redis://") else None
    store = LiveStore(resources.redis, resources.keys, wire=wire)
    history = HistoryWriter(resources.pg, config.history)
    presence = Presence(
        store,
        js=lambda: resources.js,
        subjects=resources.subjects,
        timeout_s=config.presence_timeout_s,
    )
    ingest = Ingest(
        store,
        history,
        nats=lambda: resources.nats,
        subjects=resources.subjects,
        on_presence=presence.came_online,
        linger_s=config.linger_s,
    )
    # Short-lived service tokens under the service key, minted again before they expire.
    credentials = ServiceCredentials(s.service_key, subject="location")
    options = ClientOptions(credentials=credentials.metadata)
    order_client = OrderClient(resources.target("order"), options=options)
    drivers = DispatchClient(resources.target("dispatch"), options=options)
    eta_client = EtaClient(resources.target("eta"), options=options)
    tracker = Tracker(
        store=store,
        nats=lambda: resources.nats,
        subjects=resources.subjects,
        orders=orders if orders is not None else order_client,
        drivers=drivers,
        eta=eta if eta is not None else eta_client,
        eta_every_s=config.eta_every_s,
    )
    servicer = LocationServicer(
        store=store,
        ingest=ingest,
        history=history,
        presence=presence,
        tracker=tracker,
        config=config,
    )
    location_pb2_grpc.add_LocationServiceServicer_to_server(servicer, server)
    ingest.start()
    history.start()
    presence.start()

    async def stop() -> None:
        await ingest.stop()
        await presence.stop()
        await history.stop()
        if wire is not None:
            await wire.close()
        for client in (order_client, drivers, eta_client):
            with contextlib.suppress(Exception):
                await client.close()

    return stop


SPEC = ServiceSpec(
    name="location",
    grpc_services=("foodmesh.v1.LocationService",),
    register=build,
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.NATS}),
    migrations=Path(__file__).parent / "migrations",
    calls=("order", "dispatch", "eta"),
)
