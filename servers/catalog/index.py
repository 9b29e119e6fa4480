"""The search index in Redis, and each replica's in-memory copy of the regions it searches.

Layout (``<ns>`` the namespace, ``{9q8y}`` a region: the geohash-4 cell of a restaurant,
as the Location service uses them):

- ``<ns>:catalog:doc:{r}`` — hash: id → search document (compact JSON, ``search.SearchDoc``).
- ``<ns>:catalog:ver:{r}`` — hash: id → row version last written. A write with an older
  version is ignored, so writes that reach Redis out of order cannot go back in time;
  a removal leaves its version behind as a tombstone.
- ``<ns>:catalog:gen:{r}`` — counter, +1 whenever a restaurant of the region changes.
- ``<ns>:catalog:chg:{r}`` — sorted set: id → the generation of its last change (the
  change log a copy catches up from; one entry per restaurant, so it does not grow).
- ``<ns>:catalog:index:built2`` — set once the index holds every restaurant of PostgreSQL;
  its value, the *epoch*, is new at every rebuild. (``2``: documents with dishes and
  popularity; a deployment whose index predates them rebuilds it once, migration 0002
  having moved every row's version so that the rebuild rewrites each document.)

Each write touches the keys of one region only (one hash tag), in a script, so it runs
unchanged on Redis Cluster; so do the reads (a pipeline, a command or script per region).

Every replica keeps the regions it has searched in memory, each as a
:class:`~servers.catalog.table.RegionTable` labelled with the epoch and generation it
reflects, and all of them merged into one table (one numpy pass per search, whatever the
number of regions). A search reads the epoch and its regions' generations in one round
trip of GETs. A copy that is behind catches up from the change log (the documents changed
since its generation, one script) and rebuilds its columns; one that cannot (no copy yet,
more than ``_CATCH_UP_MAX`` changes, a new epoch, generations gone back after Redis lost
its data) is loaded whole, once per replica however many searches wait for it. Writes
bump the generation before they return, reviews included, so a search on any replica
that starts after a write returned sees it.

The cache of popular searches is in-process, over these tables: ``cells.py``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from foodmesh.core.geo import METERS_PER_MILE, cells_covering, geohash_encode
from foodmesh.core.redis import Keys, execute_with_scripts
from servers.catalog.model import Restaurant
from servers.catalog.search import Query, SearchDoc
from servers.catalog.store import CatalogStore
from servers.catalog.table import RegionTable
from servers.runtime.retry import retry

__all__ = ["REGION_PRECISION", "SearchIndex", "region_of"]

_log = logging.getLogger("foodmesh.catalog.index")

#: Geohash-4 regions, as the Location service keys drivers.
REGION_PRECISION = 4
#: More changes than this since a copy's generation: load the region whole instead.
_CATCH_UP_MAX = 1000

_PUT = """
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[3]), ARGV[1])
return 1
"""

_REMOVE = """
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[3]), ARGV[1])
return 1
"""

# {generation, 1, {id, doc, ...every document}} or {generation, 0, {id, doc-or-"", ...the
# ones changed since ARGV[1]}} ("" for a removed one). Whole when asked (since < 0), when
# the generation went back (Redis lost the region), or when too much changed.
_CHANGES = """
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if since == g then return {g, 0, {}} end
if since < 0 or since > g
   or redis.call('ZCOUNT', KEYS[2], '(' .. since, '+inf') > tonumber(ARGV[2]) then
  return {g, 1, redis.call('HGETALL', KEYS[3])}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
local out = {}
if #ids > 0 then
  local docs = redis.call('HMGET', KEYS[3], unpack(ids))
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = docs[i] or ''
  end
end
return {g, 0, out}
"""


def _put_args(r: Restaurant) -> list[str | int | bytes]:
    return [r.restaurant_id, r.version, SearchDoc.of(r).encode()]


def region_of(lat: float, lon: float) -> str:
    return geohash_encode(lat, lon, REGION_PRECISION)


def regions_for(q: Query) -> list[str]:
    """The regions whose restaurants can be within ``q``'s radius (a little wider, to be safe)."""
    return cells_covering(
        q.lat, q.lon, q.radius_miles * METERS_PER_MILE * 1.001 + 5.0, REGION_PRECISION
    )


