"""The ingest pipeline: fixes from every stream, written to Redis in pipelined batches.

Streams hand their valid fixes to :meth:`Ingest.submit` and wait for the batch
that carries them. One writer task takes everything queued at that moment (no
timer: batches grow with load by themselves), keeps each driver's newest fix
for Redis, and then, for the accepted ones, publishes each fix on core NATS
``location.v1.driver.<id>`` and hands it to the history buffer.

While Redis is unreachable, fixes are kept (newest per driver, bounded) and
acknowledged as *degraded*; a probe writes them as soon as Redis answers again.
NATS down only skips the live fan-out (the next fix carries the position anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2
from nats.aio.client import Client as NATS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from foodmesh.v1 import common_pb2, location_pb2
from servers.location import metrics
from servers.location.fixes import Fix
from servers.location.history import HistoryWriter
from servers.location.store import Accepted, LiveStore
from servers.runtime.errors import DependencyUnavailable
from servers.runtime.geo import geohash_encode
from servers.runtime.nats import Subjects
from servers.runtime.tasks import stop_tasks

__all__ = ["Ingest", "Outcome", "PresenceEvent"]

_log = logging.getLogger("foodmesh.location.ingest")
_MPS_TO_MPH = 1 / 0.44704
#: NoScriptError: a restarted Redis lost our scripts; the recovery probe loads them again.
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, NoScriptError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a stream's fixes: per fix, whether it counted; and the mode."""

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


def location_event(
    fix: Fix, status: int, order_id: str, geohash: str = ""
) -> location_pb2.DriverLocationEvent:
    """The fix as published on NATS (built once per accepted fix: kept lean)."""
    dev, rx = int(fix.device_ts * 1e9), int(fix.received_ts * 1e9)
    return location_pb2.DriverLocationEvent(
        order_id=order_id,
        position=location_pb2.DriverPosition(
            driver_id=fix.driver_id,
            lat=fix.lat,
            lon=fix.lon,
            heading=fix.heading_deg,
            speed=fix.speed_mps * _MPS_TO_MPH,
            accuracy=fix.accuracy_m,
            status=status,  # type: ignore[arg-type]
            geohash=geohash or geohash_encode(fix.lat, fix.lon, 6),
            last_updated=timestamp_pb2.Timestamp(
                seconds=dev // 1_000_000_000, nanos=dev % 1_000_000_000
            ),
        ),
        receive_time=timestamp_pb2.Timestamp(seconds=rx // 1_000_000_000, nanos=rx % 1_000_000_000),
    )


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
    ) -> None:
        self.store = store
        self.history = history
        self._nats = nats
        self._subjects = subjects
        self._on_presence = on_presence
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_buffered_drivers = max_buffered_drivers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_max)
        self._buffered: dict[str, Fix] = {}
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
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
        self._task = asyncio.create_task(self._run(), name="location-ingest")

    async def stop(self) -> None:
        await stop_tasks([self._task, self._probe])
        self._task = self._probe = None
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(DependencyUnavailable("location service is stopping"))

    async def submit(self, fixes: Sequence[Fix]) -> Outcome:
        """Queues valid fixes and waits until the batch that carries them is written."""
        pending = _Pending(fixes)
        await self._queue.put(pending)
        return await pending.future

    # ----------------------------------------------------------------- writer
    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self.linger_s and self._queue.qsize() < self.max_batch // 4:
                # Wait a moment for company: every batch costs a few syscalls to Redis
                # and NATS whatever its size, and syscalls are most of a small batch.
                await asyncio.sleep(self.linger_s)
            batch = [first]
            n = len(first.fixes)
            while n < self.max_batch and not self._queue.empty():
                p = self._queue.get_nowait()
                batch.append(p)
                n += len(p.fixes)
            try:
                await self._flush(batch)
            except Exception as exc:  # never let one bad batch kill ingest for everybody
                _log.exception("ingest batch failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    async def _flush(self, batch: list[_Pending]) -> None:
        newest: dict[str, Fix] = {}
        for p in batch:
            for f in p.fixes:
                cur = newest.get(f.driver_id)
                if cur is None or f.device_ts > cur.device_ts:
                    newest[f.driver_id] = f
        by_driver: dict[str, Accepted | None] = {}
        if not self.redis_down:
            fixes = list(newest.values())
            try:
                results = await self.store.write_fixes(fixes)
                by_driver = {f.driver_id: a for f, a in zip(fixes, results, strict=True)}
            except (*_REDIS_DOWN, DependencyUnavailable) as exc:
                self._go_degraded(exc)
        if self.redis_down:
            self._buffer(newest.values())
        self.batches += 1
        metrics.BATCH.observe(len(newest))
        outcomes: list[list[Accepted | None]] = []
        good: list[Fix] = []
        for p in batch:
            row: list[Accepted | None] = []
            for f in p.fixes:
                if self.redis_down:
                    acc: Accepted | None = Accepted(f, True, 0, f.order_id, None)
                else:
                    head = by_driver.get(f.driver_id)
                    if head is None or head.fix is f:
                        acc = head
                    else:  # an older fix of the same driver in this batch
                        acc = Accepted(
                            f, head.was_online, head.status, head.order_id, head.next_stop
                        )
                row.append(acc)
                if acc is not None:
                    good.append(f)
            outcomes.append(row)
        self.fixes_written += len(good)
        metrics.observe_fix_ages([f.received_ts - f.device_ts for f in good])
        metrics.DEGRADED.labels("redis").set(self.redis_down)
        metrics.BUFFERED.set(len(self._buffered))
        for head in by_driver.values():
            if head is not None and not head.was_online:
                self._on_presence(
                    PresenceEvent(head.fix.driver_id, True, head.fix, head.status, head.order_id)
                )
        await self._publish(good, by_driver)
        if self.history is not None:
            self.history.add(good)
        degraded = self.degraded
        for p, row in zip(batch, outcomes, strict=True):
            if not p.future.done():
                p.future.set_result(Outcome(row, degraded))

    async def _publish(self, fixes: Sequence[Fix], by_driver: dict[str, Accepted | None]) -> None:
        if not fixes:
            return
        try:
            nc = self._nats()
            for f in fixes:
                head = by_driver.get(f.driver_id)
                status = head.status if head is not None else common_pb2.DRIVER_STATUS_UNSPECIFIED
                order_id = head.order_id if head is not None else f.order_id
                gh = head.geohash if head is not None and head.fix is f else ""
                await nc.publish(
                    self._subjects.subject(f"location.v1.driver.{f.driver_id}"),
                    location_event(f, status, order_id, gh).SerializeToString(),
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
