"""Live surge: demand counted from order events, supply from the Location index,
the conditions in force, a 60 s cache per cell, hysteresis state and history.

**Demand** is the number of orders placed in the last ``window_s`` (10 min) per
geohash-5 cell of the pickup (the restaurant: where a driver is needed). Each
``orders.v1.placed`` event increments a time bucket of its cell once: a Lua
script sets a per-event marker with ``NX`` and increments only if it was new,
so a redelivered event is never counted twice. Reading the demand of a cell is
one ``MGET`` of its buckets — nothing is scanned.

**Supply** is the number of available drivers in the cell, asked of the Location
service (``FindNearbyDrivers`` around the cell's centre, status AVAILABLE, kept
if inside the cell): one call per cell per cache period, never one per quote.

**Cache**: a computed surge is stored in Redis for ``ttl_s`` (60 s) under the
cell and the conditions version (so new events or weather take effect at once),
and kept in-process until that same expiry, so every replica serves the same
value. The previous multiplier of a cell (for hysteresis, ``surge.smooth``)
lives beside it for 15 min. Each computation is one point of the cell's
history, written to PostgreSQL in the background.

If Redis or Location does not answer, the surge is 1.0 with ``fallback`` set,
remembered for a few seconds; a quote never waits on them longer than
``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from foodmesh.core.geo import geohash_decode, geohash_encode, haversine_m
from foodmesh.core.redis import Keys, execute_with_scripts
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import common_pb2, location_pb2, pricing_pb2
from servers.pricing import surge as surge_math
from servers.pricing.metrics import SURGE
from servers.pricing.store import PricingStore

__all__ = [
    "Conditions",
    "DemandCounter",
    "ForecastPort",
    "HistoryWriter",
    "LocationSupply",
    "SupplyPort",
    "SurgeEngine",
]

_log = logging.getLogger("foodmesh.pricing.surge")

_COUNT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local n = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return n
end
return 0
"""


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def cell_of(lat: float, lon: float) -> str:
    return geohash_encode(lat, lon, surge_math.CELL_PRECISION)


class DemandCounter:
    """Orders per cell in a sliding window of time buckets in Redis."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, window_s: float = 600.0, buckets: int = 60
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.buckets = buckets
        self._script = redis.register_script(_COUNT_ONCE)
        self.counted = 0

    def _bucket_key(self, cell: str, index: int) -> str:
        return self.keys.region("surge_demand", cell[:4], cell, str(index))

    async def count(self, placed: Sequence[tuple[str, str, float]], *, now: float) -> int:
        """Counts ``(event_id, cell, event_ts)`` once each; events older than the window skip."""
        fresh = [(e, c, ts) for e, c, ts in placed if now - ts < self.window_s]
        if not fresh:
            return 0
        ttl = str(math.ceil(self.window_s + 2 * self.bucket_s))
        seen_ttl = str(max(3600, math.ceil(self.window_s * 2)))

        async def fill(pipe: Pipeline) -> None:
            for event_id, cell, ts in fresh:
                idx = int(ts // self.bucket_s)
                await self._script(
                    keys=[self.keys.region("surge_seen", cell[:4], event_id),
                          self._bucket_key(cell, idx)],
                    args=[seen_ttl, ttl], client=pipe,
                )  # fmt: skip

        # Counted once per event id (SET NX): sent again after NOSCRIPT, nothing counts twice.
        results = await execute_with_scripts(self.redis, fill, [self._script])
        n = sum(1 for r in results if int(r) > 0)
        self.counted += n
        return n

    async def demand(self, cell: str, *, now: float) -> int:
        last = int(now // self.bucket_s)
        keys = [self._bucket_key(cell, i) for i in range(last - self.buckets + 1, last + 1)]
        values = await self.redis.mget(keys)
        return sum(int(v) for v in values if v is not None)


class SupplyPort(Protocol):
    async def available_in(self, cell: str, *, timeout_s: float) -> int: ...


class ForecastPort(Protocol):
    def anticipated(self, cell: str, *, window_s: float, now: float | None = None) -> int: ...


class _NearbyClient(Protocol):
    async def find_nearby_drivers(
        self, request: location_pb2.FindNearbyDriversRequest, *, deadline_s: float | None = ...
    ) -> location_pb2.FindNearbyDriversResponse: ...


class LocationSupply:
    """Available drivers of a cell, from the Location service's GEO index."""

    def __init__(self, client: _NearbyClient, *, limit: int = 1000) -> None:
        self.client = client
        self.limit = limit

    async def available_in(self, cell: str, *, timeout_s: float) -> int:
        lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(cell)
        clat, clon = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
        radius = max(
            haversine_m(clat, clon, la, lo) for la in (lat_lo, lat_hi) for lo in (lon_lo, lon_hi)
        )
        got = await self.client.find_nearby_drivers(
            location_pb2.FindNearbyDriversRequest(
                center=common_pb2.LatLng(lat=clat, lon=clon),
                radius_meters=radius + 10.0,
                statuses=[common_pb2.DRIVER_STATUS_AVAILABLE],
                limit=self.limit,
            ),
            deadline_s=timeout_s,
        )
        return sum(
            1
            for d in got.drivers
            if lat_lo <= d.position.lat < lat_hi and lon_lo <= d.position.lon < lon_hi
        )


