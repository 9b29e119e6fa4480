"""Delivery-zone polygons: exact point-in-polygon, GeoJSON parsing, shape checks. Pure, no I/O.

Coordinates are held as integers in units of 1e-7 degree ("E7", about 1.1 cm), the
way Google's LatLng E7 does. Every vertex and every tested point is rounded to that
grid once, and from then on the arithmetic is exact integer arithmetic: a point
lying on an edge or a vertex is decided exactly (it counts as inside), never by a
floating-point epsilon. Zones are planar in (lon, lat) degrees, which is what
GeoJSON means by a polygon; a zone may not straddle the antimeridian.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "E7",
    "MAX_VERTICES",
    "Polygon",
    "PolygonError",
    "PolygonSet",
    "from_e7",
    "parse_geojson",
    "polygon_problem",
    "to_e7",
]

E7 = 10_000_000
#: Polygons of up to this many vertices are also kept as one padded block (faster).
_PADDED_MAX = 32
#: More vertices than this is a mistake (a traced coastline), not a delivery zone.
MAX_VERTICES = 500


class PolygonError(ValueError):
    """A polygon that cannot be a delivery zone; the message says why."""


def to_e7(degrees: float) -> int:
    """Degrees to the E7 integer grid (round half away from zero)."""
    return int(math.copysign(math.floor(abs(degrees) * E7 + 0.5), degrees))


def from_e7(value: int) -> float:
    return value / E7


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon's outer ring as E7 ``(lat, lon)`` vertices, not closed."""

    lats: tuple[int, ...]
    lons: tuple[int, ...]
    min_lat: int
    max_lat: int
    min_lon: int
    max_lon: int

    @staticmethod
    def of(vertices: Sequence[tuple[float, float]]) -> Polygon:
        """From ``(lat, lon)`` degrees; a closing vertex equal to the first is dropped."""
        pts = [(to_e7(lat), to_e7(lon)) for lat, lon in vertices]
        return Polygon.of_e7(pts)

    @staticmethod
    def of_e7(points: Sequence[tuple[int, int]]) -> Polygon:
        pts = list(points)
        if len(pts) > 1 and pts[0] == pts[-1]:
            pts.pop()
        if not pts:
            raise PolygonError("a polygon needs at least three vertices")
        lats = tuple(p[0] for p in pts)
        lons = tuple(p[1] for p in pts)
        return Polygon(lats, lons, min(lats), max(lats), min(lons), max(lons))

    @property
    def vertices(self) -> list[tuple[float, float]]:
        """``(lat, lon)`` in degrees."""
        return [(from_e7(a), from_e7(o)) for a, o in zip(self.lats, self.lons, strict=True)]

    def flat_e7(self) -> list[int]:
        """``[lat0, lon0, lat1, lon1, ...]``: how the store keeps it."""
        out: list[int] = []
        for a, o in zip(self.lats, self.lons, strict=True):
            out += (a, o)
        return out

    @staticmethod
    def from_flat_e7(flat: Sequence[int]) -> Polygon:
        return Polygon.of_e7([(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)])

    def contains(self, lat: float, lon: float) -> bool:
        """True if the point is inside or on the boundary (edges and vertices count)."""
        return self.contains_e7(to_e7(lat), to_e7(lon))

    def contains_e7(self, y: int, x: int) -> bool:
        if y < self.min_lat or y > self.max_lat or x < self.min_lon or x > self.max_lon:
            return False
        lats, lons = self.lats, self.lons
        n = len(lats)
        inside = False
        ay, ax = lats[n - 1], lons[n - 1]
        for i in range(n):
            by, bx = lats[i], lons[i]
            # On the segment a-b: collinear and within its box (exact in integers).
            if (bx - ax) * (y - ay) == (by - ay) * (x - ax) and (
                min(ax, bx) <= x <= max(ax, bx) and min(ay, by) <= y <= max(ay, by)
            ):
                return True
            # Crossing number: the edge straddles the horizontal through the point
            # (half-open, so a vertex on the ray counts once) and crosses right of it.
            if (ay > y) != (by > y):
                # x < ax + (y - ay) * (bx - ax) / (by - ay), without dividing.
                lhs = (x - ax) * (by - ay)
                rhs = (y - ay) * (bx - ax)
                if (lhs < rhs) if by > ay else (lhs > rhs):
                    inside = not inside
            ay, ax = by, bx
        return inside


