"""Regions' search documents as numpy columns, to evaluate a search over all at once.

Pure, no I/O. :meth:`RegionTable.matches` decides exactly what :func:`search.evaluate`
decides for every row, without a Python loop over the rows:

- distance: the same haversine formula, vectorised. numpy's ``sin``/``arcsin`` and the
  C library's (which :func:`~foodmesh.core.geo.haversine_m` uses) may differ by a few
  units in the last place; a row whose vectorised distance lies within
  :data:`TOLERANCE` (relative) of a decision (the radius, the restaurant's maximum, a
  whole minute of travel) is measured again with the scalar function, so every decision
  is the scalar one. (:func:`search_table` does the same for near ties.)
- zones: :class:`~servers.catalog.zones.PolygonSet`, the same integer tests.
- opening hours: :func:`~servers.catalog.hours.is_open` per row, once per local minute
  (it depends on the instant only through each time zone's local date and minute).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np
import numpy.typing as npt

from foodmesh.core.geo import EARTH_RADIUS_M, METERS_PER_MILE, haversine_m
from servers.catalog.hours import is_open, local_now
from servers.catalog.search import (
    ASSUMED_CITY_SPEED_MPH,
    HANDOFF_MIN,
    Hit,
    Query,
    SearchDoc,
    Sort,
    sort_key,
)
from servers.catalog.text import RELEVANCE_STEP, TextQuery
from servers.catalog.zones import PolygonSet, to_e7

__all__ = ["I64", "TOLERANCE", "Matches", "Ranked", "RegionTable", "cell_of", "cell_reach_miles",
           "miles_between", "search_table"]  # fmt: skip

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Relative distance within which the vectorised and the scalar haversine could disagree on
#: a decision (they differ by ~1e-15): such rows are measured again with the scalar one.
TOLERANCE = 1e-9
_T = TypeVar("_T", bound=np.generic)
_K = TypeVar("_K", str, int)
_TINY = 1e-12


_PRICE_BIT = {p: 1 << p for p in range(63)}
#: Each cuisine seen is a bit, the same in every table of the process; past 63 cuisines a
#: bit stands for several, and the names are compared on the rows the bits let through.
_CUISINE_BIT: dict[str, int] = {}


def _cuisine_bits(names: Iterable[str], *, add: bool = True) -> int:
    out = 0
    for name in names:
        bit = _CUISINE_BIT.get(name)
        if bit is None:
            if not add:
                continue
            bit = _CUISINE_BIT[name] = 1 << (len(_CUISINE_BIT) % 63)
        out |= bit
    return out


def _bits(names: Iterable[_K], bit: Mapping[_K, int]) -> int:
    out = 0
    for name in names:
        out |= bit.get(name, 0)
    return out


def _lon_reach(lat: float, band: float) -> float:
    """Degrees of longitude beyond which no point within ``band`` degrees (great circle)
    of latitude ``lat`` lies: ``band / cos`` of the band's latitude farthest from the
    equator (more than the exact ``asin(sin band / cos lat)``), widened, or 180 near a pole."""
    far = abs(lat) + band
    if far >= 89.0:
        return 180.0
    return min(180.0, band / math.cos(math.radians(far)) * (1 + 1e-6) + 1e-9)


def cell_of(lat: float, lon: float) -> tuple[float, float]:
    """The 0.01° cell of a point: its lat/lon rounded to 2 places (the design's cache key)."""
    return round(lat, 2), round(lon, 2)


#: Half a cell, and a little more: every point whose coordinates round to a cell's lies
#: within this many degrees of it on each axis (and E7 units, after rounding to E7).
_HALF_CELL = 0.005 + 1e-9
_HALF_CELL_E7 = 50_001


def cell_reach_miles(clat: float, clon: float) -> float:
    """How far (great circle) a point of the cell centred at ``clat, clon`` can be from the
    centre: the farthest corner, widened a little."""
    far = max(
        haversine_m(clat, clon, min(90.0, max(-90.0, clat + dy)), clon + dx)
        for dy in (-_HALF_CELL, _HALF_CELL)
        for dx in (-_HALF_CELL, _HALF_CELL)
    )
    return far / METERS_PER_MILE * 1.001 + 1e-6


def miles_between(lat: float, lon: float, doc: SearchDoc) -> float:
    """The scalar distance search decides with."""
    return haversine_m(lat, lon, doc.lat, doc.lon) / METERS_PER_MILE


@dataclass(frozen=True, slots=True)
class Matches:
    """The hits of one table: row numbers and what the hit shows, in row order."""

    table: RegionTable
    rows: I64
    miles: F64
    minutes: I64
    fee: I64
    minimum: I64
    is_open: Bools


class RegionTable:
    """Restaurants as columns, immutable once built: one region's sorted by latitude (one
    *part*), or several such merged one after another (:meth:`merge`, a part each)."""

    __slots__ = ("_open", "_open_key", "_sources", "cos_phi", "cuisines", "docs", "ids", "lat",
                 "lon", "max_miles", "minimum", "one_zone", "order_count", "part_start", "phi",
                 "polygons", "popularity", "prep", "price_bit", "rating", "review_count",
                 "term_ids", "term_rows", "term_weights", "tzs", "zone_count", "zone_fee",
                 "zone_minimum", "zone_start")  # fmt: skip

    def __init__(self, docs: Iterable[SearchDoc]) -> None:
        self.docs = tuple(sorted(docs, key=lambda d: d.lat))
        ds, n = self.docs, len(self.docs)
        self.part_start = np.array([0, n], dtype=np.int64)
        self._sources: tuple[RegionTable, ...] = ()
        self.ids = np.array([d.restaurant_id for d in ds], dtype=np.str_)
        # One pass over the documents; a conversion per type of column.
        floats = np.array([(d.lat, d.lon, d.rating, d.max_miles, d.popularity) for d in ds],
                          dtype=np.float64).reshape(n, 5)  # fmt: skip
        ints = np.array(
            [(d.review_count, d.order_count, d.prep_min, d.minimum_minor, len(d.zones),
              _cuisine_bits(d.cuisines), (1 << d.price_level) if 0 <= d.price_level < 63 else 0)
             for d in ds],
            dtype=np.int64,
        ).reshape(n, 7)  # fmt: skip
        (self.lat, self.lon, self.rating, self.max_miles,
         self.popularity) = (floats[:, i].copy() for i in range(5))  # fmt: skip
        (self.review_count, self.order_count, self.prep, self.minimum, self.zone_count,
         self.cuisines, self.price_bit) = (ints[:, i].copy() for i in range(7))  # fmt: skip
        self.phi: F64 = np.radians(self.lat)
        self.cos_phi: F64 = np.cos(self.phi)
        self.tzs = tuple(sorted({d.time_zone for d in ds}))
        # Zones row by row, in the order each restaurant lists them.
        self.zone_start: I64 = np.cumsum(self.zone_count) - self.zone_count
        self.one_zone = bool(np.all(self.zone_count == 1))
        zones = [z for d in ds for z in d.zones]
        money = np.array([(z.fee_minor, z.minimum_minor) for z in zones],
                         dtype=np.int64).reshape(len(zones), 2)  # fmt: skip
        self.zone_fee, self.zone_minimum = money[:, 0].copy(), money[:, 1].copy()
        self.polygons = PolygonSet([z.polygon for z in zones])
        self._open_key: tuple[tuple[dt.date, int], ...] | None = None
        self._open: Bools = np.zeros(n, dtype=np.bool_)
        # Text postings: (word id, row, weight), sorted by word id (stable: rows ascending).
        counts = np.fromiter((len(d.term_ids) for d in ds), np.int64, n)
        total = int(counts.sum())
        word = np.fromiter(itertools.chain.from_iterable(d.term_ids for d in ds), np.int64, total)
        weight = np.fromiter(itertools.chain.from_iterable(d.term_weights for d in ds),
                             np.float64, total)  # fmt: skip
        order = np.argsort(word, kind="stable")
        self.term_ids: I64 = word[order]
        self.term_rows: I64 = np.repeat(np.arange(n, dtype=np.int64), counts)[order]
        self.term_weights: F64 = weight[order]

    @staticmethod
    def merge(tables: Sequence[RegionTable]) -> RegionTable:
        """``tables`` one after another, part by part: a search of several regions then
        pays numpy's per-call overhead once, not once per region. Copies columns only."""
        out = RegionTable(())
        if not tables:
            return out
        sizes = [len(t) for t in tables]
        starts = [t.part_start[:-1] + off for t, off in zip(tables, np.cumsum([0] + sizes[:-1]),
                                                             strict=True)]  # fmt: skip
        out.part_start = np.concatenate([*starts, [sum(sizes)]]).astype(np.int64)
        out._sources = tuple(tables)
        out.docs = tuple(d for t in tables for d in t.docs)
        for name in ("ids", "lat", "lon", "phi", "cos_phi", "rating", "max_miles", "review_count",
                     "order_count", "popularity", "prep", "minimum", "cuisines", "price_bit",
                     "zone_count", "zone_fee", "zone_minimum"):  # fmt: skip
            setattr(out, name, np.concatenate([getattr(t, name) for t in tables]))
        zone_offsets = np.cumsum([0] + [len(t.zone_fee) for t in tables[:-1]])
        out.zone_start = np.concatenate(
            [t.zone_start + off for t, off in zip(tables, zone_offsets, strict=True)]
        )
        out.one_zone = all(t.one_zone for t in tables)
        out.tzs = tuple(sorted({tz for t in tables for tz in t.tzs}))
        out.polygons = PolygonSet.merge([t.polygons for t in tables])
        out._open = np.zeros(len(out.docs), dtype=np.bool_)
        return out

    def relevance(self, text: TextQuery, parts: Iterable[int] | None = None) -> F64:
        """Per row, :meth:`TextQuery.score` of its words (0: no match), for the rows of
        ``parts`` (default: all; other rows are 0 unless they share a source table)."""
        n = len(self.docs)
        sources: list[tuple[RegionTable, int]]
        if self._sources:
            offsets = np.cumsum([0] + [len(t) for t in self._sources[:-1]])
            by_part: list[tuple[RegionTable, int]] = []
            for t, off in zip(self._sources, offsets.tolist(), strict=True):
                by_part += [(t, off)] * t.parts
            wanted = range(self.parts) if parts is None else parts
            sources = list({id(by_part[p][0]): by_part[p] for p in wanted}.values())
        else:
            sources = [(self, 0)]
        total = np.zeros(n, dtype=np.float64)
        matched = np.ones(n, dtype=np.bool_)
        for m in text.matches:
            best = np.zeros(n, dtype=np.float64)
            if m:
                wids = np.fromiter(m.keys(), np.int64, len(m))
                quality = np.fromiter(m.values(), np.float64, len(m))
                for t, off in sources:
                    lo = np.searchsorted(t.term_ids, wids, side="left")
                    hi = np.searchsorted(t.term_ids, wids, side="right")
                    size = hi - lo
                    k = int(size.sum())
                    if not k:
                        continue
                    at = np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(k)
                    np.maximum.at(best, t.term_rows[at] + off,
                                  t.term_weights[at] * np.repeat(quality, size))  # fmt: skip
            matched &= best > 0.0
            total += best
        total[~matched] = 0.0
        return total

    @property
    def parts(self) -> int:
        return len(self.part_start) - 1

    def __len__(self) -> int:
        return len(self.docs)

    def open_at(self, now: dt.datetime) -> Bools:
        """Per row, :func:`is_open` at ``now``; computed once per local minute."""
        key = tuple(local_now(now, tz) for tz in self.tzs)
        if key != self._open_key and self._sources:
            self._open = np.concatenate([t.open_at(now) for t in self._sources])
            self._open_key = key
        elif key != self._open_key:
            here = dict(zip(self.tzs, key, strict=True))
            self._open = np.fromiter(
                (is_open(now, d.time_zone, d.hours, d.closures, paused=d.paused,
                         local=here[d.time_zone]) for d in self.docs),
                np.bool_, len(self.docs),
            )  # fmt: skip
            self._open_key = key
        return self._open

    def near(self, lat: float, lon: float, radius_miles: float,
             parts: Iterable[int] | None = None) -> I64:  # fmt: skip
        """Rows of ``parts`` (default: all) in the box around the point that holds every
        row within ``radius_miles`` of it (and some more), part by part in ``parts`` order."""
        # Haversine distance is at least R * |difference of latitudes|: rows outside this
        # band are beyond the radius, and each part is sorted by latitude.
        band = math.degrees(radius_miles * METERS_PER_MILE / EARTH_RADIUS_M)
        band = band * (1 + TOLERANCE) + 1e-9
        spans = []
        for p in range(self.parts) if parts is None else parts:
            start, end = int(self.part_start[p]), int(self.part_start[p + 1])
            lats = self.lat[start:end]
            lo = start + int(np.searchsorted(lats, lat - band, side="left"))
            hi = start + int(np.searchsorted(lats, lat + band, side="right"))
            if lo < hi:
                spans.append(np.arange(lo, hi))
        rows = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        # ... and outside the circle's longitude span (as cells_covering bounds it, widened).
        reach = _lon_reach(lat, band)
        if reach < 180.0:
            off = np.abs(self.lon[rows] - lon)
            if abs(lon) + reach < 180.0:
                rows = rows[off <= reach]
            else:  # the span crosses the antimeridian
                rows = rows[(off <= reach) | (off >= 360.0 - reach)]
        return rows

    def _miles(self, lat: float, lon: float, rows: I64) -> F64:
        """The vectorised haversine of :func:`miles_between`, term by term."""
        p1 = math.radians(lat)
        dp = self.phi[rows] - p1
        dl = np.radians(self.lon[rows] - lon)
        a = np.sin(dp / 2) ** 2 + math.cos(p1) * self.cos_phi[rows] * np.sin(dl / 2) ** 2
        out: F64 = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a))) / METERS_PER_MILE
        return out

    def candidates(self, q: Query, parts: Iterable[int] | None = None) -> tuple[I64, I64]:
        """Every row that can be a hit of ``q`` from *any* point of its 0.01° cell (the points
        whose lat/lon round to ``q``'s, to 2 places), by the filters that do not depend on
        the point or the clock; in the order :meth:`near` gives. A superset: ``matches``
        with ``rows=`` these decides exactly, per point, what it decides without.

        And per row, the zone it delivers from to every point of the cell when that is the
        same for all of them (each of its zones holds the whole cell or none of it), else
        -1: then ``matches`` tests that row's zones at the point. Rows whose zones hold no
        point of the cell are left out.
        """
        clat, clon = cell_of(q.lat, q.lon)
        reach = cell_reach_miles(clat, clon)
        rows = self.near(clat, clon, q.radius_miles + reach, parts)
        miles = self._miles(clat, clon, rows)
        # Triangle inequality: within r of a point of the cell => within r + reach of its
        # centre (widened for the vectorised formula's last-place error).
        limit = (np.minimum(q.radius_miles, self.max_miles[rows]) + reach) * (1 + 1e-6) + 1e-9
        keep = miles <= limit
        if q.cuisines:
            keep &= (self.cuisines[rows] & _cuisine_bits(q.cuisines, add=False)) != 0
        if q.price_levels:
            keep &= (self.price_bit[rows] & _bits(q.price_levels, _PRICE_BIT)) != 0
        if q.min_rating:
            keep &= self.rating[rows] >= q.min_rating
        rows = rows[keep]
        # Each zone of each row: holds all the cell (1), none of it (0), or it depends (-1).
        count = self.zone_count[rows]
        first = np.cumsum(count) - count
        zone = np.repeat(self.zone_start[rows] - first, count) + np.arange(int(count.sum()))
        owner = np.repeat(np.arange(len(rows)), count)
        settled = self.polygons.settled_e7(to_e7(clat), to_e7(clon), _HALF_CELL_E7, zone)
        unsure = np.bincount(owner[settled < 0], minlength=len(rows)) > 0
        # Where every zone is settled: the cheapest holding the cell (first listed on a tie).
        held = settled == 1
        z, o = zone[held], owner[held]
        order = np.lexsort((z, self.zone_fee[z], o))
        z, o = z[order], o[order]
        lead = np.ones(len(o), dtype=np.bool_)
        lead[1:] = o[1:] != o[:-1]
        chosen = np.full(len(rows), -1, dtype=np.int64)
        chosen[o[lead]] = z[lead]
        chosen[unsure] = -1
        useful = unsure | (chosen >= 0)
        out_rows: I64 = rows[useful]
        out_zone: I64 = chosen[useful]
        return out_rows, out_zone

    def _zones_at(self, rows: I64, at: I64, point_e7: tuple[int, int]) -> tuple[I64, I64, I64]:
        """Of ``rows`` (with their places ``at``), those with a zone holding the point, and
        the zone each delivers from: the cheapest (first listed on a tie)."""
        if self.one_zone:
            zone = self.zone_start[rows]
            inside = self.polygons.contains_e7(*point_e7, zone)
            return rows[inside], at[inside], zone[inside]
        # Zones of a row are numbered in their listed order.
        count = self.zone_count[rows]
        first = np.cumsum(count) - count
        zone = np.repeat(self.zone_start[rows] - first, count) + np.arange(int(count.sum()))
        owner = np.repeat(np.arange(len(rows)), count)
        inside = self.polygons.contains_e7(*point_e7, zone)
        zone, owner = zone[inside], owner[inside]
        order = np.lexsort((zone, self.zone_fee[zone], owner))
        zone, owner = zone[order], owner[order]
        lead = np.ones(len(owner), dtype=np.bool_)
        lead[1:] = owner[1:] != owner[:-1]
        zone, owner = zone[lead], owner[lead]
        return rows[owner], at[owner], zone

    def matches(
        self, q: Query, point_e7: tuple[int, int], now: dt.datetime,
        parts: Iterable[int] | None = None, *, rows: I64 | None = None,
        zones: I64 | None = None, relevance: F64 | None = None,
    ) -> Matches:  # fmt: skip
        """Every row of ``parts`` (default: all) that is a hit for ``q`` at ``now``
        (``point_e7``: the query point in E7); only among ``rows`` if given (a superset of
        the hits, in :meth:`near`'s order, such as :meth:`candidates`), with ``zones`` the
        zone per row already known to hold the point (-1: test it); only rows with a
        positive ``relevance`` if given (a text query)."""
        if rows is None:
            rows = self.near(q.lat, q.lon, q.radius_miles, parts)
        if relevance is not None:
            found = relevance[rows] > 0.0
            rows = rows[found]
            zones = zones[found] if zones is not None else None
        miles = self._miles(q.lat, q.lon, rows)
        limit = np.minimum(q.radius_miles, self.max_miles[rows])
        at = np.flatnonzero(miles <= limit * (1 + TOLERANCE))
        known = zones[at] if zones is not None else None
        rows, miles, limit = rows[at], miles[at], limit[at]
        travel = miles / ASSUMED_CITY_SPEED_MPH * 60.0
        near = np.flatnonzero(
            (miles >= limit * (1 - TOLERANCE))
            | (np.abs(travel - np.rint(travel)) <= TOLERANCE * travel + _TINY)
        )
        if len(near):
            for i in near.tolist():
                miles[i] = miles_between(q.lat, q.lon, self.docs[rows[i]])
            travel = miles / ASSUMED_CITY_SPEED_MPH * 60.0
        keep = miles <= limit
        if q.cuisines:
            keep &= (self.cuisines[rows] & _cuisine_bits(q.cuisines, add=False)) != 0
        if q.price_levels:
            keep &= (self.price_bit[rows] & _bits(q.price_levels, _PRICE_BIT)) != 0
        if q.min_rating:
            keep &= self.rating[rows] >= q.min_rating
        minutes = self.prep[rows] + np.ceil(travel).astype(np.int64) + HANDOFF_MIN
        if q.max_delivery_time_min:
            keep &= minutes <= q.max_delivery_time_min
        open_ = self.open_at(now)[rows]
        if q.open_now:
            keep &= open_
        at = np.flatnonzero(keep)
        if q.cuisines and len(_CUISINE_BIT) > 63:
            at = at[[not q.cuisines.isdisjoint(self.docs[r].cuisines) for r in rows[at].tolist()]]
        rows = rows[at]
        if known is None:
            rows, at, zone = self._zones_at(rows, at, point_e7)
        else:
            known = known[at]
            test = known < 0
            t_rows, t_at, t_zone = self._zones_at(rows[test], at[test], point_e7)
            sure = ~test
            rows = np.concatenate([rows[sure], t_rows])
            at = np.concatenate([at[sure], t_at])
            zone = np.concatenate([known[sure], t_zone])
            order = np.argsort(at, kind="stable")  # back in row order
            rows, at, zone = rows[order], at[order], zone[order]
        return Matches(
            table=self,
            rows=rows,
            miles=miles[at],
            minutes=minutes[at],
            fee=self.zone_fee[zone],
            minimum=np.maximum(self.minimum[rows], self.zone_minimum[zone]),
            is_open=open_[at],
        )


