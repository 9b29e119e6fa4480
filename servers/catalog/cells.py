"""The cache of popular searches: per 0.01° cell, the restaurants a search there can find.

The seed caches "popular searches (lat/lon rounded to 0.01°)". A whole answer cannot be
shared across a cell and stay right: a cell is ~0.7 × 0.55 miles here, and everything a
result says depends on the exact point — its distance, its delivery time, whether the
point is inside the restaurant's zone and within its radius, the order by distance. So
what is cached per cell (and radius and point-free filters: cuisines, price levels,
minimum rating) is the answer *for the whole cell*: every restaurant that passes those
filters and lies within ``radius + reach`` of the cell's centre (``reach``: how far a
point of the cell can be from it), as rows of the replica's search table
(:meth:`RegionTable.candidates`), and per row the zone it delivers from when that is the
same for every point of the cell (a zone edge that comes nowhere near the cell). Each
request then decides exactly from its own point among those rows: distance, radius and
maximum distance, delivery time, open now, sort and page, and the zone only for rows
whose zone edges cross the cell. Results are identical to an uncached search (tested
with hypothesis); a hit skips the band scan, the point-free filters and most
point-in-polygon tests, the costly part of a search.

In-process, not Redis: the entry is row numbers into this replica's own table (useless to
another replica, and cheaper to recompute than to fetch), and a search already makes its
one Redis round trip — the change counters of its regions — which is exactly what keeps
entries correct. An entry is valid only for the table it was computed on; any restaurant
change (upsert, zone edit, pause, review) moves its region's counter, the next search
re-merges the table, and the whole cache is dropped at once. Entries also live at most
``ttl_s`` (brief: 10 s) and there are at most ``max_entries`` (least recently used go).
Sort, cursor and page size are not in the key: every page and sort of a cell shares one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache
from prometheus_client import Counter

from servers.catalog.search import Query
from servers.catalog.table import I64, RegionTable, cell_of

__all__ = ["SEARCH_CACHE", "CellCache"]

#: Searches served from a cached cell (``hit``), computed (``miss``), and times the whole
#: cache was dropped because a restaurant changed (``invalidation``).
SEARCH_CACHE = Counter(
    "foodmesh_catalog_search_cache", "Popular-search cache events by result", ["result"]
)
_HIT, _MISS, _INVALID = (SEARCH_CACHE.labels(r) for r in ("hit", "miss", "invalidation"))

_Key = tuple[float, float, float, frozenset[str], float, frozenset[int], tuple[int, ...]]


class CellCache:
    """Candidate rows per (cell, radius, point-free filters, regions), for one table.

    A :class:`cachetools.TTLCache`; the wrapper drops it when the table changes and
    counts hits, misses and invalidations.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 10.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._table: RegionTable | None = None
        self._entries: TTLCache[_Key, tuple[I64, I64]] = TTLCache(
            max_entries, max(ttl_s, 0.0), timer=clock
        )
        #: Counters for metrics, tests and the benchmark.
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def rows(self, table: RegionTable, q: Query, parts: Sequence[int]) -> tuple[I64, I64]:
        """The rows of ``parts`` of ``table`` that ``q`` can find from anywhere in its cell,
        and the zone each delivers from to the whole cell (-1: depends on the point)."""
        if table is not self._table:
            if self._entries:
                self.invalidations += 1
                _INVALID.inc()
            self._entries.clear()
            self._table = table
        if self.ttl_s <= 0:
            self.misses += 1
            _MISS.inc()
            return table.candidates(q, parts)
        clat, clon = cell_of(q.lat, q.lon)
        key: _Key = (clat, clon, q.radius_miles, q.cuisines, q.min_rating, q.price_levels,
                     tuple(parts))  # fmt: skip
        hit = self._entries.get(key)
        if hit is not None:
            self.hits += 1
            _HIT.inc()
            return hit
        self.misses += 1
        _MISS.inc()
        rows, zones = table.candidates(q, parts)
        self._entries[key] = rows, zones
        return rows, zones
