"""Live driver state in Redis: the per-region GEO indexes, each driver's hash, presence.

Layout (``<ns>`` is the namespace, ``{9q8y}`` a region's hash tag: its geohash-4 cell):

- ``<ns>:driver:<id>`` — hash: ``lat lon acc hd sp`` (last fix), ``ts`` (device time,
  ms), ``rx`` (receive time, ms), ``gh`` (geohash-6), ``rg`` (the region whose index
  holds the driver), ``st`` (DriverStatus number as Dispatch set it), ``on`` (1
  online, 0 offline), ``oid`` (order carried), ``nlat nlon`` (next stop).
- ``<ns>:drivers:{<region>}:<status>`` — GEO set of the online drivers of one region
  and status (available, offered, on_delivery, paused). An offline driver is in none.
- ``<ns>:presence:{p<nn>}`` — sorted set, driver → receive time (s), in 16 buckets by
  driver id, so the presence sweep spreads over a cluster.

Every key of a region shares its hash tag, so Redis Cluster shards the index by
region; a driver's own hash is tagged by nothing but its key, so it lands wherever
the driver id hashes. Scripts only ever touch one key, so they run on a cluster.

**Region moves.** A driver crossing into another region is added to the new
region's index first, then ``rg`` is switched, then it is removed from the old
one. Readers keep an index entry only when the hash's ``rg`` names that index's
region: during the move the driver is in both indexes, but exactly one of the
two entries counts, so a reader never sees it twice or not at all.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from foodmesh.core.geo import cells_covering, geohash_encode, haversine_m
from foodmesh.core.redis import Keys
from foodmesh.v1 import common_pb2, location_pb2
from servers.location.fixes import Fix
from servers.runtime.redis_wire import Command, RedisWire

__all__ = [
    "INDEXED_STATUSES",
    "MPH_TO_MPS",
    "REGION_PRECISION",
    "Accepted",
    "DriverState",
    "LiveStore",
    "Nearby",
    "WentOffline",
]

DS = common_pb2.DriverStatus
#: Geohash-4 cells (about 39 x 20 km at the equator, 31 x 20 km at 38°N) are the regions.
REGION_PRECISION = 4
#: Statuses that have an index of their own; OFFLINE drivers are in none.
INDEXED_STATUSES: dict[int, str] = {
    DS.DRIVER_STATUS_AVAILABLE: "available",
    DS.DRIVER_STATUS_OFFERED: "offered",
    DS.DRIVER_STATUS_ON_DELIVERY: "on_delivery",
    DS.DRIVER_STATUS_PAUSED: "paused",
}
PRESENCE_BUCKETS = 16
MPH_TO_MPS = 0.44704
#: Redis GEO keeps 52-bit cells (<1 m error) and its own Earth radius: search a little
#: wider, then filter by exact great-circle distance from the hash's exact position.
_SEARCH_SLACK_M = 5.0

_FIX = """
local cur = redis.call('HMGET', KEYS[1], 'ts', 'on', 'st', 'rg', 'oid', 'nlat', 'nlon')
if cur[1] and tonumber(cur[1]) >= tonumber(ARGV[1]) then
  return {0, cur[1]}
end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'lat', ARGV[2], 'lon', ARGV[3], 'acc', ARGV[4],
  'hd', ARGV[5], 'sp', ARGV[6], 'gh', ARGV[7], 'rx', ARGV[8], 'on', '1')
local st = cur[3]
if not st then
  st = ARGV[9]
  redis.call('HSET', KEYS[1], 'st', st)