class Ranked(Sequence[Hit]):
    """Hits in the query's order. A :class:`Hit` is built only when read (a page, a cursor)."""

    __slots__ = ("_fee", "_is_open", "_miles", "_minimum", "_minutes", "_order", "_relevance",
                 "_rows", "_sort", "_table")  # fmt: skip

    def __init__(self, sort: int, m: Matches, order: I64, relevance: F64 | None = None) -> None:
        self._sort = sort
        self._relevance = relevance.tolist() if relevance is not None else None
        self._table = m.table
        self._rows = m.rows.tolist()
        self._miles = m.miles.tolist()
        self._minutes = m.minutes.tolist()
        self._fee = m.fee.tolist()
        self._minimum = m.minimum.tolist()
        self._is_open = m.is_open.tolist()
        self._order = order.tolist()

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, i: int) -> Hit: ...
    @overload
    def __getitem__(self, i: slice) -> list[Hit]: ...
    def __getitem__(self, i: int | slice) -> Hit | list[Hit]:
        if isinstance(i, slice):
            return [self._hit(k) for k in self._order[i]]
        return self._hit(self._order[i])

    def _hit(self, k: int) -> Hit:
        doc = self._table.docs[self._rows[k]]
        miles, minutes = self._miles[k], self._minutes[k]
        return Hit(
            doc=doc,
            distance_miles=miles,
            delivery_time_min=minutes,
            fee_minor=self._fee[k],
            minimum_minor=self._minimum[k],
            is_open=self._is_open[k],
            key=sort_key(
                self._sort,
                doc,
                miles,
                minutes,
                self._relevance[k] if self._relevance is not None else None,
            ),
        )


