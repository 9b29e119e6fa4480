"""The embedded default city: a deterministic street grid around the design's San Francisco point.

Layout (a 16.8 km square centred on 37.7749, -122.4194, one intersection every 100 m):

- east-west and north-south streets; every 8th is a two-way arterial (35 mph), every
  4th a two-way secondary street (25 mph), the rest residential (20 mph) where the
  odd ones are one-way, alternating direction street by street (as in Manhattan);
- two freeways (60 mph) on their own nodes between the grid lines: cross streets
  pass under them, ramps join them at the arterials;
- a meandering river 3 km south of the centre, crossed only by four named bridges
  and the freeway's viaduct; a park that only the arterials cross;
- every node nudged a few metres at random (seeded), so lengths are not all equal.

The same code always builds the same graph (:data:`CITY_VERSION` names the layout).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from foodmesh.roads.geo import LocalPlane, haversine_np
from foodmesh.roads.types import DEFAULT_SPEED_MPS, RoadClass

if TYPE_CHECKING:
    from foodmesh.roads.graph import RoadGraph

__all__ = ["BRIDGES", "CENTER", "CITY_VERSION", "CROSSINGS", "generate_city"]

log = logging.getLogger("foodmesh.roads")

#: Bumped whenever the layout changes, so caches of an older city are not reused.
CITY_VERSION = 3
CENTER = (37.7749, -122.4194)
SPACING_M = 100.0
HALF = 84  # grid lines each side of the centre: 169 x 169 intersections, 16.8 km across
SEED = 20_260_110

RIVER_Y_M = -3_000.0
RIVER_AMPLITUDE_M = 350.0
RIVER_WAVELENGTH_M = 7_000.0
RIVER_HALF_WIDTH_M = 140.0
#: Arterial columns (grid index) that cross the river, and the bridges' names.
BRIDGES: dict[int, str] = {
    -56: "Golden Gate Bridge",
    -16: "Bay Bridge",
    24: "Richmond Bridge",
    64: "Dumbarton Bridge",
}
#: Every way across the river, by street name: close them all and the halves are cut off.
CROSSINGS: tuple[str, ...] = (*BRIDGES.values(), "US-101 Viaduct")
FREEWAY_NS_AT = 12  # between grid columns 12 and 13
FREEWAY_EW_AT = 20  # between grid rows 20 and 21
PARK = (-7_000.0, -3_500.0, 1_000.0, 1_500.0)  # x0, x1, y0, y1 in metres

_ARTERIAL_NS = [
    "Great Hwy", "La Playa St", "Sunset Blvd", "Park Presidio Blvd", "Funston Ave",
    "Arguello Blvd", "Masonic Ave", "Divisadero St", "Fillmore St", "Van Ness Ave",
    "Polk St", "Kearny St", "Montgomery St", "Embarcadero", "3rd St", "Potrero Ave",
    "Bryant St", "Harrison St", "Folsom St", "Valencia St", "Guerrero St",
]  # fmt: skip
_ARTERIAL_EW = [
    "Sloat Blvd", "Ocean Ave", "Monterey Blvd", "Alemany Blvd", "Cesar Chavez St",
    "Army St", "24th St", "16th St", "Oak St", "Fell St", "Market St", "Geary Blvd",
    "California St", "Broadway", "Lombard St", "Bay St", "Clement St", "Fulton St",
    "Lincoln Way", "Judah St", "Taraval St",
]  # fmt: skip
_WORDS = [
    "Alder", "Ash", "Aspen", "Bay Laurel", "Birch", "Buckeye", "Cedar", "Cherry", "Chestnut",
    "Cypress", "Dogwood", "Elm", "Eucalyptus", "Fir", "Ginkgo", "Hawthorn", "Hazel", "Hemlock",
    "Holly", "Juniper", "Larch", "Laurel", "Linden", "Locust", "Madrone", "Magnolia", "Maple",
    "Myrtle", "Oak Grove", "Olive", "Palm", "Pepper", "Pine", "Plum", "Poplar", "Redwood",
    "Rowan", "Sequoia", "Spruce", "Sycamore", "Tamarack", "Toyon", "Walnut", "Willow", "Yew",
    "Anza", "Balboa", "Cabrillo", "Clay", "Ellis", "Eddy", "Francisco", "Green", "Jackson",
    "Kirkham", "Lawton", "Moraga", "Noriega", "Ortega", "Pacheco", "Quintara", "Rivera",
    "Santiago", "Ulloa", "Vicente", "Wawona", "Yorba", "Irving", "Hugo", "Parnassus",
    "Carl", "Frederick", "Waller", "Haight", "Page", "Hayes", "Grove", "Fulton Park",
    "McAllister", "Golden Gate", "Turk", "Post", "Sutter", "Bush", "Pine Crest",
]  # fmt: skip


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class _Names:
    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self.names)
            self.names.append(name)
        return i


def _line_name(k: int, *, ns: bool) -> str:
    """Street name of grid line ``k`` (column when ``ns``, else row)."""
    if k % 8 == 0:
        return (_ARTERIAL_NS if ns else _ARTERIAL_EW)[(k + 80) // 8]
    if ns:
        if k < 0:
            return f"{_ordinal(-k)} Ave"
        return f"{_WORDS[(k - 1) % len(_WORDS)]} St"
    if k < 0:
        return f"{_ordinal(-k)} St"
    return f"{_WORDS[(k + 40) % len(_WORDS)]} {'St' if k < 45 else 'Ter'}"


def _line_kind(k: int) -> tuple[RoadClass, int]:
    """Class and direction (+1 increasing index only, -1 decreasing only, 0 both) of a line."""
    if k % 8 == 0:
        return RoadClass.PRIMARY, 0
    if k % 4 == 0:
        return RoadClass.SECONDARY, 0
    if k % 2 == 0:
        return RoadClass.RESIDENTIAL, 0
    return RoadClass.RESIDENTIAL, 1 if k % 4 == 1 else -1


def _river_y(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(RIVER_Y_M + RIVER_AMPLITUDE_M * np.sin(2 * math.pi * x / RIVER_WAVELENGTH_M))


def generate_city() -> RoadGraph:
    """Builds the default city (about 28,000 nodes); logs progress as it goes."""
    from foodmesh.roads.graph import RoadGraph  # noqa: F811 - the graph module imports this one

    t0 = time.perf_counter()
    _say("generating the default road graph (once; cached afterwards)")
    names = _Names()
    ks = np.arange(-HALF, HALF + 1)
    n_side = len(ks)
    jj, ii = np.meshgrid(ks, ks)  # ii: row (y), jj: column (x)
    gx = jj.astype(np.float64) * SPACING_M
    gy = ii.astype(np.float64) * SPACING_M
    gid = (ii + HALF) * n_side + (jj + HALF)
    in_river = np.abs(gy - _river_y(gx)) < RIVER_HALF_WIDTH_M
    bridge_col = np.isin(jj, list(BRIDGES))
    px0, px1, py0, py1 = PARK
    in_park = (gx > px0) & (gx < px1) & (gy > py0) & (gy < py1) & (jj % 8 != 0) & (ii % 8 != 0)
    alive = ~(in_river & ~bridge_col) & ~in_park

    xs: list[npt.NDArray[np.float64]] = [gx.ravel()]
    ys: list[npt.NDArray[np.float64]] = [gy.ravel()]
    us: list[npt.NDArray[np.int64]] = []
    vs: list[npt.NDArray[np.int64]] = []
    cls: list[npt.NDArray[np.int64]] = []
    nms: list[npt.NDArray[np.int64]] = []
    ows: list[npt.NDArray[np.bool_]] = []

    def add(u: npt.ArrayLike, v: npt.ArrayLike, c: RoadClass, name: int, way: int) -> None:
        """Adds segments u-v: both ways (way 0), u->v only (1) or v->u only (-1)."""
        u_a, v_a = np.asarray(u, dtype=np.int64).ravel(), np.asarray(v, dtype=np.int64).ravel()
        if way >= 0:
            us.append(u_a)
            vs.append(v_a)
        if way <= 0:
            us.append(v_a)
            vs.append(u_a)
        count = len(u_a) * (1 if way else 2)
        cls.append(np.full(count, int(c)))
        nms.append(np.full(count, name))
        ows.append(np.full(count, way != 0))

    # Grid streets: rows run east-west (index i), columns north-south (index j).
    for axis_ns in (False, True):
        for k in ks:
            c, way = _line_kind(int(k))
            nm = names(_line_name(int(k), ns=axis_ns))
            if axis_ns:
                ids, ok = gid[:, k + HALF], alive[:, k + HALF]
                river = in_river[:, k + HALF]
            else:
                ids, ok = gid[k + HALF, :], alive[k + HALF, :]
                river = in_river[k + HALF, :]
            seg = ok[:-1] & ok[1:]
            on_bridge = seg & (river[:-1] | river[1:])
            plain = seg & ~on_bridge
            add(ids[:-1][plain], ids[1:][plain], c, nm, way)
            if axis_ns and on_bridge.any():
                bname = names(BRIDGES[int(k)])
                add(ids[:-1][on_bridge], ids[1:][on_bridge], RoadClass.PRIMARY, bname, 0)
    _say(f"  grid: {int(alive.sum()):,} intersections")

    # Freeways on their own nodes; ramps at arterial crossings.
    next_id = n_side * n_side

    def freeway(ns: bool, at: int, name: str) -> None:
        nonlocal next_id
        ids = np.arange(next_id, next_id + n_side)
        next_id += n_side
        if ns:
            fx, fy = np.full(n_side, (at + 0.5) * SPACING_M), ks * SPACING_M
        else:
            fx, fy = ks * SPACING_M, np.full(n_side, (at + 0.5) * SPACING_M)
        xs.append(fx.astype(np.float64))
        ys.append(fy.astype(np.float64))
        wet = np.abs(fy - _river_y(fx)) < RIVER_HALF_WIDTH_M
        over = wet[:-1] | wet[1:]
        add(ids[:-1][~over], ids[1:][~over], RoadClass.MOTORWAY, names(name), 0)
        if over.any():
            viaduct = names(f"{name} Viaduct")
            add(ids[:-1][over], ids[1:][over], RoadClass.MOTORWAY, viaduct, 0)
        ramp = names(f"{name} ramp")
        for k in ks[ks % 8 == 0]:
            f = ids[k + HALF]
            for side in (at, at + 1):
                g = gid[k + HALF, side + HALF] if ns else gid[side + HALF, k + HALF]
                if alive.ravel()[g]:
                    add([f], [g], RoadClass.PRIMARY, ramp, 0)

    freeway(True, FREEWAY_NS_AT, "US-101")
    freeway(False, FREEWAY_EW_AT, "I-80")
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    rng = np.random.default_rng(SEED)
    x = x + rng.normal(0.0, 6.0, size=x.shape)
    y = y + rng.normal(0.0, 6.0, size=y.shape)
    plane = LocalPlane(*CENTER)
    lat, lon = plane.to_latlon(x, y)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    road_class = np.concatenate(cls)
    speeds = np.array([DEFAULT_SPEED_MPS[c] for c in RoadClass])[road_class]
    # Lengths and speeds at the file's precision (float32), so that the graph made here
    # and the one loaded from the cache later route to the same second.
    length = haversine_np(lat[u], lon[u], lat[v], lon[v]).astype(np.float32)
    graph = RoadGraph.from_edges(
        lat=lat,
        lon=lon,
        u=u,
        v=v,
        length_m=length.astype(np.float64),
        road_class=road_class,
        speed_mps=speeds.astype(np.float32).astype(np.float64),
        name_idx=np.concatenate(nms),
        oneway=np.concatenate(ows),
        names=names.names,
        meta={
            "name": "foodmesh default city (San Francisco grid)",
            "center_lat": CENTER[0],
            "center_lon": CENTER[1],
            "timezone": "America/Los_Angeles",
            "city_version": CITY_VERSION,
            "source": "generated",
        },
    )
    dt_s = time.perf_counter() - t0
    _say(
        f"  default city: {graph.node_count:,} nodes, {graph.edge_count:,} edges, "
        f"{len(graph.names):,} street names in {dt_s:.1f}s"
    )
    return graph


def _say(msg: str) -> None:
    log.info(msg.strip())
    if not log.isEnabledFor(logging.INFO):
        print(msg, file=sys.stderr, flush=True)