class PolygonSet:
    """Many polygons' edges as int64 columns: one point tested against all of them at once.

    The same integer tests as :meth:`Polygon.contains_e7`, edge by edge, so the answers
    are identical. No product overflows int64: for coordinates in range, an E7 longitude
    difference is at most 3.6e9 and a latitude difference 1.8e9, and every product is of
    one of each (at most 6.5e18 < 9.2e18).
    """

    __slots__ = ("ax", "ay", "bx", "by", "count", "max_lat", "max_lon", "min_lat", "min_lon",
                 "padded", "start")  # fmt: skip

    def __init__(self, polygons: Sequence[Polygon]) -> None:
        n = len(polygons)
        i64 = np.int64
        self.count = np.fromiter((len(p.lats) for p in polygons), i64, n)
        self.start = np.zeros(n, i64)
        np.cumsum(self.count[:-1], out=self.start[1:])
        total = int(self.count.sum())
        # Edge i of a polygon runs from vertex i - 1 (the last, for i = 0) to vertex i.
        self.by = np.fromiter(itertools.chain.from_iterable(p.lats for p in polygons), i64, total)
        self.bx = np.fromiter(itertools.chain.from_iterable(p.lons for p in polygons), i64, total)
        prev = np.arange(-1, total - 1, dtype=i64)
        prev[self.start] = self.start + self.count - 1
        self.ay = self.by[prev]
        self.ax = self.bx[prev]
        box = np.array([(p.min_lat, p.max_lat, p.min_lon, p.max_lon) for p in polygons],
                       dtype=i64).reshape(n, 4)  # fmt: skip
        self.min_lat, self.max_lat, self.min_lon, self.max_lon = (box[:, i].copy()
                                                                  for i in range(4))  # fmt: skip
        # Small polygons (the usual zone) also as one (polygon, edge, [ay ax by bx]) block,
        # padded with zero-length edges at a vertex of their own: such an edge holds only
        # that vertex (inside anyway) and straddles nothing, so it changes no answer.
        k = int(self.count.max()) if n else 0
        self.padded: npt.NDArray[np.int64] | None = None
        if 0 < k <= _PADDED_MAX:
            edges = np.stack([self.ay, self.ax, self.by, self.bx], axis=1)
            slot = np.arange(k)
            pad = slot[None, :] >= self.count[:, None]
            block = edges[self.start[:, None] + np.minimum(slot[None, :], self.count[:, None] - 1)]
            block[pad, 0] = block[pad, 2]
            block[pad, 1] = block[pad, 3]
            self.padded = block

    @staticmethod
    def merge(sets: Sequence[PolygonSet]) -> PolygonSet:
        """The polygons of ``sets`` one after another (no per-polygon Python work)."""
        out = PolygonSet([])
        if not sets:
            return out
        edge_offsets = np.cumsum([0] + [len(s.ay) for s in sets[:-1]])
        for name in ("count", "ay", "ax", "by", "bx", "min_lat", "max_lat", "min_lon", "max_lon"):
            setattr(out, name, np.concatenate([getattr(s, name) for s in sets]))
        out.start = np.concatenate([s.start + off for s, off in zip(sets, edge_offsets,
                                                                     strict=True)])  # fmt: skip
        blocks = [s.padded for s in sets if len(s.count)]
        out.padded = None
        if blocks and all(b is not None for b in blocks):
            k = max(b.shape[1] for b in blocks if b is not None)
            out.padded = np.concatenate([_widen(b, k) for b in blocks if b is not None])
        return out

    def __len__(self) -> int:
        return len(self.count)

    def contains_e7(
        self, y: int, x: int, which: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.bool_]:
        """Per polygon of ``which`` (default: all), whether it holds E7 point ``(y, x)``."""
        if which is None:
            which = np.arange(len(self.count), dtype=np.int64)
        out = np.zeros(len(which), dtype=np.bool_)
        boxed = (
            (self.min_lat[which] <= y)
            & (self.max_lat[which] >= y)
            & (self.min_lon[which] <= x)
            & (self.max_lon[which] >= x)
        )
        at = np.flatnonzero(boxed)
        if not len(at):
            return out
        polys = which[at]
        if self.padded is not None:
            out[at] = self._padded_contains(y, x, self.padded[polys])
            return out
        polys = which[at]
        count = self.count[polys]
        first = np.cumsum(count) - count
        # The edges of the boxed polygons, each tagged with its polygon's place in ``at``.
        edges = np.repeat(self.start[polys] - first, count) + np.arange(int(count.sum()))
        owner = np.repeat(np.arange(len(polys)), count)
        ay, ax, by, bx = self.ay[edges], self.ax[edges], self.by[edges], self.bx[edges]
        # The products of contains_e7, compared rather than subtracted (that could overflow).
        lhs, rhs = (x - ax) * (by - ay), (y - ay) * (bx - ax)
        collinear = lhs == rhs
        # On the segment: collinear and within its box (few are collinear: test those only).
        c = np.flatnonzero(collinear)
        cay, cax, cby, cbx = ay[c], ax[c], by[c], bx[c]
        on = c[
            (np.minimum(cax, cbx) <= x)
            & (np.maximum(cax, cbx) >= x)
            & (np.minimum(cay, cby) <= y)
            & (np.maximum(cay, cby) >= y)
        ]
        # Crossing number, half-open: lhs < rhs going up, lhs > rhs going down.
        up = by > ay
        crosses = ((ay > y) != (by > y)) & ~collinear & ((lhs < rhs) == up)
        n = len(polys)
        on_edge = np.bincount(owner[on], minlength=n) > 0
        odd = (np.bincount(owner[crosses], minlength=n) & 1) == 1
        out[at] = on_edge | odd
        return out

    def settled_e7(
        self, y: int, x: int, half: int, which: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int8]:
        """Per polygon of ``which``: 1 if it holds every point of the square of half-side
        ``half`` around E7 point ``(y, x)`` (edges included), 0 if it holds none, -1 if
        that depends on the point.

        Settled when no edge comes within the square's circumscribed circle (planar E7
        distance, as the containment test itself is planar): the whole disc, square
        included, is then on the centre's side of the boundary.
        """
        out = np.full(len(which), -1, dtype=np.int8)
        if not len(which):
            return out
        inside = self.contains_e7(y, x, which)
        count = self.count[which]
        first = np.cumsum(count) - count
        edges = np.repeat(self.start[which] - first, count) + np.arange(int(count.sum()))
        owner = np.repeat(np.arange(len(which)), count)
        # Relative to the centre, in float64: polygon-sized numbers, exact well below 1 unit.
        ay = (self.ay[edges] - y).astype(np.float64)
        ax = (self.ax[edges] - x).astype(np.float64)
        dy = (self.by[edges] - y).astype(np.float64) - ay
        dx = (self.bx[edges] - x).astype(np.float64) - ax
        length2 = dy * dy + dx * dx
        t = np.where(length2 > 0, -(ay * dy + ax * dx) / np.where(length2 > 0, length2, 1.0), 0.0)
        t = np.clip(t, 0.0, 1.0)
        cy, cx = ay + t * dy, ax + t * dx
        dist = np.sqrt(cy * cy + cx * cx)
        nearest = np.full(len(which), np.inf)
        np.minimum.at(nearest, owner, dist)
        clear = nearest > half * math.sqrt(2.0) + 16.0  # 16 units: float error, with room
        out[clear] = inside[clear].astype(np.int8)
        return out

    @staticmethod
    def _padded_contains(y: int, x: int, block: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        ay, ax, by, bx = block[..., 0], block[..., 1], block[..., 2], block[..., 3]
        lhs, rhs = (x - ax) * (by - ay), (y - ay) * (bx - ax)
        collinear = lhs == rhs
        up = by > ay
        crosses = ((ay > y) != (by > y)) & ~collinear & ((lhs < rhs) == up)
        inside: npt.NDArray[np.bool_] = (np.count_nonzero(crosses, axis=1) & 1) == 1
        p, e = np.nonzero(collinear)
        if len(p):
            cay, cax, cby, cbx = ay[p, e], ax[p, e], by[p, e], bx[p, e]
            on = (
                (np.minimum(cax, cbx) <= x)
                & (np.maximum(cax, cbx) >= x)
                & (np.minimum(cay, cby) <= y)
                & (np.maximum(cay, cby) >= y)
            )
            inside[p[on]] = True
        return inside


def _widen(block: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """A padded block with more zero-length edges, up to ``k`` per polygon."""
    if block.shape[1] == k:
        return block
    extra = np.repeat(block[:, -1:, :], k - block.shape[1], axis=1)
    extra[..., 0] = extra[..., 2]
    extra[..., 1] = extra[..., 3]
    return np.concatenate([block, extra], axis=1)


def _orient(ay: int, ax: int, by: int, bx: int, cy: int, cx: int) -> int:
    v = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    return (v > 0) - (v < 0)


def _on_box(ay: int, ax: int, by: int, bx: int, cy: int, cx: int) -> bool:
    return min(ax, bx) <= cx <= max(ax, bx) and min(ay, by) <= cy <= max(ay, by)


def _segments_touch(
    p: tuple[int, int], q: tuple[int, int], r: tuple[int, int], s: tuple[int, int]
) -> bool:
    o1, o2 = _orient(*p, *q, *r), _orient(*p, *q, *s)
    o3, o4 = _orient(*r, *s, *p), _orient(*r, *s, *q)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_box(*p, *q, *r))
        or (o2 == 0 and _on_box(*p, *q, *s))
        or (o3 == 0 and _on_box(*r, *s, *p))
        or (o4 == 0 and _on_box(*r, *s, *q))
    )