def _subset(m: Matches, keep: npt.NDArray[np.bool_] | I64) -> Matches:
    return Matches(m.table, m.rows[keep], m.miles[keep], m.minutes[keep], m.fee[keep],
                   m.minimum[keep], m.is_open[keep])  # fmt: skip


def search_table(
    table: RegionTable, q: Query, now: dt.datetime, *, parts: Iterable[int] | None = None,
    rows: I64 | None = None, zones: I64 | None = None,
) -> Ranked:  # fmt: skip
    """Every hit in ``parts`` of ``table`` (default: all), in ``q``'s order; a restaurant in
    two parts (moving between regions) counts once, where it comes first.

    The same hits in the same order as :func:`search.search_docs` over the same documents.
    """
    relevance = table.relevance(q.text, parts) if q.text else None
    m = table.matches(q, (to_e7(q.lat), to_e7(q.lon)), now, parts, rows=rows, zones=zones,
                      relevance=relevance)  # fmt: skip
    ids = table.ids[m.rows]
    by_id = np.argsort(ids, kind="stable")
    if len(ids) > 1:
        same = ids[by_id[1:]] == ids[by_id[:-1]]
        if same.any():  # stable: the first of equal ids is the first in row order
            keep = np.ones(len(ids), dtype=np.bool_)
            keep[by_id[1:][same]] = False
            m = _subset(m, keep)
            ids = ids[keep]
            by_id = np.argsort(ids, kind="stable")
    miles = m.miles
    # Distances nearer each other than the two haversines can disagree by are ordered by
    # the scalar ones (filters on them were decided in ``matches`` already).
    by_miles = np.argsort(miles, kind="stable")
    ms = miles[by_miles]
    tie = np.diff(ms) <= TOLERANCE * ms[1:] + _TINY
    if tie.any():
        for i in set(by_miles[:-1][tie].tolist()) | set(by_miles[1:][tie].tolist()):
            miles[i] = miles_between(q.lat, q.lon, table.docs[int(m.rows[i])])
    id_rank = np.empty(len(ids), dtype=np.int64)
    id_rank[by_id] = np.arange(len(ids))
    keys: tuple[I64 | F64, ...]
    if q.sort == Sort.RATING:
        keys = (id_rank, miles, -table.review_count[m.rows], -table.rating[m.rows])
    elif q.sort == Sort.DELIVERY_TIME:
        keys = (id_rank, miles, m.minutes)
    elif q.sort == Sort.POPULARITY:
        keys = (id_rank, miles, -table.review_count[m.rows], -table.order_count[m.rows],
                -table.popularity[m.rows])  # fmt: skip
    else:
        keys = (id_rank, miles)
    steps = None
    if relevance is not None:
        # The same steps as ``text.relevance_step``, first in the order.
        steps = np.floor(relevance[m.rows] / RELEVANCE_STEP + 1e-9) * RELEVANCE_STEP
        keys = (*keys, -steps)
    return Ranked(q.sort, m, np.lexsort(keys).astype(np.int64), steps)
