"""The Dispatch service: drivers' sessions, matching orders to drivers, offers, assignments.

``SPEC`` is what ``foodmesh serve dispatch`` runs. Its parts: ``trips`` (the planner),
``assignment``, ``scoring``, ``matching``, ``live`` and ``offers`` are pure (the
decisions, the planner shared with ``foodmesh replay``; ``live`` translates the
store's state into its inputs); ``store`` is PostgreSQL (schema ``fleet``: one store
per use case, on one pool); ``engine`` runs the planning rounds of the regions this
replica leads
(``leases``: NATS KV), offer expiry, the events in and the calls out; ``sessions``
delivers to drivers' streams from any replica; ``routes`` (pure) and ``navigator``
send drivers their routes and reroute them; ``service`` is the thin servicer.

Settings (``FOODMESH_DISPATCH_*``):

- ``BATCH_INTERVAL_S`` (2), ``OFFER_EXPIRY_S`` (20), ``MAX_ATTEMPTS`` (3, then escalated);
- ``RADIUS_MILES`` (5), ``WIDE_RADIUS_MILES`` (10, after a round found nobody),
  ``ESCALATED_RADIUS_MILES`` (15);
- ``SPEED_MPS`` (6.9 / 1.35: the planner's straight-line speed), ``PICKUP_SERVICE_S``,
  ``DROPOFF_SERVICE_S`` (120 each), ``PROMISE_S`` (2400);
- ``NO_DRIVER_AFTER_S`` (30: then the order is escalated and ops and the customer told),
  ``FREE_CANCEL_AFTER_S`` (600: from then its customer may cancel free),
  ``ESCALATION_EVERY_S`` (1): see ``escalation.py``;
- ``LEASE_S`` (6: a dead leader's regions are taken over within it), ``REGION_PRECISION``
  (4: regions are geohash-4 cells of the restaurant);
- ``LOCATION_TARGET``, ``ORDER_TARGET`` (default: their ports on this host);
- ``ETA_TARGET``: drivers' routes come from the ETA service's Route and CheckReroute
  (``navigator``); unset, or when it does not answer, a
  driver gets a straight-line stand-in flagged ``source = STRAIGHT_LINE`` and no
  rerouting;
- ``PRICING_TARGET``: when set, the opportunity term's demand is Pricing's
  ForecastDemand (orders expected in the next half hour in the drop-off's geohash-5
  cell, cached 60 s, ``demand.py``); unset, or when it does not answer, the pending
  orders around the drop-off;
- ``MAX_ORDERS`` (1: K, orders a driver carries at once), ``KITCHEN_RELEASE_S`` (unset:
  offers at once; else an order is offered when its driver must set off to be there
  this many seconds before the food is ready), ``KITCHEN_RELEASE_SPREAD`` (0: plus this
  share of the order's prep estimate, its uncertainty); ``foodmesh up``'s city sets 2,
  30 and 0.15;
- ``REROUTE_CHECK_S`` (12: a driver's route is checked at most this often),
  ``ROUTE_DEADLINE_S`` (2), ``ROUTE_CONCURRENCY`` (16 calls in flight).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from clients import ClientOptions, EtaClient, LocationClient, OrderClient, PricingClient
from foodmesh.core.auth import ServiceCredentials
from foodmesh.core.events import DISPATCH, DISPATCH_LEASES
from foodmesh.v1 import dispatch_pb2_grpc
from servers.runtime.serve import Dependency, Resources, ServiceSpec

__all__ = ["SPEC", "build"]

_log = logging.getLogger("foodmesh.dispatch")


async def build(server: grpc.aio.Server, resources: Resources) -> Callable[[], Awaitable[None]]:
    """Wires the service's parts and starts the engine; returns what stops them."""
    from foodmesh.core.nats import ensure_kv
    from servers.dispatch.convert import event_builder
    from servers.dispatch.demand import Forecasts
    from servers.dispatch.engine import Engine, EngineConfig
    from servers.dispatch.escalation import Escalation, EscalationRules
    from servers.dispatch.leases import Leases
    from servers.dispatch.navigator import Navigator, NavigatorConfig
    from servers.dispatch.service import DispatchServicer
    from servers.dispatch.sessions import SessionHub
    from servers.dispatch.store import Fleet

    s = resources.settings
    config = EngineConfig.from_extra(s.extra)
    # Short-lived service tokens under the service key, minted again before they expire.
    credentials = ServiceCredentials(s.service_key, subject="dispatch")
    options = ClientOptions(credentials=credentials.metadata)
    location = LocationClient(resources.target("location"), options=options)
    orders = OrderClient(resources.target("order"), options=options)
    bare = OrderClient(resources.target("order"))  # the caller's token per call
    travel = None
    forecast = None
    if (t := resources.configured_target("eta")) is not None:
        travel = EtaClient(t, options=options)
    fleet = Fleet.on(resources.pg, event_builder(resources.subjects))
    hub = SessionHub(lambda: resources.nats, resources.subjects)

    async def kv():  # type: ignore[no-untyped-def]
        return await ensure_kv(
            resources.js, resources.subjects.bucket(DISPATCH_LEASES), ttl_s=config.lease_s
        )

    owner = f"{s.host}-{uuid.uuid4().hex[:8]}"
    engine = Engine(
        fleet=fleet,
        hub=hub,
        location=location,
        orders=orders,
        travel=travel,
        leases=Leases(kv, owner=owner),
        js=lambda: resources.js,
        subjects=resources.subjects,
        config=config,
    )
    if (t := resources.configured_target("pricing")) is not None:
        forecast = PricingClient(t, options=options)
        engine.forecasts = Forecasts(forecast)
    engine.escalation = Escalation(
        pool=resources.pg, announce=event_builder(resources.subjects), orders=orders,
        rules=EscalationRules.from_extra(s.extra), offer_rules=config.rules,
        escalated_radius_miles=config.match.escalated_radius_miles, clock=engine.clock,
    )  # fmt: skip
    navigator = Navigator(
        fleet=fleet,
        eta=travel,
        location=location,
        nats=lambda: resources.nats,
        subjects=resources.subjects,
        config=NavigatorConfig.from_extra(s.extra),
    )
    servicer = DispatchServicer(
        fleet=fleet, engine=engine, navigator=navigator, order_steps=bare, secret=s.service_key
    )
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(servicer, server)
    engine.start()
    navigator.start()
    relay = resources.start_relay(DISPATCH, "fleet")

    async def stop() -> None:
        await hub.stop()
        await navigator.stop()
        await engine.stop()
        await relay.stop()
        for client in (location, orders, bare, travel, forecast):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()

    return stop


SPEC = ServiceSpec(
    name="dispatch",
    grpc_services=("foodmesh.v1.DispatchService",),
    register=build,
    needs=frozenset({Dependency.POSTGRES, Dependency.NATS}),
    migrations=Path(__file__).parent / "migrations",
    calls=("location", "order", "pricing"),
)