def polygon_problem(poly: Polygon) -> str | None:
    """Why ``poly`` cannot be a zone (too few vertices, zero area, self-crossing), or None."""
    n = len(poly.lats)
    if n < 3:
        return "a polygon needs at least three distinct vertices"
    if n > MAX_VERTICES:
        return f"a polygon has at most {MAX_VERTICES} vertices"
    if poly.max_lon - poly.min_lon > 180 * E7:
        return "a zone may not span more than 180 degrees of longitude"
    pts = list(zip(poly.lats, poly.lons, strict=True))
    if len(set(pts)) != n:
        return "vertices must be distinct"
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # adjacent edges share a vertex by construction
            c, d = pts[j], pts[(j + 1) % n]
            if _segments_touch(a, b, c, d):
                return f"edges {i} and {j} cross or touch: the polygon must be simple"
    area2 = sum(pts[i][1] * pts[(i + 1) % n][0] - pts[(i + 1) % n][1] * pts[i][0] for i in range(n))
    if area2 == 0:
        return "the polygon has no area (all vertices on one line)"
    return None


def parse_geojson(text: str) -> list[tuple[float, float]]:
    """The outer ring of a GeoJSON Polygon (or a Feature holding one) as ``(lat, lon)``.

    GeoJSON positions are ``[lon, lat]`` and rings are closed; the closing vertex
    is dropped. Holes are refused rather than silently ignored.
    """
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise PolygonError(f"not valid JSON: {exc}") from None
    if isinstance(obj, dict) and obj.get("type") == "Feature":
        obj = obj.get("geometry")
    if not isinstance(obj, dict) or obj.get("type") != "Polygon":
        raise PolygonError('expected a GeoJSON geometry of "type": "Polygon"')
    rings = obj.get("coordinates")
    if not isinstance(rings, list) or not rings:
        raise PolygonError('"coordinates" must be a list of linear rings')
    if len(rings) > 1:
        raise PolygonError("holes are not supported: give the outer ring only")
    ring = rings[0]
    if not isinstance(ring, list) or len(ring) < 4:
        raise PolygonError("a linear ring has at least four positions (closed)")
    out: list[tuple[float, float]] = []
    for k, pos in enumerate(ring):
        if (
            not isinstance(pos, list)
            or len(pos) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2])
        ):
            raise PolygonError(f"position {k} must be [lon, lat] numbers")
        lon, lat = float(pos[0]), float(pos[1])
        if not (
            math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180
        ):
            raise PolygonError(f"position {k} is out of range: [lon, lat] = [{lon}, {lat}]")
        out.append((lat, lon))
    if out[0] != out[-1]:
        raise PolygonError("a linear ring must be closed: last position equal to the first")
    return out[:-1]