@dataclass(slots=True)
class Conditions:
    """The events and weather in force, as this replica last read them."""

    version: int = 0
    events: tuple[surge_math.Event, ...] = ()
    weather: tuple[surge_math.Weather, ...] = ()

    async def refresh(self, store: PricingStore) -> bool:
        """Reloads when the stored version moved; True if it did."""
        if await store.condition_version() == self.version:
            return False
        self.version, events, weather = await store.load_conditions()
        self.events, self.weather = tuple(events), tuple(weather)
        return True


class HistoryWriter:
    """Writes surge points to PostgreSQL in the background (bounded; never blocks a quote)."""

    def __init__(self, store: PricingStore, *, max_pending: int = 10_000) -> None:
        self.store = store
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def add(self, s: pricing_pb2.Surge) -> None:
        self._pending.append((
            s.cell, s.compute_time.ToDatetime(dt.UTC), s.multiplier, s.demand, s.supply,
            s.ratio, s.event_multiplier, s.weather_multiplier, s.reason, s.fallback,
        ))  # fmt: skip
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pricing-surge-history")

    async def flush(self) -> None:
        rows = list(self._pending)
        if rows:
            await self.store.add_history(rows)
            for _ in rows:
                self._pending.popleft()
            self.written += len(rows)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # PostgreSQL away: kept (bounded) for the next try
                _log.warning("surge history: %d points not written yet (%s)",
                             len(self._pending), exc)  # fmt: skip
                await asyncio.sleep(1.0)
                self._wake.set()

    async def stop(self) -> None:
        await stop_tasks([self._task])
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.flush()


@dataclass(frozen=True, slots=True)
class _Local:
    expire: float
    surge: pricing_pb2.Surge


