"""The ingest pipeline: fixes from every stream, written to Redis in pipelined batches.

Streams hand their valid fixes to :meth:`Ingest.submit` and wait for the batch
that carries them. One writer task takes everything queued at that moment, up to
``max_batch`` fixes (no timer: batches grow with load by themselves), keeps each
driver's newest fix for Redis, and answers the streams as soon as Redis has:
only then, for the accepted ones, it publishes each fix on core NATS
``location.v1.driver.<id>`` and hands it to the history buffer, so neither the
fan-out nor NATS back-pressure is in the path of an ack.

While Redis is unreachable, fixes are kept (newest per driver, bounded) and
acknowledged as *degraded*; a probe writes them as soon as Redis answers again.
NATS down only skips the live fan-out (the next fix carries the position anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from foodmesh.core.errors import DependencyUnavailable
from foodmesh.core.events import DRIVER_LOCATIONS
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import location_pb2
from servers.location import metrics
from servers.location.fixes import CellCache, Fix
from servers.location.history import HistoryWriter
from servers.location.store import Accepted, LiveStore

__all__ = ["Ingest", "Outcome", "PresenceEvent"]

_log = logging.getLogger("foodmesh.location.ingest")
_MPS_TO_MPH = 1 / 0.44704
_NS = 1_000_000_000
#: NoScriptError: a restarted Redis lost our scripts; the recovery probe loads them again.
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, NoScriptError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a stream's fixes, and the mode.

    Per fix: None if the store refused it (not newer than what it holds), else what
    the store holds for its driver after the batch (a driver's fixes share one).
    """

    accepted: list[Accepted | None]
    degraded: bool


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A driver came online (first fix after silence); published by the events task."""

    driver_id: str
    online: bool
    fix: Fix | None
    status: int
    order_id: str


@dataclass(slots=True)
class _Pending:
    fixes: Sequence[Fix]
    future: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _EventEncoder:
    """Serialises fixes as ``DriverLocationEvent``: once per accepted fix, so it is lean.

    One message is refilled for every fix (every field, each time) instead of four
    new ones built: the writer task is the only user and serialises at once.
    """

    __slots__ = ("_event", "_position", "_updated", "_received")

    def __init__(self) -> None:
        self._event = location_pb2.DriverLocationEvent()
        self._position = self._event.position
        self._updated = self._position.last_updated
        self._received = self._event.receive_time

    def encode(self, fix: Fix, status: int, order_id: str, geohash: str) -> bytes:
        p = self._position
        p.driver_id = fix.driver_id
        p.lat = fix.lat
        p.lon = fix.lon
        p.heading = fix.heading_deg
        p.speed = fix.speed_mps * _MPS_TO_MPH
        p.accuracy = fix.accuracy_m
        p.status = status  # type: ignore[assignment]
        p.geohash = geohash
        self._updated.seconds, self._updated.nanos = divmod(int(fix.device_ts * 1e9), _NS)
        self._received.seconds, self._received.nanos = divmod(int(fix.received_ts * 1e9), _NS)
        self._event.order_id = order_id
        return self._event.SerializeToString()


class Ingest:
    """Batches fixes from all streams into Redis, NATS and the history buffer."""

    def __init__(
        self,
        store: LiveStore,
        history: HistoryWriter | None,
        *,
        nats: Callable[[], NATS],
        subjects: Subjects,
        on_presence: Callable[[PresenceEvent], None],
        max_batch: int = 2000,
        linger_s: float = 0.002,
        max_buffered_drivers: int = 100_000,
        queue_max: int = 50_000,
        publish_timeout_s: float = 2.0,
    ) -> None:
        self.store = store
        self.history = history
        self._nats = nats
        self._subjects = subjects
        self._on_presence = on_presence
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_buffered_drivers = max_buffered_drivers
        self.publish_timeout_s = publish_timeout_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_max)
        self._buffered: dict[str, Fix] = {}
        self._cells = CellCache()
        self._events = _EventEncoder()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._in_flight: list[_Pending] = []
        #: Fixes waiting in the queue (its length counts messages, of up to 100 fixes).
        self._queued = 0
        self._stopped = True  # until start()
        self.redis_down = False
        self.nats_down = False
        # Counters for metrics and the benchmark.
        self.batches = 0
        self.fixes_written = 0
        self.published = 0
        self.dropped_buffered = 0

    @property
    def degraded(self) -> bool:
        return self.redis_down or self.nats_down

    @property
    def buffered(self) -> int:
        return len(self._buffered)

    def start(self) -> None:
        self._stopped = False
        self._task = asyncio.create_task(self._run(), name="location-ingest")

    async def stop(self) -> None:
        """Stops the writer; whoever still waits for a batch is told, nobody waits forever."""
        self._stopped = True
        await stop_tasks([self._task, self._probe])
        self._task = self._probe = None
        stopping = DependencyUnavailable("location service is stopping")
        for p in self._in_flight:  # the batch the writer was cancelled in
            if not p.future.done():
                p.future.set_exception(stopping)
        self._in_flight = []
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(stopping)
        self._queued = 0

    async def submit(self, fixes: Sequence[Fix]) -> Outcome:
        """Queues valid fixes and waits until the batch that carries them is written."""
        if self._stopped:
            raise DependencyUnavailable("location service is stopping")
        pending = _Pending(fixes)
        self._queued += len(fixes)
        await self._queue.put(pending)
        return await pending.future

    # ----------------------------------------------------------------- writer
    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            # In flight from here on: stop() fails it if it cancels us while we wait.
            batch = self._in_flight = [first]
            n = len(first.fixes)
            self._queued -= n
            if self.linger_s and self._queued < self.max_batch // 4:
                # Wait a moment for company: every batch costs a few syscalls to Redis
                # and NATS whatever its size, and syscalls are most of a small batch.
                # Not when a backlog waits already (after a pause): it is company enough.
                await asyncio.sleep(self.linger_s)
            while n < self.max_batch and not self._queue.empty():
                p = self._queue.get_nowait()
                batch.append(p)
                n += len(p.fixes)
                self._queued -= len(p.fixes)
            try:
                await self._flush(batch)
            except Exception as exc:  # never let one bad batch kill ingest for everybody
                _log.exception("ingest batch failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
            self._in_flight = []

    async def _flush(self, batch: list[_Pending]) -> None:
        newest: dict[str, Fix] = {}
        for p in batch:
            for f in p.fixes:
                cur = newest.get(f.driver_id)
                if cur is None or f.device_ts > cur.device_ts:
                    newest[f.driver_id] = f
        cell = self._cells.cell
        by_driver: dict[str, Accepted | None] = {}
        if not self.redis_down:
            fixes = list(newest.values())
            try:
                results = await self.store.write_fixes(
                    fixes, cells=[cell(f.driver_id, f.lat, f.lon) for f in fixes]
                )
                by_driver = {f.driver_id: a for f, a in zip(fixes, results, strict=True)}
            except (*_REDIS_DOWN, DependencyUnavailable) as exc:
                self._go_degraded(exc)
        redis_down = self.redis_down
        if redis_down:
            self._buffer(newest.values())
            # Taken on trust while Redis is away: the recovery write still refuses
            # anything older than what the store holds.
            by_driver = {d: Accepted(f, True, 0, f.order_id, None) for d, f in newest.items()}
        self.batches += 1
        metrics.BATCH.observe(len(newest))
        # Redis took each driver's newest fix or refused it; an older fix of the same
        # batch (an app flushing what it buffered) shares that fate, so the older ones
        # are published and kept in history, never sent to Redis.
        outcomes = [[by_driver.get(f.driver_id) for f in p.fixes] for p in batch]
        good = [
            f
            for p, row in zip(batch, outcomes, strict=True)
            for f, acc in zip(p.fixes, row, strict=True)
            if acc is not None
        ]
        self.fixes_written += len(good)
        metrics.observe_fix_ages(f.received_ts - f.device_ts for f in good)
        metrics.DEGRADED.labels("redis").set(redis_down)
        metrics.BUFFERED.set(len(self._buffered))
        for head in by_driver.values():
            if head is not None and not head.was_online:
                self._on_presence(
                    PresenceEvent(head.fix.driver_id, True, head.fix, head.status, head.order_id)
                )
        # Answer first: what Redis said is the outcome. (So an ack tells of a NATS
        # outage from the batch after the one that found it.)
        degraded = self.degraded
        for p, row in zip(batch, outcomes, strict=True):
            if not p.future.done():
                p.future.set_result(Outcome(row, degraded))
        # Let the streams send their acks before the fan-out, which costs a few µs a fix.
        await asyncio.sleep(0)
        await self._publish(good, by_driver)
        if self.history is not None:
            self.history.add(good)

    async def _publish(self, fixes: Sequence[Fix], by_driver: dict[str, Accepted | None]) -> None:
        if not fixes:
            return
        try:
            publish = self._nats().publish
            encode, cell = self._events.encode, self._cells.cell
            prefix = self._subjects.subject(DRIVER_LOCATIONS.subject(""))
            # publish only queues the message, unless the client's buffer is full and
            # NATS is not draining it: then it waits, and ingest must not wait with it.
            async with asyncio.timeout(self.publish_timeout_s):
                for f in fixes:
                    head = by_driver[f.driver_id]
                    assert head is not None  # only accepted fixes are published
                    await publish(
                        prefix + f.driver_id,
                        encode(f, head.status, head.order_id, cell(f.driver_id, f.lat, f.lon)),
                    )
            self.published += len(fixes)
            metrics.DEGRADED.labels("nats").set(0)
            if self.nats_down:
                _log.info("ingest: NATS back, live fan-out resumed")
            self.nats_down = False
        except Exception as exc:
            if not self.nats_down:
                _log.warning("ingest: NATS unavailable (%s); live fan-out paused", exc)
            self.nats_down = True
            metrics.DEGRADED.labels("nats").set(1)

    # --------------------------------------------------------------- degraded
    def _go_degraded(self, exc: BaseException) -> None:
        if not self.redis_down:
            _log.warning("ingest: Redis unavailable (%s); buffering fixes", exc)
        self.redis_down = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._recover(), name="location-redis-probe")

    def _buffer(self, fixes: Iterable[Fix]) -> None:
        for f in fixes:
            self._buffered.pop(f.driver_id, None)
            self._buffered[f.driver_id] = f
        while len(self._buffered) > self.max_buffered_drivers:
            # Oldest first: the drivers we heard from longest ago matter least.
            self._buffered.pop(next(iter(self._buffered)))
            self.dropped_buffered += 1

    async def _recover(self) -> None:
        delay = 0.2
        while self.redis_down:
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
            try:
                async with asyncio.timeout(1.0):  # not wait_for: see history._run
                    await self.store.redis.ping()
                await self.store.load_scripts()
                fixes = list(self._buffered.values())
                if fixes:
                    await self.store.write_fixes(fixes)
            except (*_REDIS_DOWN, DependencyUnavailable):
                continue
            for f in fixes:
                if self._buffered.get(f.driver_id) is f:
                    del self._buffered[f.driver_id]
            if not self._buffered:
                self.redis_down = False
                _log.info("ingest: Redis back; wrote %d buffered positions", len(fixes))
