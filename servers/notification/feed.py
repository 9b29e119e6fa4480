"""The events Notification follows: durable JetStream consumers of ``orders.v1.>`` and
``dispatch.v1.*``.

Each message becomes its notices (``rules``), each notice its deliveries (``plan``), all
written in one transaction keyed by event, recipient and channel; the message is
acknowledged only after that commit. A crash before it redelivers the message, and the
keys make the second write a no-op: every notice is recorded once, and what is sent is
sent from the record (``sender``), never straight from the event.

A fetched batch is recorded in one transaction (its order events' people first, then
its dispatch events one by one, as each may read what the one before it wrote).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from foodmesh.core.events import (
    DISPATCH,
    DISPATCH_EVENTS,
    NOTIFICATION_INBOX,
    ORDER_EVENTS,
    ORDERS,
)
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.core.telemetry import consumer_span
from servers.notification.convert import notification_to_pb
from servers.notification.metrics import EVENTS, NOTICES
from servers.notification.plan import Prefs, plan
from servers.notification.rules import Facts, facts_of, notices_for
from servers.notification.store import NotificationStore
from servers.runtime.retry import retry

__all__ = ["DURABLES", "Feed", "People"]

_log = logging.getLogger("foodmesh.notification.feed")
#: The durable consumers, one per stream followed.
DURABLES = {"orders": "notification-orders", "dispatch": "notification-dispatch"}
#: Dispatch events for the customer: asked of Order when the feed has not met the order.
_NEED_CUSTOMER = frozenset({"dispatch.assigned", "dispatch.escalated", "dispatch.arriving"})


class People(Protocol):
    """What the events do not say: an order's customer, a driver's name and vehicle."""

    async def customer_of(self, order_id: str) -> str: ...

    async def driver(self, driver_id: str) -> tuple[str, str]: ...


class Feed:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        nats: Callable[[], NATS],
        subjects: Subjects,
        store: NotificationStore,
        people: People,
        *,
        on_queued: Callable[[], None],
        default_prefs: Callable[[str], Prefs] = lambda recipient: Prefs(),
        link: Callable[[str], str] = lambda order_id: "",
        batch: int = 256,
        catch_up_s: float = 300.0,
        ack_wait_s: float = 30.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._js = js
        self._nats = nats
        self.subjects = subjects
        self.store = store
        self.people = people
        self.on_queued = on_queued
        self.default_prefs = default_prefs
        self.link = link
        self.batch = batch
        self.catch_up_s = catch_up_s
        self.ack_wait_s = ack_wait_s
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[JetStreamContext.PullSubscription] = []
        self.processed = 0

    def start(self) -> None:
        follow = (
            ("orders", ORDERS.name, ORDER_EVENTS.all),
            ("dispatch", DISPATCH.name, DISPATCH_EVENTS.any),
        )
        for name, stream, subject in follow:
            self._tasks.append(asyncio.create_task(
                self._run(name, stream, subject), name=f"notification-{name}-feed"
            ))  # fmt: skip

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        for sub in self._subs:  # else draining the connection waits on them
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await sub.unsubscribe()
        self._subs.clear()

    async def _subscribe(self, name: str, stream: str, subject: str) -> Any:
        async def subscribe() -> JetStreamContext.PullSubscription:
            return await self._js().pull_subscribe(
                self.subjects.subject(subject),
                durable=DURABLES[name],
                stream=self.subjects.stream(stream),
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    # A new consumer starts a little in the past (events of the moments
                    # before it was made are not lost), not days back (stale notices).
                    deliver_policy=DeliverPolicy.BY_START_TIME,
                    opt_start_time=self.clock() - dt.timedelta(seconds=self.catch_up_s),
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=20_000,
                ),
            )

        # NATS not connected yet, or the stream not declared yet (its owner declares it).
        return await retry(f"following {name} events", subscribe, first_s=0.25, max_s=1.0,
                           quiet_s=5.0, log=_log)  # fmt: skip

    async def _run(self, name: str, stream: str, subject: str) -> None:
        sub = await self._subscribe(name, stream, subject)
        self._subs.append(sub)
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=0.25)
            except TimeoutError:
                continue
            except Exception as exc:  # NATS away: reconnects on its own
                _log.debug("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            with consumer_span(f"notification-{name} process", batch=[m.headers for m in msgs]):
                await self._apply(name, msgs)

    async def _apply(self, name: str, msgs: Sequence[Msg]) -> None:
        """Records a fetched batch in one transaction, then acknowledges it (or, failing,
        asks for all of it again)."""
        batch = [(m, f"{name}.{m.subject.rsplit('.', 1)[-1]}") for m in msgs]
        facts = [(source, facts_of(source, m.data)) for m, source in batch]
        try:
            await self.handle_many([(s, f) for s, f in facts if f is not None])
        except Exception as exc:
            for _, source in batch:
                EVENTS.labels(source, "failed").inc()
            _log.warning("%d %s events not recorded (%s); redelivered later", len(msgs), name,
                         exc)  # fmt: skip
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.nak(delay=1.0)
            return
        for (m, source), (_, f) in zip(batch, facts, strict=True):
            EVENTS.labels(source, "recorded" if f is not None else "ignored").inc()
            with contextlib.suppress(Exception):
                await m.ack()
        self.processed += len(msgs)

    async def handle(self, source: str, facts: Facts) -> int:
        """Records the notices of one event; how many were new."""
        return await self.handle_many([(source, facts)])

    async def handle_many(self, events: Sequence[tuple[str, Facts]]) -> int:
        """Records the notices of events, in order; how many were new. Raises if nothing was
        written."""
        orders = [(f.order_id, f.customer_id, f.restaurant_id, f.driver_id)
                  for s, f in events if s.startswith("orders.") and f.order_id]  # fmt: skip
        await self.store.remember_orders(orders)
        notices = []
        for source, f in events:
            if not source.startswith("orders."):  # one at a time: each reads the last
                f = await self._complete(source, f)
            notices += notices_for(source, f)
        if not notices:
            return 0
        recipients = {n.recipient for n in notices}
        stored = await self.store.prefs(recipients)
        pushes = await self.store.pushes(recipients)
        now = self.clock()
        items = []
        for n in notices:
            prefs = stored.get(n.recipient) or self.default_prefs(n.recipient)
            words, planned = plan(n, prefs, pushes.get(n.recipient, ()), now=now,
                                  link=self.link(n.order_id))  # fmt: skip
            items.append((n, words, planned))
        recorded = await self.store.record(items)
        if recorded.queued:
            self.on_queued()
        for row in recorded.inbox:
            NOTICES.labels(row.event_type).inc()
            await self._publish(row)
        return len(recorded.inbox)

    async def _complete(self, source: str, facts: Facts) -> Facts:
        """Adds what the event lacks (and remembers what it says) about its order's people."""
        if source.startswith("orders."):
            return facts  # remembered with its batch
        known = await self.store.order_people(facts.order_id) if facts.order_id else None
        customer = known[0] if known else ""
        if not customer and source in _NEED_CUSTOMER:
            customer = await self.people.customer_of(facts.order_id)
        values = dict(facts.values)
        driver = facts.driver_id
        if source == "dispatch.unassigned":
            driver = known[2] if known else ""  # the event no longer names them
        if source == "dispatch.assigned" and driver:
            name, vehicle = await self.people.driver(driver)
            values.update(driver=name, vehicle=vehicle)
            await self.store.remember_order(facts.order_id, customer_id=customer, driver_id=driver)
        return replace(facts, customer_id=customer, driver_id=driver, values=values)

    async def _publish(self, row: Any) -> None:
        """Tells live watchers (any replica's) of a new inbox row; the inbox has it anyway."""
        try:
            msg = notification_to_pb(row)
            await self._nats().publish(
                self.subjects.subject(NOTIFICATION_INBOX.subject(row.recipient)),
                msg.SerializeToString(),
            )
        except Exception as exc:
            _log.debug("live notice not published: %s", exc)


async def with_timeout(coro: Awaitable[Any], seconds: float, default: Any) -> Any:
    """``coro``'s result, or ``default`` when it fails or takes longer than ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await coro
    except Exception:
        return default
