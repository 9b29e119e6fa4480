"""The order events Pricing follows: a durable JetStream consumer of ``orders.v1.>``.

- ``placed``: one order more in the demand of its pickup cell (``DemandCounter``,
  deduped by event id in Redis) and in the cell's five-minute bucket of the demand
  forecast's history (PostgreSQL, through the inbox); the customer has one order more (first-order
  codes); the promo hold of the order (or of its quote) is confirmed.
- ``scheduled``: the same, but no demand yet (it is counted when released as placed).
- ``cancelled``: the promo use of the order is given back; the order no longer counts.

The PostgreSQL part is applied once per event through the inbox; a message is
acknowledged only after both parts are done, so a crash in between redelivers
it and each part skips what it already did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from foodmesh.core.events import ORDER_EVENTS, ORDERS
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.telemetry import consumer_span
from foodmesh.v1 import order_pb2
from servers.pricing.live import DemandCounter, cell_of
from servers.pricing.store import OrderChange, PricingStore
from servers.runtime.retry import retry

__all__ = ["DURABLE", "OrderFeed"]

_log = logging.getLogger("foodmesh.pricing.feed")
DURABLE = "pricing-orders"
_KINDS = ("placed", "scheduled", "cancelled")


class OrderFeed:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        subjects: Subjects,
        store: PricingStore,
        demand: DemandCounter,
        *,
        batch: int = 256,
        stream: str = ORDERS.name,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self.subjects = subjects
        self.store = store
        self.demand = demand
        self.batch = batch
        self.stream = subjects.stream(stream)
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self.processed = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pricing-order-feed")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        if self._sub is not None:  # else draining the connection waits on it
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._sub.unsubscribe()
            self._sub = None

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        async def subscribe() -> JetStreamContext.PullSubscription:
            return await self._js().pull_subscribe(
                self.subjects.subject(ORDER_EVENTS.all),
                durable=DURABLE,
                stream=self.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=30,
                    max_ack_pending=10_000,
                ),
            )

        # NATS not connected yet, or no ORDERS stream yet (Order declares it).
        return await retry("following order events", subscribe, first_s=0.25, max_s=1.0,
                           quiet_s=5.0, log=_log)  # fmt: skip

    async def _run(self) -> None:
        sub = self._sub = await self._subscribe()
        last_log, last_n = time.monotonic(), 0
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except TimeoutError:
                msgs = []
            except Exception as exc:  # NATS away: reconnects on its own
                _log.debug("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if msgs:
                try:
                    with consumer_span("pricing-orders process",
                                       batch=[m.headers for m in msgs]):  # fmt: skip
                        await self.handle([(m.subject, m.data) for m in msgs])
                except Exception as exc:
                    self.failures += 1
                    _log.warning("order events not applied (%s); redelivered later", exc)
                    for m in msgs:
                        await m.nak(delay=1.0)
                else:
                    for m in msgs:
                        await m.ack()
            now = time.monotonic()
            if now - last_log >= 10 and self.processed > last_n:
                rate = (self.processed - last_n) / (now - last_log)
                _log.info("order events: %d applied (%.0f/s), %d counted into demand",
                          self.processed, rate, self.demand.counted)  # fmt: skip
                last_log, last_n = now, self.processed

    async def handle(self, messages: list[tuple[str, bytes]]) -> None:
        """Applies a batch of ``(subject, payload)``; raises if any part failed."""
        placed: list[tuple[str, str, float]] = []
        changes: list[OrderChange] = []
        for subject, data in messages:
            kind = subject.rsplit(".", 1)[-1]
            if kind not in _KINDS:
                continue
            try:
                ev = order_pb2.OrderEvent.FromString(data)
            except Exception:
                _log.warning("undecodable order event on %s skipped", subject)
                continue
            o = ev.order
            cell, placed_ts = "", 0.0
            if kind == "placed" and o.HasField("restaurant_location"):
                loc = o.restaurant_location
                try:
                    cell = cell_of(loc.lat, loc.lon)
                except ValueError:
                    cell = ""
                placed_ts = ev.event_time.ToNanoseconds() / 1e9
                if cell:
                    placed.append((ev.event_id, cell, placed_ts))
            changes.append(OrderChange(
                event_id=ev.event_id, kind=kind, order_id=o.order_id, customer_id=o.customer_id,
                quote_id=o.pricing.quote_id, promo_code=o.promo_code.strip().upper(),
                cell=cell, placed_ts=placed_ts,
            ))  # fmt: skip
        if placed:
            await self.demand.count(placed, now=self.clock())
        for ch in changes:
            await self.store.apply_order_change(ch)
        self.processed += len(messages)
