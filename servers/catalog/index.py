"""The search index in Redis: restaurants by region, and the cache of popular searches.

Layout (``<ns>`` the namespace, ``{9q8y}`` a region: the geohash-4 cell of a restaurant,
as the Location service uses them):

- ``<ns>:catalog:geo:{r}`` — GEO set of the region's restaurant ids.
- ``<ns>:catalog:doc:{r}`` — hash: id → search document (compact JSON, ``search.SearchDoc``).
- ``<ns>:catalog:ver:{r}`` — hash: id → row version last written. A write with an older
  version is ignored, so writes that reach Redis out of order cannot go back in time;
  a removal leaves its version behind as a tombstone.
- ``<ns>:catalog:gen:{r}`` — counter, +1 whenever a restaurant of the region changes.
- ``<ns>:catalog:search:{r}:<hash>`` — a cached search (TTL :data:`CACHE_TTL_S`) in the
  region of its cell's centre: the region generations it was computed at, then the
  documents of every restaurant within ``radius + cell reach`` of the cell's centre
  that passes the point-independent filters.
- ``<ns>:catalog:index:built`` — set once the index holds every restaurant of PostgreSQL.

Each write touches the keys of one region only (one hash tag), in a script, so it runs
unchanged on Redis Cluster. A search reads the generations of the regions it covers
and its cache entry in one round trip; on a miss one more round trip runs a script per
region (GEOSEARCH then HMGET of the documents). The cache never makes a search
inexact: it holds a superset for the whole 0.01 degree cell, and every request then
measures exact distances from its own point. A cached entry dies when a restaurant of
a covered region changes (its generation moves), or after the TTL. Ratings move
without invalidating (a review is not worth flushing a busy region's cache for): a
cached rating may lag by up to the TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from servers.catalog.model import Restaurant
from servers.catalog.search import Query, SearchDoc, cache_cell
from servers.catalog.store import CatalogStore
from servers.runtime.geo import METERS_PER_MILE, cells_covering, geohash_encode
from servers.runtime.redis import Keys

__all__ = ["CACHE_TTL_S", "REGION_PRECISION", "SearchIndex", "region_of"]

_log = logging.getLogger("foodmesh.catalog.index")

#: Geohash-4 regions, as the Location service keys drivers.
REGION_PRECISION = 4
#: How long a popular search stays cached ("briefly").
CACHE_TTL_S = 20
#: Redis GEO measures on a slightly different sphere and 52-bit cells: ask a little wider,
#: then the exact haversine filter decides.
_GEO_SLACK = 1.001
_GEO_SLACK_M = 5.0
_PARSED_MAX = 200_000
_SEP = b"\x1e"  # never inside a JSON document (control characters are escaped)

_PUT = """
local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if cur >= tonumber(ARGV[4]) then return 0 end
redis.call('GEOADD', KEYS[1], ARGV[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
if ARGV[6] == '1' then redis.call('INCR', KEYS[4]) end
return 1
"""

_REMOVE = """
local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[4])
return 1
"""

_SEARCH = """
local ids = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
                       'BYRADIUS', ARGV[3], 'm')
