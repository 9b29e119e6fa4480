"""The Pricing service: quotes, fees, tax, promo codes and surge from live demand and supply.

``SPEC`` is what ``foodmesh serve pricing`` runs. PostgreSQL (schema ``pricing``)
holds promo codes and their redemptions, customers' order counts, the events and
weather in force, and surge history; Redis holds quotes (5 min), the surge cache
(60 s per geohash-5 cell) and the demand buckets; quotes go over a lean pipelined
connection (``quotes.py``). A durable JetStream consumer
(``feed.py``) follows ``orders.v1.>``: demand, first orders, promo confirmation and
release on cancellation. Supply comes from the Location service.

Settings (``FOODMESH_PRICING_*``):

- ``CATALOG_TARGET``, ``LOCATION_TARGET``: the Catalog and Location services
  (default: their ports on this host); without Location the surge is 1.0, flagged;
- ``CATALOG_CACHE_S``: how long a Catalog answer is reused (2; ``0`` asks every time);
- ``SURGE_TTL_S``: how long a cell's surge is cached (60);
- ``DEMAND_WINDOW_S``: the demand window (600: orders of the last 10 minutes);
- ``QUOTE_TTL_S``: how long a quote is valid (300);
- ``PROMO_HOLD_S``: how long a promo use taken at placement waits for the order's
  placed event before it is given back (120: the placement failed);
- ``SWEEP_EVERY_S``: how often holds are swept and conditions re-read (2);
- ``TIMEOUT_S``: the longest a quote waits on Redis or Location for surge (0.5);
- ``FORECAST``: ``1`` (default) runs the demand forecast (``forecaster.py``) and lets
  surge price the demand it expects; ``0`` turns both off;
- ``FORECAST_REFRESH_S``, ``FORECAST_RETRAIN_S``: how often the forecast rereads its
  history (30) and retrains its model (3600);
- ``PRIOR_FILE``: a week template of demand (``prior.py``) laid over the days before
  the start when there is no history and no seeded prior yet; ``builtin``: the one
  shipped (the generated city; Kubernetes sets it); unset: none (``foodmesh up`` seeds
  the prior itself);
- ``PRIOR_DAYS``: days of that prior (14);
- ``TIME_ZONE``: the city's time zone, for the forecast's hour and day of week
  (``America/Los_Angeles``, the simulated city's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from clients import CatalogClient, ClientOptions, LocationClient
from foodmesh.core.auth import ServiceCredentials
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import pricing_pb2_grpc
from servers.runtime.serve import Dependency, Resources, ServiceSpec

__all__ = ["SPEC", "build"]

_log = logging.getLogger("foodmesh.pricing")


def _f(resources: Resources, name: str, default: float) -> float:
    return float(resources.settings.extra.get(f"FOODMESH_PRICING_{name}", default))


def _prior_file(value: str) -> Path | None:
    if not value:
        return None
    if value == "builtin":
        from servers.pricing.prior import BUILTIN

        return BUILTIN
    return Path(value)


async def build(server: grpc.aio.Server, resources: Resources) -> Callable[[], Awaitable[None]]:
    """Wires the service's parts and starts the order feed, the sweeper and history."""
    from servers.pricing.catalog import QuoteCatalog
    from servers.pricing.feed import OrderFeed
    from servers.pricing.forecaster import DemandForecaster
    from servers.pricing.live import (
        Conditions,
        DemandCounter,
        HistoryWriter,
        LocationSupply,
        SurgeEngine,
    )
    from servers.pricing.quotes import QuoteBook
    from servers.pricing.service import PricingServicer
    from servers.pricing.store import PricingStore
    from servers.runtime.cache import TtlCache
    from servers.runtime.redis_wire import RedisWire

    s = resources.settings
    # Short-lived service tokens under the service key, minted again before they expire.
    credentials = ServiceCredentials(s.service_key, subject="pricing")
    options = ClientOptions(credentials=credentials.metadata)
    catalog = CatalogClient(resources.target("catalog"), options=options)
    location = LocationClient(resources.target("location"), options=options)
    store = PricingStore(resources.pg)
    redis = resources.redis
    demand = DemandCounter(redis, resources.keys, window_s=_f(resources, "DEMAND_WINDOW_S", 600))
    conditions = Conditions()
    history = HistoryWriter(store)
    forecaster = None
    if str(s.extra.get("FOODMESH_PRICING_FORECAST", "1")) != "0":
        forecaster = DemandForecaster(
            store, tz=str(s.extra.get("FOODMESH_PRICING_TIME_ZONE", "America/Los_Angeles")),
            refresh_s=_f(resources, "FORECAST_REFRESH_S", 30),
            retrain_s=_f(resources, "FORECAST_RETRAIN_S", 3600),
            prior_template=_prior_file(str(s.extra.get("FOODMESH_PRICING_PRIOR_FILE", ""))),
            prior_days=int(_f(resources, "PRIOR_DAYS", 14)),
        )  # fmt: skip
    engine = SurgeEngine(
        redis, resources.keys, demand, LocationSupply(location), conditions, history,
        ttl_s=_f(resources, "SURGE_TTL_S", 60), timeout_s=_f(resources, "TIMEOUT_S", 0.5),
        forecast=forecaster,
    )  # fmt: skip
    # Quotes go over a lean pipelined connection (hiredis): no redis-py on the hot path.
    timeout_s = _f(resources, "TIMEOUT_S", 0.5)
    wire = (RedisWire(s.redis_url, connect_timeout=timeout_s)
            if s.redis_url.startswith("redis://") else None)  # fmt: skip
    quotes = QuoteBook(redis, resources.keys, wire=wire, timeout_s=timeout_s)
    servicer = PricingServicer(
        store=store,
        catalog=QuoteCatalog(catalog, cache=TtlCache(ttl_s=_f(resources, "CATALOG_CACHE_S", 2))),
        surge=engine,
        conditions=conditions,
        quotes=quotes,
        quote_ttl_s=_f(resources, "QUOTE_TTL_S", 300),
        forecaster=forecaster,
    )
    pricing_pb2_grpc.add_PricingServiceServicer_to_server(servicer, server)
    feed = OrderFeed(lambda: resources.js, resources.subjects, store, demand)
    feed.start()
    history.start()
    if forecaster is not None:
        forecaster.start()
    hold_s = _f(resources, "PROMO_HOLD_S", 120)
    sweep_s = _f(resources, "SWEEP_EVERY_S", 2)

    async def sweep_forever() -> None:
        passes = 0
        while True:
            try:
                if await conditions.refresh(store):
                    engine.invalidate()
                    _log.info("conditions v%d: %d events, %d weather areas", conditions.version,
                              len(conditions.events), len(conditions.weather))  # fmt: skip
                if passes % max(1, round(10 / sweep_s)) == 0:
                    if n := await store.expire_holds(hold_s):
                        _log.info("%d promo holds never confirmed by an order: released", n)
                if passes % max(1, round(3600 / sweep_s)) == 0:
                    await store.trim_history(30 * 86400)
                    await store.trim_demand(35 * 86400)
            except Exception as exc:  # PostgreSQL away (or not migrated yet): next pass
                _log.debug("pricing sweep failed: %s", exc)
            passes += 1
            await asyncio.sleep(sweep_s)

    tasks = [asyncio.create_task(sweep_forever(), name="pricing-sweep")]

    async def stop() -> None:
        await stop_tasks(tasks)
        await feed.stop()
        await history.stop()
        if forecaster is not None:
            await forecaster.stop()
        await quotes.close()
        for client in (catalog, location):
            with contextlib.suppress(Exception):
                await client.close()

    return stop


SPEC = ServiceSpec(
    name="pricing",
    grpc_services=("foodmesh.v1.PricingService",),
    register=build,
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.NATS}),
    migrations=Path(__file__).parent / "migrations",
    calls=("catalog", "location"),
)
