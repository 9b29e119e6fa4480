"""The order events Catalog follows for popularity: a durable JetStream consumer of
``orders.v1.placed``.

Each placed order is recorded once in ``catalog.order_events`` (by event id, so a
redelivery changes nothing), moves its restaurant's decayed popularity and its 30-day
``order_count`` in the same transaction, and the restaurant's search document is
rewritten; a batch is acknowledged only after both, so a crash in between redelivers it
and the index is written again (the PostgreSQL part is skipped as done). The consumer
has its own NATS connection: Catalog serves without NATS (search, menus), and follows
orders when ``FOODMESH_NATS_URL`` is set (it always is in ``up`` and Kubernetes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from foodmesh.core.events import ORDER_EVENTS, ORDERS
from foodmesh.core.nats import Subjects, open_nats
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.telemetry import consumer_span
from foodmesh.v1 import order_pb2
from servers.catalog.model import Restaurant
from servers.catalog.store import CatalogStore, PlacedOrder
from servers.runtime.retry import retry

__all__ = ["DURABLE", "OrderFeed", "placed_orders"]

_log = logging.getLogger("foodmesh.catalog.feed")
DURABLE = "catalog-orders"


def placed_orders(messages: Sequence[tuple[str, bytes]]) -> list[PlacedOrder]:
    """The placed orders among ``(subject, payload)`` messages (others skipped)."""
    out: list[PlacedOrder] = []
    for subject, data in messages:
        if subject.rsplit(".", 1)[-1] != "placed":
            continue
        try:
            ev = order_pb2.OrderEvent.FromString(data)
        except Exception:
            _log.warning("undecodable order event on %s skipped", subject)
            continue
        o = ev.order
        if not ev.event_id or not o.restaurant_id:
            continue
        at = (
            ev.event_time.ToDatetime(dt.UTC)
            if ev.HasField("event_time")
            else dt.datetime.now(dt.UTC)
        )
        out.append(PlacedOrder(ev.event_id, o.restaurant_id, o.order_id, at))
    return out


class OrderFeed:
    """Runs until stopped: placed orders into popularity, then into the search index."""

    def __init__(
        self,
        nats_url: str,
        subjects: Subjects,
        store: CatalogStore,
        index_put: Callable[[Restaurant], Awaitable[None]],
        *,
        batch: int = 256,
    ) -> None:
        self.nats_url = nats_url
        self.subjects = subjects
        self.store = store
        self.index_put = index_put
        self.batch = batch
        self._nc: NATS | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        #: Counters for tests and logs.
        self.processed = 0
        self.counted = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalog-order-feed")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._sub.unsubscribe()
            self._sub = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._nc.close()
            self._nc = None

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        async def subscribe() -> JetStreamContext.PullSubscription:
            if self._nc is None:
                self._nc = await open_nats(self.nats_url, name="catalog")
            return await self._nc.jetstream().pull_subscribe(
                self.subjects.subject(ORDER_EVENTS.subject("placed")),
                durable=DURABLE,
                stream=self.subjects.stream(ORDERS.name),
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                      deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                                      max_ack_pending=10_000),
            )  # fmt: skip

        # NATS not up yet, or no ORDERS stream yet (Order declares it).
        return await retry("following order events", subscribe, first_s=0.25, max_s=1.0,
                           quiet_s=5.0, log=_log)  # fmt: skip

    async def _run(self) -> None:
        sub = self._sub = await self._subscribe()
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # NATS away: the client reconnects on its own
                _log.debug("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                with consumer_span("catalog-orders process", batch=[m.headers for m in msgs]):
                    await self.handle([(m.subject, m.data) for m in msgs])
            except Exception as exc:
                self.failures += 1
                _log.warning("order events not applied (%s); redelivered later", exc)
                for m in msgs:
                    await m.nak(delay=1.0)
            else:
                for m in msgs:
                    await m.ack()

    async def handle(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Applies a batch; raises if any part failed (then it is redelivered whole)."""
        orders = placed_orders(messages)
        if orders:
            changed, new = await self.store.record_orders(orders)
            for r in changed:
                await self.index_put(r)
            self.counted += new
        self.processed += len(messages)