local out = {}
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end
  local docs = redis.call('HMGET', KEYS[2], unpack(chunk))
  for k = 1, #docs do
    if docs[k] then out[#out + 1] = docs[k] end
  end
end
return out
"""


def _put_args(r: Restaurant, doc: bytes, *, invalidate: bool) -> list[str | int | float | bytes]:
    a = r.address
    return [r.restaurant_id, a.lon, a.lat, r.version, doc, "1" if invalidate else "0"]


def region_of(lat: float, lon: float) -> str:
    return geohash_encode(lat, lon, REGION_PRECISION)


class SearchIndex:
    """Reads and writes the Redis side of search; PostgreSQL stays the source of truth."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._r = redis
        self._keys = keys
        self._put = redis.register_script(_PUT)
        self._remove = redis.register_script(_REMOVE)
        self._search = redis.register_script(_SEARCH)
        self._parsed: dict[bytes, SearchDoc] = {}
        self.ready = asyncio.Event()
        #: Counters for metrics and the benchmark.
        self.cache_hits = 0
        self.cache_misses = 0

    def _k(self, kind: str, region: str, *parts: str) -> str:
        return self._keys.region(f"catalog:{kind}", region, *parts)

    def _region_keys(self, region: str) -> list[str]:
        return [self._k(k, region) for k in ("geo", "doc", "ver", "gen")]

    @property
    def built_key(self) -> str:
        return self._keys.key("catalog:index", "built")

    # --- writes -----------------------------------------------------------------------------

    async def put(
        self, r: Restaurant, *, before: Restaurant | None = None, invalidate: bool = True
    ) -> None:
        """Writes ``r``'s document (and moves it if its region changed from ``before``'s)."""
        region = region_of(r.address.lat, r.address.lon)
        doc = SearchDoc.of(r).encode()
        args = _put_args(r, doc, invalidate=invalidate)
        await self._put(keys=self._region_keys(region), args=args)
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
        regions: set[str] = set()
        async for batch in store.all_restaurants():
            async with self._r.pipeline(transaction=False) as pipe:
                for r in batch:
                    region = region_of(r.address.lat, r.address.lon)
                    regions.add(region)
                    args = _put_args(r, SearchDoc.of(r).encode(), invalidate=False)
                    await self._put(keys=self._region_keys(region), args=args, client=pipe)
                await pipe.execute()
            n += len(batch)
        if regions:
            async with self._r.pipeline(transaction=False) as pipe:
                for region in regions:
                    pipe.incr(self._k("gen", region))
                await pipe.execute()
        await self._r.set(self.built_key, str(n))
        _log.info("catalog search index rebuilt from PostgreSQL: %d restaurants", n)
        return True

    async def keep_built(
        self, store: CatalogStore, *, every_s: float = 30.0, retry_s: float = 0.5
    ) -> None:
        """Runs until cancelled: builds the index when missing (at start, and if Redis lost it)."""
        while True:
            try:
                await self.ensure_built(store)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # dependency not up yet: health says so; try again
                _log.debug("search index not built yet: %s", exc)
                await asyncio.sleep(retry_s)
                continue
            self.ready.set()
            await asyncio.sleep(every_s)

    # --- reads ------------------------------------------------------------------------------

    def _parse(self, raw: bytes) -> SearchDoc:
        doc = self._parsed.get(raw)
        if doc is None:
            if len(self._parsed) >= _PARSED_MAX:
                self._parsed.clear()
            doc = self._parsed[raw] = SearchDoc.decode(raw)
        return doc

    def _parse_all(self, raws: Iterable[bytes]) -> list[SearchDoc]:
        parse = self._parse
        return [parse(raw) for raw in raws]

    async def candidates(self, q: Query) -> list[SearchDoc]:
        """Documents of every restaurant that can be a hit for ``q`` (a superset, maybe dupes)."""
        clat, clon, reach = cache_cell(q.lat, q.lon)
        wide_m = q.radius_miles * METERS_PER_MILE + reach
        regions = cells_covering(clat, clon, wide_m, REGION_PRECISION)
        params = json.dumps([clat, clon, q.radius_miles, sorted(q.cuisines),
                             sorted(q.price_levels), q.min_rating])  # fmt: skip
        digest = hashlib.blake2b(params.encode(), digest_size=10).hexdigest()
        cache_key = self._k("search", region_of(clat, clon), digest)
        async with self._r.pipeline(transaction=False) as pipe:
            for region in regions:
                pipe.get(self._k("gen", region))
            pipe.get(cache_key)
            got: list[Any] = await pipe.execute()
        gens = b",".join(g or b"0" for g in got[:-1])
        cached: bytes | None = got[-1]
        if cached is not None:
            head, _, body = cached.partition(b"\n")
            if head == gens:
                self.cache_hits += 1
                return self._parse_all(body.split(_SEP)) if body else []
        self.cache_misses += 1
        radius = f"{wide_m * _GEO_SLACK + _GEO_SLACK_M:.1f}"
        async with self._r.pipeline(transaction=False) as pipe:
            for region in regions:
                await self._search(
                    keys=[self._k("geo", region), self._k("doc", region)],
                    args=[clon, clat, radius],
                    client=pipe,
                )
            replies: list[list[bytes]] = await pipe.execute()
        raws = [raw for reply in replies for raw in reply]
        docs = self._parse_all(raws)
        keep = [i for i, d in enumerate(docs) if q.prefilter(d)]
        # Written with the generations read before searching: a change meanwhile moved one,
        # so the entry is never served.
        await self._r.set(
            cache_key, gens + b"\n" + _SEP.join(raws[i] for i in keep), ex=CACHE_TTL_S
        )
        return [docs[i] for i in keep]