@dataclass(frozen=True, slots=True)
class _Copy:
    """A region as this replica holds it: as of generation ``gen`` of index ``epoch``."""

    epoch: bytes | None
    gen: int
    raws: dict[str, bytes]
    docs: dict[str, SearchDoc]
    table: RegionTable


def _pairs(flat: Sequence[bytes]) -> list[tuple[str, bytes]]:
    return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]


class SearchIndex:
    """Reads and writes the Redis side of search; PostgreSQL stays the source of truth."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._r = redis
        self._keys = keys
        self._put = redis.register_script(_PUT)
        self._remove = redis.register_script(_REMOVE)
        self._changes = redis.register_script(_CHANGES)
        self._copies: dict[str, _Copy] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._changes_seen = 0
        self._view_changes = 0
        self._view = RegionTable(())
        self._part: dict[str, int] = {}
        self.ready = asyncio.Event()
        #: Counters for metrics and the benchmark.
        self.full_loads = 0
        self.catch_ups = 0

    def _k(self, kind: str, region: str, *parts: str) -> str:
        return self._keys.region(f"catalog:{kind}", region, *parts)

    def _region_keys(self, region: str) -> list[str]:
        return [self._k(k, region) for k in ("doc", "ver", "gen", "chg")]

    def _changes_keys(self, region: str) -> list[str]:
        return [self._k(k, region) for k in ("gen", "chg", "doc")]

    @property
    def built_key(self) -> str:
        return self._keys.key("catalog:index", "built2")

    # --- writes -----------------------------------------------------------------------------

    async def put(self, r: Restaurant, *, before: Restaurant | None = None) -> None:
        """Writes ``r``'s document (and moves it if its region changed from ``before``'s)."""
        region = region_of(r.address.lat, r.address.lon)
        await self._put(keys=self._region_keys(region), args=_put_args(r))
        if before is not None:
            old = region_of(before.address.lat, before.address.lon)
            if old != region:
                await self._remove(keys=self._region_keys(old), args=[r.restaurant_id, r.version])

    async def mark_unbuilt(self) -> None:
        """After a failed index write: the next check rebuilds from PostgreSQL."""
        await self._r.delete(self.built_key)

    async def ensure_built(self, store: CatalogStore) -> bool:
        """Rebuilds the index from PostgreSQL if it is missing; True if it rebuilt."""
        if await self._r.exists(self.built_key):
            return False
        n = 0
        async for batch in store.all_restaurants():

            async def fill(pipe: Pipeline, batch: Sequence[Restaurant] = batch) -> None:
                for r in batch:
                    keys = self._region_keys(region_of(r.address.lat, r.address.lon))
                    await self._put(keys=keys, args=_put_args(r), client=pipe)

            await execute_with_scripts(self._r, fill, [self._put])
            n += len(batch)
        # A new epoch: every replica reloads what it holds, whatever the generations say.
        await self._r.set(self.built_key, f"{n} {uuid.uuid4().hex}")
        _log.info("catalog search index rebuilt from PostgreSQL: %d restaurants", n)
        return True

    async def keep_built(
        self, store: CatalogStore, *, every_s: float = 30.0, retry_s: float = 0.5
    ) -> None:
        """Runs until cancelled: builds the index when missing (at start, and if Redis lost it)."""
        while True:  # a dependency not up yet: health says so; try again
            await retry("building the search index", lambda: self.ensure_built(store),
                        first_s=retry_s, max_s=max(retry_s, 1.0), quiet_s=5.0,
                        log=_log)  # fmt: skip
            self.ready.set()
            await asyncio.sleep(every_s)

    # --- reads ------------------------------------------------------------------------------

    async def view(self, q: Query) -> tuple[RegionTable, list[int]]:
        """Every region this replica holds as one table, and which of its parts are the
        regions ``q`` can find restaurants in: those are as of now (every write that returned
        before this call is in them). Other parts may be older; no hit can come from them."""
        regions = regions_for(q)
        # The hot path is a plain pipeline of GETs (a script in a pipeline would cost
        # redis-py a SCRIPT EXISTS round trip per execution).
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.get(self.built_key)
            for region in regions:
                pipe.get(self._k("gen", region))
            replies: list[Any] = await pipe.execute()
        epoch: bytes | None = replies[0]
        gens = [int(g or 0) for g in replies[1:]]
        stale = [
            (region, gen)
            for region, gen in zip(regions, gens, strict=True)
            if (copy := self._copies.get(region)) is None or not _covers(copy, epoch, gen)
        ]
        if stale:
            await asyncio.gather(*(self._refresh(region, epoch, gen) for region, gen in stale))
        if self._view_changes != self._changes_seen:
            # Merged again after any copy changed: columns copied, nothing parsed (~1 ms per
            # 10,000 restaurants).
            self._part = {region: i for i, region in enumerate(self._copies)}
            self._view = RegionTable.merge([c.table for c in self._copies.values()])
            self._view_changes = self._changes_seen
        return self._view, [self._part[region] for region in regions]

    async def _refresh(self, region: str, epoch: bytes | None, gen: int) -> None:
        """Brings the copy of ``region`` to at least ``gen`` of ``epoch``: by the changes since
        its own generation when it can, else by loading the region whole."""
        copy = self._copies.get(region)
        if copy is not None and epoch is not None and copy.epoch == epoch:
            reply = await self._changes(keys=self._changes_keys(region),
                                        args=[copy.gen, _CATCH_UP_MAX])  # fmt: skip
            self._absorb(region, copy.gen, epoch, int(reply[0]), whole=bool(reply[1]),
                         flat=reply[2])  # fmt: skip
            now = self._copies.get(region)
            if now is not None and _covers(now, epoch, gen):
                return
        await self._load(region, epoch, gen)

    def _absorb(
        self, region: str, since: int, epoch: bytes | None, gen: int, *, whole: bool,
        flat: Sequence[bytes],
    ) -> None:  # fmt: skip
        """Brings the copy of ``region`` to ``gen`` with what changed since ``since``, if it
        can: a reply that is the whole region always can; a list of changes only onto a copy
        of the same epoch at ``since`` or later (another search may have moved it on)."""
        cur = self._copies.get(region)
        if cur is not None and _covers(cur, epoch, gen):
            return
        if whole:
            self._store(region, epoch, gen, whole=True, flat=flat)
        elif cur is not None and epoch is not None and cur.epoch == epoch and since <= cur.gen:
            # The changes since ``since`` include every change since ``cur.gen``.
            self._store(region, epoch, gen, whole=False, flat=flat)

    def _store(
        self, region: str, epoch: bytes | None, gen: int, *, whole: bool, flat: Sequence[bytes]
    ) -> _Copy:
        cur = self._copies.get(region)
        old_raws = cur.raws if cur is not None else {}
        old_docs = cur.docs if cur is not None else {}
        if whole:
            raws, docs = {}, {}
        else:
            raws, docs = dict(old_raws), dict(old_docs)
        for rid, raw in _pairs(flat):
            if not raw:
                raws.pop(rid, None)
                docs.pop(rid, None)
                continue
            raws[rid] = raw
            # A reload after a rebuild finds mostly the same bytes: keep those parsed.
            docs[rid] = old_docs[rid] if old_raws.get(rid) == raw else SearchDoc.decode(raw)
        if whole:
            self.full_loads += 1
        else:
            self.catch_ups += 1
        copy = self._copies[region] = _Copy(epoch, gen, raws, docs, RegionTable(docs.values()))
        self._changes_seen += 1
        return copy

    async def _load(self, region: str, epoch: bytes | None, gen: int) -> _Copy:
        """Loads ``region`` whole unless another search did meanwhile."""
        lock = self._loading.setdefault(region, asyncio.Lock())
        async with lock:
            cur = self._copies.get(region)
            if cur is not None and _covers(cur, epoch, gen):
                return cur
            reply = await self._changes(keys=self._changes_keys(region), args=[-1, 0])
            return self._store(region, epoch, int(reply[0]), whole=True, flat=reply[2])


def _covers(copy: _Copy, epoch: bytes | None, gen: int) -> bool:
    """Whether ``copy`` is at least as new as generation ``gen`` of ``epoch``.

    Without an epoch (the index being rebuilt), generations may have started over:
    only the same one is known to be the same data.
    """
    if copy.epoch != epoch:
        return False
    return copy.gen == gen if epoch is None else copy.gen >= gen