class SurgeEngine:
    """The surge of any point: cached per cell, computed on a miss, 1.0 when blind."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        demand: DemandCounter,
        supply: SupplyPort | None,
        conditions: Conditions,
        history: HistoryWriter | None,
        *,
        ttl_s: float = 60.0,
        timeout_s: float = 0.5,
        fallback_hold_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        forecast: ForecastPort | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.demand = demand
        self.supply = supply
        self.conditions = conditions
        self.history = history
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.fallback_hold_s = fallback_hold_s
        self.clock = clock
        self.forecast = forecast
        self._local: dict[str, _Local] = {}
        self._cells: dict[tuple[float, float], str] = {}
        self._inflight: dict[str, asyncio.Future[pricing_pb2.Surge]] = {}
        self.computed = 0

    def _cache_key(self, cell: str) -> str:
        return self.keys.region("surge", cell[:4], cell, f"v{self.conditions.version}")

    def _state_key(self, cell: str) -> str:
        return self.keys.region("surge_state", cell[:4], cell)

    def cell(self, lat: float, lon: float) -> str:
        """The geohash-5 cell of a point (remembered: quotes ask for the same few points)."""
        point = (lat, lon)
        found = self._cells.get(point)
        if found is None:
            if len(self._cells) >= 50_000:
                self._cells.clear()
            found = self._cells[point] = cell_of(lat, lon)
        return found

    def cached(self, lat: float, lon: float) -> pricing_pb2.Surge | None:
        """The surge of a point if this replica holds it unexpired, without waiting."""
        hit = self._local.get(self.cell(lat, lon))
        if hit is not None and hit.expire > self.clock():
            return hit.surge
        return None

    async def at(self, lat: float, lon: float) -> pricing_pb2.Surge:
        return await self.of_cell(self.cell(lat, lon))

    async def of_cell(self, cell: str) -> pricing_pb2.Surge:
        hit = self._local.get(cell)
        if hit is not None and hit.expire > self.clock():
            return hit.surge
        running = self._inflight.get(cell)
        if running is None:
            running = asyncio.ensure_future(self._load(cell))
            self._inflight[cell] = running
            running.add_done_callback(lambda _f: self._inflight.pop(cell, None))
        return await asyncio.shield(running)

    def _keep(self, cell: str, expire: float, s: pricing_pb2.Surge) -> None:
        """Holds ``s`` as the cell's surge until ``expire`` (and shows it on the gauge)."""
        self._local[cell] = _Local(expire, s)
        SURGE.labels(cell).set(s.multiplier)

    def invalidate(self) -> None:
        """Forgets every in-process copy (the conditions changed)."""
        self._local.clear()

    def _fallback(self, cell: str, why: str) -> pricing_pb2.Surge:
        now = self.clock()
        # The weather kind is known without Redis or Location (the conditions are in memory).
        kind = surge_math.weather_kind(self.conditions.weather, cell)
        s = pricing_pb2.Surge(
            multiplier=1.0, cell=cell, event_multiplier=1.0, weather_multiplier=1.0,
            reason=f"Standard fees ({why})", fallback=True,
            weather=kind,  # type: ignore[arg-type]
        )  # fmt: skip
        s.compute_time.FromNanoseconds(int(now * 1e9))
        s.expire_time.FromNanoseconds(int((now + self.fallback_hold_s) * 1e9))
        self._keep(cell, now + self.fallback_hold_s, s)
        return s

    async def _load(self, cell: str) -> pricing_pb2.Surge:
        key = self._cache_key(cell)
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.redis.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            _log.warning("surge of %s: Redis unavailable (%s): 1.0", cell, exc or "timeout")
            return self._fallback(cell, "live demand unavailable")
        if raw is not None:
            s = pricing_pb2.Surge.FromString(_b(raw))
            self._keep(cell, s.expire_time.ToNanoseconds() / 1e9, s)
            return s
        return await self._compute(cell, key)

    async def _compute(self, cell: str, key: str) -> pricing_pb2.Surge:
        now = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                demand, prev_raw = await asyncio.gather(
                    self.demand.demand(cell, now=now), self.redis.get(self._state_key(cell))
                )
        except (RedisError, OSError, TimeoutError) as exc:
            _log.warning("surge of %s: Redis unavailable (%s): 1.0", cell, exc or "timeout")
            return self._fallback(cell, "live demand unavailable")
        if self.supply is None:
            return self._fallback(cell, "driver supply unknown")
        try:
            supply = await self.supply.available_in(cell, timeout_s=self.timeout_s)
        except Exception as exc:
            _log.warning("surge of %s: Location unavailable (%s): 1.0", cell, exc)
            return self._fallback(cell, "driver supply unavailable")
        previous = Fraction(_b(prev_raw).decode()) if prev_raw else None
        anticipated = 0
        if self.forecast is not None:
            try:
                anticipated = self.forecast.anticipated(cell, window_s=self.demand.window_s,
                                                        now=now)  # fmt: skip
            except Exception as exc:  # a forecast is a bonus: surge stands on demand alone
                _log.warning("surge of %s: no forecast (%s)", cell, exc)
        c = self.conditions
        f = surge_math.compute(demand=demand, supply=supply, events=c.events, weather=c.weather,
                               cell=cell, now=now, previous=previous,
                               anticipated=anticipated)  # fmt: skip
        s = pricing_pb2.Surge(
            multiplier=float(f.multiplier), cell=cell, demand=demand, supply=supply,
            ratio=float(f.ratio), event_multiplier=float(f.event_multiplier),
            weather_multiplier=float(f.weather_multiplier), reason=f.reason, fallback=False,
            forecast_demand=anticipated,
            weather=surge_math.weather_kind(c.weather, cell),  # type: ignore[arg-type]
        )  # fmt: skip
        s.compute_time.FromNanoseconds(int(now * 1e9))
        s.expire_time.FromNanoseconds(int((now + self.ttl_s) * 1e9))
        ttl_ms = max(1, int(self.ttl_s * 1000))
        try:
            async with asyncio.timeout(self.timeout_s):
                won = await self.redis.set(key, s.SerializeToString(), nx=True, px=ttl_ms)
                if won:
                    await self.redis.set(self._state_key(cell), str(f.multiplier), ex=900)
                else:  # another replica computed it first: serve theirs
                    theirs = await self.redis.get(key)
                    if theirs is not None:
                        s = pricing_pb2.Surge.FromString(_b(theirs))
        except (RedisError, OSError, TimeoutError) as exc:
            _log.warning("surge of %s not cached (%s)", cell, exc or "timeout")
            return self._fallback(cell, "live demand unavailable")
        else:
            if won:
                self.computed += 1
                if self.history is not None:
                    self.history.add(s)
        self._keep(cell, s.expire_time.ToNanoseconds() / 1e9, s)
        return s
