"""Order history for ETA training, generated offline: fast, no servers, deterministic by seed.

``generate(graph, orders=N, seed=S)`` plays N deliveries in the city of
:func:`foodmesh.sim.city.build_city` (the same restaurants, drivers and
customers the seeded services know) over the road graph:

- **demand**: orders fall by the live city's demand curve (weekday and hour,
  :func:`foodmesh.sim.demand.curve`), on restaurants by their popularity, from
  customers within their delivery radius, as many per kitchen and hour as the
  live city's default rate makes (``days`` follows from it unless given);
- **kitchens, drivers and stops**: drawn from :mod:`foodmesh.sim.world`, the one
  model of the city the live simulator draws from too: prep from the restaurant's
  mean, the order's size, the kitchen's load (the orders it is still cooking,
  played in time order), peak hours and weather; each driver's pace (fixed by
  their id), vehicle and the weather on the road graph's time at the hour; the
  hand-over at the counter and parking at the door;
- **supply and events**: the free drivers near the kitchen at placement (drawn
  around the hour's mean of :func:`foodmesh.sim.world.free_drivers_mean`, fewer in
  bad weather and under a local event) set how long until one is assigned and how
  far the nearest of them drives to the kitchen; a few orders come under an
  event (Pricing's factor), which also slows their kitchen.

The record of a delivery holds what a real history would: when and where, the
order's size and value, the kitchen's load, the weather, the free drivers near the
kitchen and the local event's factor, the driver and vehicle, the road graph's
answers for both legs (distance, free-flow and traffic time) and the actual prep
time, drive to the restaurant, wait, drive to the customer and total. Columns are
numpy arrays (:data:`COLUMNS`); ``save``/``load`` write ``.npz`` (or ``.csv``).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from foodmesh.roads import RoadGraph, edge_values
from foodmesh.roads.traffic import TrafficModel
from foodmesh.roads.types import RoadClass
from foodmesh.sim import world
from foodmesh.sim.city import CENTER, build_city
from foodmesh.sim.demand import curve

__all__ = [
    "COLUMNS",
    "History",
    "generate",
    "load",
    "save",
    "traffic_table",
]

_log = logging.getLogger("foodmesh.sim.history")

History = dict[str, npt.NDArray[np.generic]]

#: The columns of a history, and their dtypes.
COLUMNS: Mapping[str, str] = {
    "order_id": "U24",
    "order_ts": "f8",  # epoch seconds, UTC
    "hour": "i1",  # local (America/Los_Angeles)
    "day_of_week": "i1",  # Monday = 0
    "restaurant_id": "U24",
    "driver_id": "U24",
    "vehicle": "i1",  # VehicleType
    "item_count": "i4",
    "subtotal_minor": "i8",
    "restaurant_load": "i4",  # orders the kitchen was still cooking when this one came
    "restaurant_listed_prep_min": "f8",  # the Catalog's avg_prep_time_min
    "weather": "i1",  # WeatherKind
    "drivers_nearby": "f8",  # free drivers near the restaurant at placement (NaN: unknown)
    "event_multiplier": "f8",  # the local event's factor at placement, 1.0 without one
    "restaurant_lat": "f8",
    "restaurant_lon": "f8",
    "customer_lat": "f8",
    "customer_lon": "f8",
    "driver_lat": "f8",
    "driver_lon": "f8",
    "route_distance_m": "f8",
    "route_free_flow_s": "f8",
    "route_graph_s": "f8",  # with the traffic model at the hour
    "pickup_distance_m": "f8",
    "pickup_free_flow_s": "f8",
    "pickup_graph_s": "f8",
    "assign_delay_s": "f8",
    "prep_s": "f8",  # order placed -> food ready
    "pickup_travel_s": "f8",  # driver's drive to the restaurant
    "wait_s": "f8",  # food ready -> picked up
    "travel_s": "f8",  # picked up -> delivered
    "total_s": "f8",  # order placed -> delivered
}

#: Columns added after histories were first saved, and what an older file reads as.
_ADDED: Mapping[str, float] = {
    "restaurant_listed_prep_min": math.nan,
    "drivers_nearby": math.nan,
    "event_multiplier": 1.0,
}

_TZ = ZoneInfo("America/Los_Angeles")
#: The live city's default rate (``foodmesh up``: 200 orders an hour over 500 restaurants).
LIVE_ORDERS_PER_HOUR_PER_RESTAURANT = 200.0 / 500.0


def traffic_table(traffic: TrafficModel) -> npt.NDArray[np.float64]:
    """Multipliers by (weekday, local hour, road class): shape (7, 24, classes)."""
    monday = dt.datetime(2024, 1, 1)
    out = np.ones((7, 24, len(RoadClass)))
    for d in range(7):
        for h in range(24):
            out[d, h] = traffic.multipliers(monday + dt.timedelta(days=d, hours=h))
    return out


class _Trees:
    """Free-flow shortest-path trees from and to a node, with per-class sums along them."""

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        self.values = edge_values(graph, len(RoadClass))

    def sums(self, node: int, *, reverse: bool, limit_s: float) -> npt.NDArray[np.float64]:
        """(n, 1 + classes): metres and free-flow seconds per class, from (or to) ``node``.

        Rows of nodes not reached within ``limit_s`` are NaN.
        """
        r = self.graph.reach(node, reverse=reverse, values=self.values, limit_s=limit_s)
        acc = r.sums
        acc[~np.isfinite(r.time_s)] = np.nan
        return acc


def generate(
    graph: RoadGraph,
    *,
    orders: int,
    seed: int = 0,
    days: int | None = None,
    start: dt.date = dt.date(2026, 1, 5),
    restaurants: int | None = None,
    traffic: TrafficModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> History:
    """``orders`` deliveries over ``days`` days from ``start``; same arguments, same history."""
    if orders < 1:
        raise ValueError("orders must be at least 1")
    say = progress or _log.info
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # The seeded city's first restaurants (a smaller city is a prefix of a bigger one);
    # at least 40 orders each (20,000 orders cover the whole city), so a small history stays quick.
    n_rest = restaurants if restaurants is not None else min(500, max(30, orders // 40))
    city = build_city(seed=7, restaurants=n_rest, drivers=600, customers=2000)
    table = traffic_table(traffic or TrafficModel())
    plane = graph.plane

    rests = city.restaurants
    r_ll = np.array([r.location for r in rests])
    r_snap = graph.snap_many(r_ll[:, 0], r_ll[:, 1])
    r_node = np.array([s.target for s in r_snap], dtype=np.int64)
    c_ll = np.array([(c.address.lat, c.address.lon) for c in city.customers])
    c_snap = graph.snap_many(c_ll[:, 0], c_ll[:, 1])
    c_node = np.array([s.target for s in c_snap], dtype=np.int64)
    c_weight = np.array([c.appetite for c in city.customers])
    cx, cy = plane.to_xy(c_ll[:, 0], c_ll[:, 1])
    nx, ny = graph.x, graph.y
    center_x, center_y = plane.to_xy(*CENTER)

    drivers = city.drivers
    d_vehicle = np.array([d.driver.vehicle_type for d in drivers], dtype=np.int64)
    d_pace = np.array([world.driver_pace(d.driver_id) for d in drivers])
    d_ids = np.array([d.driver_id for d in drivers])

    # Orders per restaurant (popularity), then each order's time, size, kitchen and driver.
    pop = np.array([r.popularity for r in rests])
    per_r = rng.multinomial(orders, pop / pop.sum())
    cols: dict[str, list[npt.NDArray[np.generic]]] = {k: [] for k in COLUMNS}
    trees = _Trees(graph)
    # The live city's demand curve (foodmesh.sim.demand), by weekday and hour.
    hour_p = np.array([[curve(d, h + 0.5) for h in range(24)] for d in range(7)]).ravel()
    hour_p /= hour_p.sum()
    if days is None:  # as busy per kitchen as the live city at its default rate
        days = max(7, math.ceil(orders / (n_rest * LIVE_ORDERS_PER_HOUR_PER_RESTAURANT * 24)))
    made = 0
    next_log = time.perf_counter() + 2.0
    for ri, k in enumerate(per_r):
        if k == 0:
            continue
        rs = rests[ri]
        rx, ry = plane.to_xy(*rs.location)
        out = trees.sums(int(r_node[ri]), reverse=False, limit_s=1800.0)
        inn = trees.sums(int(r_node[ri]), reverse=True, limit_s=900.0)
        # Customers within the restaurant's reach whose door the graph can get to.
        reach_m = min(rs.restaurant.max_delivery_distance_miles * 1609.344, 8000.0)
        cd = np.hypot(cx - rx, cy - ry)
        ok = (cd > 300) & (cd < reach_m) & np.isfinite(out[c_node, 0])
        if not ok.any():
            ok = np.isfinite(out[c_node, 0])
        cand = np.flatnonzero(ok)
        # Nearby customers order more (delivery fees, menus shown by distance).
        cw = c_weight[cand] * np.exp(-cd[cand] / 2000.0)
        cw /= cw.sum()
        cust = cand[rng.choice(len(cand), size=k, p=cw)]
        # Where drivers can be when assigned, by straight-line distance from the kitchen.
        nd = np.hypot(nx - rx, ny - ry)
        near = np.flatnonzero((nd > 200) & (nd < 2.2 * world.SUPPLY_RADIUS_M)
                              & np.isfinite(inn[:, 0]))  # fmt: skip
        if len(near) == 0:
            near = np.flatnonzero(np.isfinite(inn[:, 0]))
        near = near[np.argsort(nd[near], kind="stable")]
        drv = rng.integers(0, len(drivers), size=k)

        slot = rng.choice(7 * 24, size=k, p=hour_p)  # (weekday, hour) of the order
        dow, hour = slot // 24, slot % 24
        # A day of the window with that weekday, a minute in the hour.
        first_dow = start.weekday()
        offset_days = (dow - first_dow) % 7 + 7 * rng.integers(0, max(1, days // 7), size=k)
        minute_s = rng.uniform(0, 3600, size=k)
        peak = world.is_peak(hour, dow)
        weather = rng.choice(len(world.WEATHER_P), size=k, p=world.WEATHER_P)
        event = world.event_multipliers_many(rng, k)
        # The free drivers near the kitchen, then who is assigned: the nearest of them,
        # at a road node about that far (a few nodes either way for the direction).
        free = rng.poisson(world.free_drivers_mean(hour, dow, weather=weather, event=event))
        want_m = world.nearest_driver_m_many(rng, free)
        at = np.searchsorted(nd[near], want_m) + rng.integers(-10, 11, size=k)
        dnode = near[np.clip(at, 0, len(near) - 1)]
        items = 1 + rng.poisson(1.6, size=k)
        subtotal = np.round(items * rng.uniform(800, 1800, size=k)).astype(np.int64)
        local = [
            dt.datetime.combine(start + dt.timedelta(days=int(od)), dt.time(int(h)), tzinfo=_TZ)
            for od, h in zip(offset_days, hour, strict=True)
        ]
        ts = np.array([t.timestamp() for t in local]) + minute_s
        # The kitchen cooks its orders in time order; its load is what it is still cooking.
        noise = np.exp(rng.normal(0.0, world.PREP_NOISE, size=k))
        load = np.zeros(k, dtype=np.int64)
        prep_min = np.zeros(k)
        ready_at: list[float] = []
        for j in np.argsort(ts, kind="stable"):
            t = float(ts[j])
            ready_at = [r for r in ready_at if r > t]
            load[j] = len(ready_at)
            m = rs.prep_mean_min * float(
                world.prep_multiplier(items[j], load[j], peak[j], weather[j], event[j])
            )
            prep_min[j] = min(max(m * noise[j], world.PREP_RANGE_MIN[0]), world.PREP_RANGE_MIN[1])
            ready_at.append(t + prep_min[j] * 60.0)
        prep_s = prep_min * 60.0

        mult = table[dow, hour]  # (k, classes)
        r_leg = out[c_node[cust]]  # restaurant -> customer
        p_leg = inn[dnode]  # driver -> restaurant
        r_ff = r_leg[:, 1:].sum(axis=1)
        r_graph = (r_leg[:, 1:] * mult).sum(axis=1)
        p_ff = p_leg[:, 1:].sum(axis=1)
        p_graph = (p_leg[:, 1:] * mult).sum(axis=1)
        veh = d_vehicle[drv]
        pace = d_pace[drv]
        pickup_s = world.drive_seconds_many(rng, vehicle=veh, free_flow_s=p_ff, graph_s=p_graph,
                                            pace=pace, weather=weather)  # fmt: skip
        zone_km = np.hypot(cx[cust] - center_x, cy[cust] - center_y) / 1000.0
        travel_s = world.drive_seconds_many(
            rng, vehicle=veh, free_flow_s=r_ff, graph_s=r_graph, pace=pace, weather=weather
        ) + world.parking_seconds_many(rng, zone_km)
        assign_s = world.assign_delay_seconds_many(rng, free)
        handover_s = world.handover_seconds_many(rng, k)
        wait_s = np.maximum(0.0, assign_s + pickup_s - prep_s) + handover_s

        cols["order_id"].append(np.array([f"hist_{ri:05d}_{j:06d}" for j in range(k)]))
        cols["order_ts"].append(ts)
        cols["hour"].append(hour)
        cols["day_of_week"].append(dow)
        cols["restaurant_id"].append(np.full(k, rs.restaurant_id))
        cols["driver_id"].append(d_ids[drv])
        cols["vehicle"].append(veh)
        cols["item_count"].append(items)
        cols["subtotal_minor"].append(subtotal)
        cols["restaurant_load"].append(load)
        cols["restaurant_listed_prep_min"].append(np.full(k, rs.restaurant.avg_prep_time_min))
        cols["weather"].append(weather)
        cols["drivers_nearby"].append(free.astype(np.float64))
        cols["event_multiplier"].append(event)
        cols["restaurant_lat"].append(np.full(k, rs.location[0]))
        cols["restaurant_lon"].append(np.full(k, rs.location[1]))
        cols["customer_lat"].append(c_ll[cust, 0])
        cols["customer_lon"].append(c_ll[cust, 1])
        cols["driver_lat"].append(graph.lat[dnode])
        cols["driver_lon"].append(graph.lon[dnode])
        cols["route_distance_m"].append(r_leg[:, 0])
        cols["route_free_flow_s"].append(r_ff)
        cols["route_graph_s"].append(r_graph)
        cols["pickup_distance_m"].append(p_leg[:, 0])
        cols["pickup_free_flow_s"].append(p_ff)
        cols["pickup_graph_s"].append(p_graph)
        cols["assign_delay_s"].append(assign_s)
        cols["prep_s"].append(prep_s)
        cols["pickup_travel_s"].append(pickup_s)
        cols["wait_s"].append(wait_s)
        cols["travel_s"].append(travel_s)
        cols["total_s"].append(prep_s + wait_s + travel_s)
        made += k
        if time.perf_counter() >= next_log:
            next_log = time.perf_counter() + 2.0
            took = time.perf_counter() - t0
            say(f"history: {made:,}/{orders:,} orders in {took:.1f}s ({made / took:,.0f}/s)")
    hist: History = {
        k: np.concatenate(v).astype(COLUMNS[k]) if v else np.empty(0, dtype=COLUMNS[k])
        for k, v in cols.items()
    }
    order = np.argsort(hist["order_ts"], kind="stable")
    hist = {k: v[order] for k, v in hist.items()}
    took = time.perf_counter() - t0
    say(f"history: {made:,} orders in {took:.1f}s ({made / max(took, 1e-9):,.0f}/s)")
    return hist


def save(history: History, path: Path) -> Path:
    """Writes ``.npz`` (compressed) or, for a ``.csv`` name, CSV with a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(COLUMNS))
            cols = [history[k].tolist() for k in COLUMNS]
            w.writerows(zip(*cols, strict=True))
        return path
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    np.savez_compressed(path, **history)  # type: ignore[arg-type]
    return path


def load(path: Path) -> History:
    """Reads a history written by :func:`save`; raises ValueError if columns are missing."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        data = list(zip(*body, strict=True)) if body else [() for _ in header]
        hist = {
            h: np.array(c, dtype=COLUMNS.get(h, "U64")) for h, c in zip(header, data, strict=True)
        }
    else:
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not an .npz archive (write one with `foodmesh sim history`)")
        with np.load(path, allow_pickle=False) as z:
            hist = {k: z[k] for k in z.files}
    n_rows = len(hist["order_ts"]) if "order_ts" in hist else 0
    for k, fill in _ADDED.items():  # a file from before the column
        if k not in hist:
            hist[k] = np.full(n_rows, fill, dtype=COLUMNS[k])
    missing = [k for k in COLUMNS if k not in hist]
    if missing:
        raise ValueError(f"{path}: not an order history (missing {', '.join(missing)})")
    n = {len(v) for v in hist.values()}
    if len(n) > 1:
        raise ValueError(f"{path}: columns differ in length")
    return hist