end
return {1, cur[2] or '0', st, cur[4] or '', cur[5] or '', cur[6] or '', cur[7] or ''}
"""

_SET_STATUS = """
local v = redis.call('HMGET', KEYS[1], 'st', 'on', 'rg', 'lat', 'lon')
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'oid', ARGV[2], 'nlat', ARGV[3], 'nlon', ARGV[4])
return {v[1] or '', v[2] or '0', v[3] or '', v[4] or '', v[5] or ''}
"""

_GO_OFFLINE = """
local v = redis.call('HMGET', KEYS[1], 'rx', 'on', 'st', 'rg', 'oid', 'lat', 'lon', 'ts')
if v[2] ~= '1' then return {0} end
if v[1] and tonumber(v[1]) > tonumber(ARGV[1]) then return {0} end
redis.call('HSET', KEYS[1], 'on', '0')
return {1, v[3] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '', v[8] or ''}
"""

_ZREM_IF_OLD = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

_FIELDS = ("lat", "lon", "acc", "hd", "sp", "ts", "rx", "gh", "rg", "st", "on", "oid")


def _noscript(reply: object) -> bool:
    """A ``NOSCRIPT`` error reply, from redis-py or from the wire (hiredis)."""
    if isinstance(reply, NoScriptError):
        return True
    return isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")


def _s(b: object) -> str:
    if b is None:
        return ""
    return b.decode() if isinstance(b, bytes) else str(b)


@dataclass(frozen=True, slots=True)
class DriverState:
    """A driver as the live store holds it."""

    driver_id: str
    lat: float
    lon: float
    accuracy_m: float
    heading_deg: float
    speed_mps: float
    device_ts: float
    received_ts: float
    geohash: str
    region: str
    status: int
    online: bool
    order_id: str

    def position(self) -> location_pb2.DriverPosition:
        """The contract's view (speed in mph; an offline driver shows as OFFLINE)."""
        p = location_pb2.DriverPosition(
            driver_id=self.driver_id,
            lat=self.lat,
            lon=self.lon,
            heading=self.heading_deg,
            speed=self.speed_mps / MPH_TO_MPS,
            accuracy=self.accuracy_m,
            status=self.status if self.online else DS.DRIVER_STATUS_OFFLINE,  # type: ignore[arg-type]
            geohash=self.geohash,
        )
        p.last_updated.FromNanoseconds(int(self.device_ts * 1e9))
        return p

    @classmethod
    def parse(cls, driver_id: str, values: Sequence[object]) -> DriverState | None:
        v = dict(zip(_FIELDS, values, strict=True))
        if v["lat"] is None or v["ts"] is None:
            return None
        return cls(
            driver_id=driver_id,
            lat=float(_s(v["lat"])),
            lon=float(_s(v["lon"]) or 0),
            accuracy_m=float(_s(v["acc"]) or 0),
            heading_deg=float(_s(v["hd"]) or 0),
            speed_mps=float(_s(v["sp"]) or 0),
            device_ts=int(_s(v["ts"])) / 1000.0,
            received_ts=int(_s(v["rx"]) or 0) / 1000.0,
            geohash=_s(v["gh"]),
            region=_s(v["rg"]),
            status=int(_s(v["st"]) or DS.DRIVER_STATUS_OFFLINE),
            online=_s(v["on"]) == "1",
            order_id=_s(v["oid"]),
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the store knew of a driver when it took a fix (from the fix script)."""

    fix: Fix
    was_online: bool
    status: int
    order_id: str
    next_stop: tuple[float, float] | None
    #: Geohash-6 cell of the fix.
    geohash: str = ""


@dataclass(frozen=True, slots=True)
class Nearby:
    """One driver found by :meth:`LiveStore.find_nearby`."""

    state: DriverState
    distance_m: float
    age_s: float


@dataclass(frozen=True, slots=True)
class WentOffline:
    """A driver the presence sweep took offline (exactly one replica sees each)."""

    driver_id: str
    status: int
    order_id: str
    lat: float
    lon: float
    device_ts: float


def _ms(ts: float) -> int:
    return int(round(ts * 1000))


class LiveStore:
    """The only module that talks to Redis for live locations."""

    _KNOWN_MAX = 500_000

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        wire: RedisWire | None = None,
        initial_status: int = DS.DRIVER_STATUS_AVAILABLE,
    ) -> None:
        self.redis = redis
        #: The lean pipelined connection the fix writes take, when given.
        self.wire = wire
        self.keys = keys
        self.initial_status = initial_status
        self._sha: dict[str, str] = {}
        self._sources = {
            "fix": _FIX,
            "status": _SET_STATUS,
            "offline": _GO_OFFLINE,
            "zrem_if_old": _ZREM_IF_OLD,
        }
        #: Redis commands sent, for the benchmark's "ops per fix".
        self.ops = 0
        #: Where this process last left each driver: (status, region), for one-trip writes.
        self._known: dict[str, tuple[int, str]] = {}
        self._index_keys: dict[tuple[str, int], str] = {}
        self._presence_keys = tuple(
            keys.region("presence", f"p{b:02d}") for b in range(PRESENCE_BUCKETS)
        )

    # ------------------------------------------------------------------ keys
    def driver_key(self, driver_id: str) -> str:
        return self.keys.key("driver", driver_id)

    def index_key(self, region: str, status: int) -> str:
        key = self._index_keys.get((region, status))
        if key is None:
            key = self._index_keys[(region, status)] = self.keys.region(
                "drivers", region, INDEXED_STATUSES[status]
            )
        return key

    def presence_key(self, driver_id: str) -> str:
        return self._presence_keys[zlib.crc32(driver_id.encode()) % PRESENCE_BUCKETS]

    def presence_keys(self) -> list[str]:
        return list(self._presence_keys)

    # --------------------------------------------------------------- scripts
    async def load_scripts(self) -> None:
        for name, src in self._sources.items():
            self._sha[name] = _s(await self.redis.script_load(src))

    async def _evalsha(self, name: str, key: str, *args: str | int | float) -> Any:
        """Runs script ``name`` on ``key``; loads the scripts again if the server lost them."""
        return (await self._execute([("EVALSHA", self._sha[name], 1, key, *args)]))[0]

    # ----------------------------------------------------------------- write
    def _place(self, cmds: list[Command], f: Fix, region: str, status: int, old_region: str) -> int:
        """Queues the index and presence updates of an accepted fix; returns their count.

        Add to the new index first, switch ``rg``, then leave the old: see the module doc.
        """
        n = len(cmds)
        indexed = status in INDEXED_STATUSES
        if indexed:
            cmds.append(("GEOADD", self.index_key(region, status), f.lon, f.lat, f.driver_id))
        if region != old_region:
            cmds.append(("HSET", self.driver_key(f.driver_id), "rg", region))
            if old_region and indexed:
                cmds.append(("ZREM", self.index_key(old_region, status), f.driver_id))
        cmds.append(("ZADD", self.presence_key(f.driver_id), f.received_ts, f.driver_id))
        return len(cmds) - n

    async def _execute(self, cmds: Sequence[Command]) -> list[Any]:
        """One pipelined round trip (through the lean wire when there is one); replies in place.

        A server that lost our scripts (restarted, flushed, or a replica just promoted
        on a cluster: scripts are not replicated) answers ``NOSCRIPT``: the scripts are
        loaded again, under the same SHAs, and only the commands refused are sent again.
        """
        replies = await self._send(cmds)
        lost = [i for i, r in enumerate(replies) if _noscript(r)]
        if lost:
            await self.load_scripts()
            for i, reply in zip(lost, await self._send([cmds[i] for i in lost]), strict=True):
                if _noscript(reply):
                    raise NoScriptError("Redis lost our scripts again right after loading them")
                replies[i] = reply
        return replies

    async def _send(self, cmds: Sequence[Command]) -> list[Any]:
        if self.wire is not None:
            return await self.wire.execute(cmds, noscript_in_place=True)
        pipe = self.redis.pipeline(transaction=False)
        for c in cmds:
            pipe.execute_command(*c)
        return list(await pipe.execute(raise_on_error=False))

    async def write_fixes(
        self, fixes: Sequence[Fix], *, cells: Sequence[str] | None = None
    ) -> list[Accepted | None]:
        """Writes the newest fix of each driver; returns, per fix, what was accepted.

        ``cells`` are the fixes' geohash-6 cells when the caller knows them already.

        Each fix runs a compare-and-set script on the driver's hash, which drops a
        fix not newer than the stored one (so replicas and reconnects never go back
        in time) and says what status and region the store holds. For a driver this
        process has seen, the index and presence updates ride in the same pipeline,
        placed where the last fix left the driver: one round trip for the batch. If
        the store says otherwise (another replica or Dispatch moved the driver), a
        second round trip puts it right; a driver new to this process takes that
        second round trip too.
        """
        if not self._sha:
            await self.load_scripts()
        sha = self._sha["fix"]
        initial = self.initial_status
        cmds: list[Command] = []
        if cells is None:
            cells = [geohash_encode(f.lat, f.lon, 6) for f in fixes]
        plans: list[tuple[tuple[int, str] | None, int]] = []
        for f, gh in zip(fixes, cells, strict=True):
            cmds.append(
                (
                    "EVALSHA",
                    sha,
                    1,
                    self.driver_key(f.driver_id),
                    _ms(f.device_ts),
                    f.lat,
                    f.lon,
                    f.accuracy_m,
                    f.heading_deg,
                    f.speed_mps,
                    gh,
                    _ms(f.received_ts),
                    initial,
                )
            )
            guess = self._known.get(f.driver_id)
            n = 1
            if guess is not None:
                n += self._place(cmds, f, gh[:REGION_PRECISION], guess[0], guess[1])
            plans.append((guess, n))
        replies = await self._execute(cmds)
        self.ops += len(cmds)
        out: list[Accepted | None] = []
        fixup: list[Command] = []
        pos = 0
        for f, gh, (guess, n) in zip(fixes, cells, plans, strict=True):
            reply = replies[pos]
            pos += n
            if isinstance(reply, Exception):
                raise reply
            r = reply if isinstance(reply, list) else [0]
            if int(r[0]) != 1:
                out.append(None)
                continue
            was_online, status = _s(r[1]) == "1", int(_s(r[2]) or 0)
            old_region, order_id = _s(r[3]), _s(r[4])
            nlat, nlon = _s(r[5]), _s(r[6])
            region = gh[:REGION_PRECISION]
            if guess != (status, old_region):
                if guess is not None and guess[0] != status and guess[0] in INDEXED_STATUSES:
                    fixup.append(("ZREM", self.index_key(region, guess[0]), f.driver_id))
                self._place(fixup, f, region, status, old_region)
            self._remember(f.driver_id, status, region)
            stop = (float(nlat), float(nlon)) if nlat and nlon else None
            out.append(Accepted(f, was_online, status, order_id, stop, gh))
        if fixup:
            for reply in await self._execute(fixup):
                if isinstance(reply, Exception):
                    raise reply
        self.ops += len(fixup)
        return out

    def _remember(self, driver_id: str, status: int, region: str) -> None:
        if len(self._known) >= self._KNOWN_MAX and driver_id not in self._known:
            self._known.clear()  # a cold guess costs one extra round trip, nothing more
        self._known[driver_id] = (status, region)

    async def last_device_ts(self, driver_id: str) -> float | None:
        raw = await self.redis.hget(self.driver_key(driver_id), "ts")
        self.ops += 1
        return int(raw) / 1000.0 if raw is not None else None

    async def set_status(
        self,
        driver_id: str,
        status: int,
        *,
        order_id: str = "",
        next_stop: tuple[float, float] | None = None,
    ) -> None:
        """Sets a driver's status and moves it to that status's index (if online)."""
        if not self._sha:
            await self.load_scripts()
        nlat, nlon = ("", "") if next_stop is None else (repr(next_stop[0]), repr(next_stop[1]))
        r = await self._evalsha("status", self.driver_key(driver_id), status, order_id, nlat, nlon)
        if isinstance(r, Exception):
            raise r
        prev, online, region = int(_s(r[0]) or 0), _s(r[1]) == "1", _s(r[2])
        lat, lon = _s(r[3]), _s(r[4])
        if region:
            self._remember(driver_id, status, region)
        if not online or not region or not lat or prev == status:
            return
        pipe = self.redis.pipeline(transaction=False)
        if status in INDEXED_STATUSES:
            pipe.geoadd(self.index_key(region, status), (float(lon), float(lat), driver_id))
        if prev in INDEXED_STATUSES:
            pipe.zrem(self.index_key(region, prev), driver_id)
        await pipe.execute()

    # ------------------------------------------------------------------ read
    async def get(self, driver_id: str) -> DriverState | None:
        values = await self.redis.hmget(self.driver_key(driver_id), list(_FIELDS))
        return DriverState.parse(driver_id, values)

    async def get_many(self, driver_ids: Sequence[str]) -> list[DriverState | None]:
        pipe = self.redis.pipeline(transaction=False)
        for d in driver_ids:
            pipe.hmget(self.driver_key(d), list(_FIELDS))
        rows = await pipe.execute()
        return [DriverState.parse(d, v) for d, v in zip(driver_ids, rows, strict=True)]

    async def find_nearby(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        statuses: Iterable[int],
        limit: int,
        max_age_s: float,
        now: float | None = None,
    ) -> list[Nearby]:
        """Online drivers of ``statuses`` within ``radius_m`` (great-circle), nearest first."""
        now = time.time() if now is None else now
        wanted = [s for s in statuses if s in INDEXED_STATUSES]
        regions = cells_covering(lat, lon, radius_m + _SEARCH_SLACK_M, REGION_PRECISION)
        pipe = self.redis.pipeline(transaction=False)
        probes: list[tuple[str, int]] = []
        for region in regions:
            for status in wanted:
                pipe.geosearch(
                    self.index_key(region, status),
                    longitude=lon,
                    latitude=lat,
                    radius=radius_m * 1.001 + _SEARCH_SLACK_M,
                    unit="m",
                )
                probes.append((region, status))
        found = await pipe.execute() if probes else []
        candidates: dict[str, set[tuple[str, int]]] = {}
        for (region, status), members in zip(probes, found, strict=True):
            for m in members:
                candidates.setdefault(_s(m), set()).add((region, status))
        if not candidates:
            return []
        ids = list(candidates)
        out: list[Nearby] = []
        for state in await self.get_many(ids):
            if state is None or not state.online:
                continue
            # Counts only from the index the hash says holds the driver (region moves,
            # status changes in flight), so nobody appears twice.
            if (state.region, state.status) not in candidates[state.driver_id]:
                continue
            age = now - state.received_ts
            if age > max_age_s:
                continue
            d = haversine_m(lat, lon, state.lat, state.lon)
            if d <= radius_m:
                out.append(Nearby(state, d, max(0.0, age)))
        out.sort(key=lambda n: (n.distance_m, n.state.driver_id))
        return out[:limit]

    # -------------------------------------------------------------- presence
    async def sweep_offline(
        self, *, silent_for_s: float, now: float | None = None
    ) -> list[WentOffline]:
        """Takes offline every driver silent for ``silent_for_s``; each change is seen once.

        Any number of replicas may sweep at once: the compare-and-set script on the
        driver's hash lets exactly one of them win each driver.
        """
        if not self._sha:
            await self.load_scripts()
        now = time.time() if now is None else now
        cutoff = now - silent_for_s
        pipe = self.redis.pipeline(transaction=False)
        buckets = self.presence_keys()
        for key in buckets:
            pipe.zrangebyscore(key, "-inf", cutoff, start=0, num=1000)
        silent = [
            (key, _s(m)) for key, ms in zip(buckets, await pipe.execute(), strict=True) for m in ms
        ]
        if not silent:
            return []
        results = await self._execute(
            [("EVALSHA", self._sha["offline"], 1, self.driver_key(driver_id), _ms(cutoff))
             for _, driver_id in silent]
        )  # fmt: skip
        gone: list[WentOffline] = []
        cmds: list[Command] = []
        for (bucket, driver_id), reply in zip(silent, results, strict=True):
            if isinstance(reply, Exception):
                raise reply
            r = reply if isinstance(reply, list) else [0]
            # Only drop the presence entry if no fix refreshed it meanwhile.
            cmds.append(("EVALSHA", self._sha["zrem_if_old"], 1, bucket, driver_id, cutoff))
            if int(r[0]) != 1:
                continue
            status, region = int(_s(r[1]) or 0), _s(r[2])
            if region and status in INDEXED_STATUSES:
                cmds.append(("ZREM", self.index_key(region, status), driver_id))
            ts = _s(r[6])
            gone.append(
                WentOffline(
                    driver_id=driver_id,
                    status=status,
                    order_id=_s(r[3]),
                    lat=float(_s(r[4]) or "nan"),
                    lon=float(_s(r[5]) or "nan"),
                    device_ts=int(ts) / 1000.0 if ts else math.nan,
                )
            )
        for reply in await self._execute(cmds):
            if isinstance(reply, Exception):
                raise reply
        if gone:
            await self._restore_if_back(gone)
        return gone

    async def _restore_if_back(self, gone: Sequence[WentOffline]) -> None:
        # A fix that landed between our compare-and-set and our ZREM put the driver back
        # online and into the index, and our ZREM took it out again: put it back.
        for state in await self.get_many([g.driver_id for g in gone]):
            if state is not None and state.online and state.status in INDEXED_STATUSES:
                await self.redis.geoadd(
                    self.index_key(state.region, state.status),
                    (state.lon, state.lat, state.driver_id),
                )
