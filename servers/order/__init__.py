"""The Order service: orders from placement to the door, payments, timeline, ratings.

``SPEC`` is what ``foodmesh serve order`` runs. PostgreSQL (schema ``orders``) holds
orders, their lines and timelines, idempotency keys, ratings, the outbox and the
sandbox processor's ledger. Every change commits with an outbox event that
``OutboxRelay`` publishes to JetStream (stream ``ORDERS``, ``orders.v1.<status>``);
WatchOrder streams are woken by PostgreSQL NOTIFY (``watch.py``).

Settings (``FOODMESH_ORDER_*``):

- ``CATALOG_TARGET``: the Catalog (default ``127.0.0.1:7051``);
- ``CATALOG_CACHE_S``: how long PlaceOrder reuses a Catalog answer (restaurant, menu,
  delivery check) before asking again (2; ``0`` asks every time): see ``clients/catalog.py``;
- ``PRICING_TARGET``, ``ETA_TARGET``: the Pricing and ETA services; unset, the
  fallback formulas of ``pricing.py`` and ``eta.py`` are used (also whenever they
  do not answer);
- ``DISPATCH_TARGET``: where driver ratings go; unset, they are stored, and forwarded
  by a background pass once it is set;
- ``RELAY``: ``0`` leaves the outbox unpublished (tests of a stopped relay);
- ``RELAY_GATHER_S``: how long the relay lets events gather after a pass that emptied the
  outbox, so that a busy service publishes in batches (0.02; ``relay.py``);
- ``WATCH_POLL_S``: how often a WatchOrder stream re-reads without a notification (5);
- ``SETTLE_EVERY_S``: how often payment operations left pending (the provider did not
  answer after a delivery or cancellation committed) are retried, and ratings the Catalog
  or Dispatch did not take are handed to them again (5);
- ``RELEASE_EVERY_S``: how often scheduled orders due for the kitchen are released (1);
- ``CONFIRM_TIMEOUT_S``: how long an order waits for its restaurant's confirmation before
  it is cancelled with a full refund, unless the restaurant set its own (300);
- ``SWEEP_EVERY_S``: how often due confirmation deadlines (auto-confirm, timeout) and
  lapsed card holds are swept (0.5; ``deadlines.py``);
- ``HOLD_GRACE_S``: how long after a placement's claim lapsed with no order its card hold
  is voided (300);
- ``FEED_POLL_S``: how often the restaurants' feeds watched here look for news (0.25;
  ``feed.py``); ``FEED_KEEP_S``: how long a feed keeps its positions (86400);
- ``LOST_RESOLVE_AFTER_S``: how long a driver lost after pickup has to come back before
  ops may reassign or refund the order (120);

Scheduled orders (``DELIVERY_OPTION_SCHEDULED``, 30 minutes to 7 days ahead) are
placed and paid at once but announced as ``orders.v1.scheduled``; at
``scheduled_time − (prep + travel)`` one replica's release pass announces them as
``orders.v1.placed`` (exactly once: a row lock and a flag committed with the event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from clients import CatalogClient, ClientOptions, DispatchClient, EtaClient, PricingClient
from foodmesh.core.auth import ServiceCredentials
from foodmesh.core.events import ORDERS
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import order_pb2_grpc
from servers.order.payments import PaymentProvider
from servers.order.placement import PlacementHooks
from servers.order.relay import GatheringRelay
from servers.runtime.outbox import OutboxRelay
from servers.runtime.serve import Dependency, Resources, ServiceSpec

__all__ = ["SPEC", "STREAM", "build"]

_log = logging.getLogger("foodmesh.order")
#: The JetStream stream of order events (namespaced through ``resources.subjects``).
STREAM = ORDERS.name


async def build(
    server: grpc.aio.Server,
    resources: Resources,
    *,
    payments: PaymentProvider | None = None,
    hooks: PlacementHooks | None = None,
) -> Callable[[], Awaitable[None]]:
    """Wires the service's parts and starts the relay, the change feed and the settler.

    ``payments`` replaces the sandbox provider (a test hands in one that fails);
    ``hooks`` are told the points PlaceOrder passes (a chaos test kills the process there).
    """
    from clients.catalog import CachedCatalog
    from servers.order.deadlines import Sweeper
    from servers.order.eta import FallbackEta, RemoteEta
    from servers.order.eta_features import KitchenFeatures
    from servers.order.eta_stages import StageEstimates, gather_spawner
    from servers.order.feed import FeedWaker
    from servers.order.notices import notice_event
    from servers.order.payments import HoldLookup
    from servers.order.placement import NO_HOOKS
    from servers.order.pricing import FallbackPricing, RemotePricing
    from servers.order.sandbox import SandboxProvider
    from servers.order.service import OrderServicer, Ports
    from servers.order.store import NOTIFY_CHANNEL, OrderStore
    from servers.order.watch import ChangeFeed
    from servers.runtime.cache import TtlCache

    s = resources.settings
    # Short-lived service tokens under the service key, minted again before they expire.
    credentials = ServiceCredentials(s.service_key, subject="order")
    options = ClientOptions(credentials=credentials.metadata)
    catalog = CatalogClient(resources.target("catalog"), options=options)
    owned: list[CatalogClient | PricingClient | EtaClient | DispatchClient] = [catalog]
    pricing: FallbackPricing | RemotePricing = FallbackPricing()
    if (t := resources.configured_target("pricing")) is not None:
        pricing_client = PricingClient(t, options=options)
        owned.append(pricing_client)
        pricing = RemotePricing(pricing_client, FallbackPricing())
    eta: FallbackEta | RemoteEta = FallbackEta()
    if (t := resources.configured_target("eta")) is not None:
        eta_client = EtaClient(t, options=options)
        owned.append(eta_client)
        eta = RemoteEta(eta_client, FallbackEta(), kitchens=KitchenFeatures(resources.pg))
    drivers = None
    if (t := resources.configured_target("dispatch")) is not None:
        drivers = DispatchClient(t, options=options)
        owned.append(drivers)
    feed = ChangeFeed(s.postgres_url, NOTIFY_CHANNEL)
    cache_s = float(s.extra.get("FOODMESH_ORDER_CATALOG_CACHE_S", "2"))
    cached = CachedCatalog(catalog, cache=TtlCache(ttl_s=cache_s))
    store = OrderStore(resources.pg)
    stage_tasks: set[asyncio.Task[None]] = set()
    notice = functools.partial(notice_event, resources.subjects)
    store.stages = StageEstimates(resources.pg, eta, spawn=gather_spawner(stage_tasks),
                                  drivers=drivers, catalog=cached, notice=notice)  # fmt: skip
    # The sandbox is also the vault of saved cards and wallets when a test hands in
    # another provider (which then authorizes them through its own ledger).
    sandbox = SandboxProvider(resources.pg)
    servicer = OrderServicer(
        store,
        Ports(catalog=cached, pricing=pricing, eta=eta, payments=payments or sandbox,
              drivers=drivers, vault=sandbox),
        subjects=resources.subjects,
        feed=feed,
        watch_poll_s=float(s.extra.get("FOODMESH_ORDER_WATCH_POLL_S", "5")),
        hooks=hooks or NO_HOOKS,
        feed_waker=FeedWaker(resources.pg,
                             poll_s=float(s.extra.get("FOODMESH_ORDER_FEED_POLL_S", "0.25"))),
        confirm_timeout_s=float(s.extra.get("FOODMESH_ORDER_CONFIRM_TIMEOUT_S", "300")),
        lost_resolve_after_s=float(s.extra.get("FOODMESH_ORDER_LOST_RESOLVE_AFTER_S", "120")),
    )  # fmt: skip
    order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
    feed.start()
    servicer.feed_waker.start()
    provider = servicer.ports.payments
    sweeper = Sweeper(
        servicer.store, event=servicer._event,
        holds=provider if isinstance(provider, HoldLookup) else None,
        hold_grace_s=float(s.extra.get("FOODMESH_ORDER_HOLD_GRACE_S", "300")),
        notice=notice,
    )  # fmt: skip
    sweep_every = float(s.extra.get("FOODMESH_ORDER_SWEEP_EVERY_S", "0.5"))
    feed_keep_s = float(s.extra.get("FOODMESH_ORDER_FEED_KEEP_S", "86400"))
    sweep_wake = asyncio.Event()
    servicer.on_deadline = sweep_wake.set

    async def sweep_forever() -> None:
        passes = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sweep_every):
                    await sweep_wake.wait()
            sweep_wake.clear()
            try:
                await sweeper.warn_confirm_due()
                swept = await sweeper.confirm_deadlines()
                if swept.confirmed or swept.cancelled:
                    servicer._poke()
                for order_id in swept.cancelled:
                    o = await servicer.store.get(order_id)
                    if o is not None:
                        await servicer.settle(o)  # the hold voided now, not in 5 s
                passes += 1
                if passes % 20 == 1:  # lapsed holds and old feed rows need no haste
                    await sweeper.orphan_holds()
                    await sweeper.prune(keep_s=feed_keep_s)
            except Exception as exc:  # PostgreSQL away: next pass
                _log.warning("deadline / card hold sweep failed: %s", exc)

    gather_s = float(s.extra.get("FOODMESH_ORDER_RELAY_GATHER_S", "0.02"))
    relay_on = s.extra.get("FOODMESH_ORDER_RELAY", "1") not in ("0", "false", "no", "off")

    def attach(relay: OutboxRelay) -> None:
        servicer.relay = relay

    relay = resources.start_relay(
        ORDERS, "orders", on_start=attach,
        make=functools.partial(GatheringRelay, gather_s=gather_s) if relay_on else None,
    )  # fmt: skip

    settle_every = float(s.extra.get("FOODMESH_ORDER_SETTLE_EVERY_S", "5"))

    async def settle_forever() -> None:
        while True:
            await asyncio.sleep(settle_every)
            try:
                await servicer.settle_pending()
                await servicer.forward_driver_ratings()
                await servicer.forward_restaurant_ratings()
            except Exception as exc:  # PostgreSQL away: next pass
                _log.warning("payment settlement / rating forwarding pass failed: %s", exc)

    release_every = float(s.extra.get("FOODMESH_ORDER_RELEASE_EVERY_S", "1"))

    async def release_forever() -> None:
        while True:
            await asyncio.sleep(release_every)
            try:
                await servicer.release_due()
            except Exception as exc:  # PostgreSQL away: next pass
                _log.warning("scheduled order release pass failed: %s", exc)

    tasks = [
        asyncio.create_task(settle_forever(), name="order-payment-settler"),
        asyncio.create_task(release_forever(), name="order-scheduled-release"),
        asyncio.create_task(sweep_forever(), name="order-deadline-sweeper"),
    ]

    async def stop() -> None:
        await servicer.wait_placing(timeout_s=min(5.0, s.shutdown_grace_s))
        await stop_tasks([*tasks, *stage_tasks])
        await relay.stop()
        await feed.stop()
        await servicer.feed_waker.stop()
        for client in owned:
            with contextlib.suppress(Exception):
                await client.close()

    return stop


SPEC = ServiceSpec(
    name="order",
    grpc_services=("foodmesh.v1.OrderService",),
    register=build,
    needs=frozenset({Dependency.POSTGRES, Dependency.NATS}),
    migrations=Path(__file__).parent / "migrations",
    calls=("catalog",),
)
