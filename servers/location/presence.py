"""Presence: a driver silent for ``timeout_s`` goes offline; its next fix brings it back.

Every replica sweeps; a compare-and-set on the driver's hash (see
``LiveStore.sweep_offline``) lets exactly one of them take each driver offline,
and the fix script tells exactly one ingest batch that a driver came back. Each
change is published once on JetStream ``location.v1.presence`` with a
deterministic message id, so a publish retried after a NATS hiccup is
deduplicated by the server and consumers can dedupe by ``event_id`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from nats.js import JetStreamContext

from foodmesh.core.events import DRIVER_PRESENCE, LOCATION
from foodmesh.core.geo import geohash_encode
from foodmesh.core.nats import Subjects, ensure_stream
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import location_pb2
from servers.location import metrics
from servers.location.ingest import PresenceEvent
from servers.location.store import LiveStore, WentOffline

__all__ = ["Presence", "presence_message"]

_log = logging.getLogger("foodmesh.location.presence")
_MPS_TO_MPH = 1 / 0.44704


def presence_message(
    ev: PresenceEvent | WentOffline, now: float
) -> location_pb2.DriverPresenceEvent:
    """The event on the wire; its id is the same whoever builds it, so retries dedupe."""
    if isinstance(ev, WentOffline):
        online, driver_id, order_id, status = False, ev.driver_id, ev.order_id, ev.status
        lat, lon, ts, heading, speed, acc = ev.lat, ev.lon, ev.device_ts, 0.0, 0.0, 0.0
    else:
        online, driver_id, order_id, status = ev.online, ev.driver_id, ev.order_id, ev.status
        f = ev.fix
        lat, lon, ts = (f.lat, f.lon, f.device_ts) if f else (math.nan, math.nan, now)
        heading, speed, acc = (f.heading_deg, f.speed_mps, f.accuracy_m) if f else (0.0, 0.0, 0.0)
    msg = location_pb2.DriverPresenceEvent(
        event_id=f"{driver_id}:{'on' if online else 'off'}:{int(ts * 1000)}",
        driver_id=driver_id,
        online=online,
        order_id=order_id,
    )
    if math.isfinite(lat) and math.isfinite(lon):
        p = msg.last_position
        p.driver_id = driver_id
        p.lat, p.lon, p.heading, p.speed, p.accuracy = lat, lon, heading, speed * _MPS_TO_MPH, acc
        p.status = status  # type: ignore[assignment]
        p.geohash = geohash_encode(lat, lon, 6)
        p.last_updated.FromNanoseconds(int(ts * 1e9))
    msg.event_time.FromNanoseconds(int(now * 1e9))
    return msg


class Presence:
    """The sweep task and the publisher of presence events (bounded, retried)."""

    def __init__(
        self,
        store: LiveStore,
        *,
        js: Callable[[], JetStreamContext],
        subjects: Subjects,
        timeout_s: float = 30.0,
        sweep_every_s: float | None = None,
        max_pending: int = 10_000,
    ) -> None:
        self.store = store
        self._js = js
        self._subjects = subjects
        self.timeout_s = timeout_s
        self.sweep_every_s = sweep_every_s or max(0.05, min(2.0, timeout_s / 5))
        self._pending: deque[location_pb2.DriverPresenceEvent] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_ready = False
        self.published = 0
        self.went_offline = 0

    @property
    def subject(self) -> str:
        return self._subjects.subject(DRIVER_PRESENCE.name)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="location-presence-sweep"),
            asyncio.create_task(self._publish_loop(), name="location-presence-publish"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        self._tasks = []
        # A last try for events not out yet, bounded: NATS may be the reason they are not.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):  # not wait_for: see history._run
                await self._publish_pending()

    def came_online(self, ev: PresenceEvent) -> None:
        """Called by ingest for the first fix after silence (or ever)."""
        self._pending.append(presence_message(ev, time.time()))
        metrics.PRESENCE.labels("online").inc()
        self._wake.set()

    async def sweep_once(self) -> list[WentOffline]:
        gone = await self.store.sweep_offline(silent_for_s=self.timeout_s)
        now = time.time()
        for g in gone:
            self._pending.append(presence_message(g, now))
        if gone:
            self.went_offline += len(gone)
            metrics.PRESENCE.labels("offline").inc(len(gone))
            self._wake.set()
        return gone

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:  # Redis away: the next sweep catches up
                _log.debug("presence sweep failed: %s", exc)
            await asyncio.sleep(self.sweep_every_s)

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._publish_pending()
            except Exception as exc:
                _log.warning("presence: %d events not published yet (%s)", len(self._pending), exc)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _publish_pending(self) -> None:
        if not self._pending:
            return
        js = self._js()
        if not self._stream_ready:
            await ensure_stream(js, LOCATION.config(self._subjects))
            self._stream_ready = True
        while self._pending:
            msg = self._pending[0]
            await js.publish(
                self.subject,
                msg.SerializeToString(),
                timeout=2.0,
                headers={"Nats-Msg-Id": msg.event_id},
            )
            self._pending.popleft()
            self.published += 1
