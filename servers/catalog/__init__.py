"""The Catalog service: restaurants, menus, delivery zones, ratings and restaurant search.

``SPEC`` is what ``foodmesh serve catalog`` runs. PostgreSQL (schema ``catalog``)
holds the truth; Redis holds the search documents by region (``index.py``), rebuilt from
PostgreSQL whenever it is missing; each replica searches its in-memory copy of the
regions (``table.py``), brought up to date by one round trip per search, and keeps the
restaurants a search can find per 0.01° cell for a few seconds (``cells.py``;
``FOODMESH_CATALOG_SEARCH_CACHE_S``, default 10, ``0`` turns it off). Text search and
completions run over the same tables (``text.py``, ``suggest.py``): a restaurant's document
carries its dishes. With ``FOODMESH_NATS_URL`` set, a durable consumer of placed orders keeps
popularity (``feed.py``, ``popularity.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import catalog_pb2_grpc
from servers.runtime.serve import Dependency, Resources, ServiceSpec

if TYPE_CHECKING:
    from servers.catalog.model import Restaurant
    from servers.catalog.store import CatalogStore

__all__ = ["SPEC", "register"]

_log = logging.getLogger("foodmesh.catalog")


async def register(server: grpc.aio.Server, resources: Resources) -> Callable[[], Awaitable[None]]:
    """Adds the CatalogService and starts keeping the search index built."""
    from servers.catalog.cells import CellCache
    from servers.catalog.feed import OrderFeed
    from servers.catalog.index import SearchIndex
    from servers.catalog.service import CatalogServicer
    from servers.catalog.store import CatalogStore

    store = CatalogStore(resources.pg)
    index = SearchIndex(resources.redis, resources.keys)
    ttl_s = float(resources.settings.extra.get("FOODMESH_CATALOG_SEARCH_CACHE_S", "10"))
    servicer = CatalogServicer(store, index, CellCache(ttl_s=ttl_s))
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    keeper = asyncio.create_task(index.keep_built(store), name="catalog-index")
    tasks = [keeper]
    feed: OrderFeed | None = None
    if resources.settings.nats_url:
        feed = OrderFeed(resources.settings.nats_url, resources.subjects, store, servicer.reindex)
        feed.start()
        tasks.append(asyncio.create_task(_trim_forever(store, servicer.reindex),
                                         name="catalog-trim"))  # fmt: skip

    async def stop() -> None:
        await stop_tasks(tasks)
        if feed is not None:
            await feed.stop()

    return stop


async def _trim_forever(
    store: CatalogStore, reindex: Callable[[Restaurant], Awaitable[None]], every_s: float = 3600.0
) -> None:
    """Hourly: order events past the 30-day window go, and their restaurants' counts drop."""
    while True:
        try:
            for r in await store.trim_order_events():
                await reindex(r)
        except Exception as exc:  # PostgreSQL or Redis away: next time
            _log.debug("trimming order events failed: %s", exc)
        await asyncio.sleep(every_s)


SPEC = ServiceSpec(
    name="catalog",
    grpc_services=("foodmesh.v1.CatalogService",),
    register=register,
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS}),
    migrations=Path(__file__).parent / "migrations",
)
