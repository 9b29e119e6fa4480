"""Order history for ETA training, generated offline: fast, no servers, deterministic by seed.

``generate(graph, orders=N, seed=S)`` plays N deliveries in the city of
:func:`foodmesh.sim.city.build_city` (the same restaurants, drivers and
customers the seeded services know) over the road graph:

- **demand**: orders fall by day of week (weekends busier) and hour (lunch and
  dinner peaks), on restaurants by their popularity, from customers within their
  delivery radius;
- **kitchens**: each restaurant's prep-time profile (its mean) grows with the
  order's size, the kitchen's load (orders in progress, busier at peaks), peak
  hours and bad weather; what these leave unexplained is a log-normal spread of
  σ = ``prep_noise`` (8 %);
- **drivers**: each has a vehicle (car, scooter, bicycle) and a speed against the
  road graph (a log-normal personal factor, their "speed history"); one is assigned
  a minute or two after the order, somewhere within a few km of the kitchen;
- **travel**: the road graph's fastest free-flow path, timed with the traffic
  model at the hour of the trip (per road class), the vehicle, the driver's factor,
  the weather, noise, and parking at the customer's door (harder downtown).

The record of a delivery holds what a real history would: when and where, the
order's size and value, the kitchen's load, the weather, the driver and vehicle,
the road graph's answers for both legs (distance, free-flow and traffic time)
and the actual prep time, drive to the restaurant, wait, drive to the customer
and total. Columns are numpy arrays (:data:`COLUMNS`); ``save``/``load`` write
``.npz`` (or ``.csv``).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
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
from foodmesh.roads.vehicles import vehicle_time_s
from foodmesh.sim.city import CENTER, build_city

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
    "restaurant_load": "i4",
    "weather": "i1",  # WeatherKind
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

_TZ = ZoneInfo("America/Los_Angeles")
#: Relative demand by local hour (lunch and dinner peaks).
_HOURLY = np.array([0.15, 0.08, 0.05, 0.03, 0.03, 0.05, 0.15, 0.3, 0.45, 0.5, 0.7, 1.3,
                    1.6, 1.2, 0.7, 0.55, 0.7, 1.2, 1.8, 1.9, 1.4, 0.9, 0.55, 0.3])  # fmt: skip
_DAILY = np.array([0.9, 0.9, 0.95, 1.0, 1.2, 1.35, 1.2])
#: How weather (WeatherKind numbers) slows roads and kitchens.
_WEATHER_TRAVEL = np.array([1.0, 1.0, 1.06, 1.14, 1.28, 1.35, 1.05])
_WEATHER_PREP = np.array([1.0, 1.0, 1.0, 1.03, 1.06, 1.08, 1.02])
_WEATHER_P = np.array([0.0, 0.74, 0.12, 0.07, 0.03, 0.01, 0.03])


def traffic_table(traffic: TrafficModel) -> npt.NDArray[np.float64]:
    """Multipliers by (weekday, local hour, road class): shape (7, 24, classes)."""
    monday = dt.datetime(2024, 1, 1)
    out = np.ones((7, 24, len(RoadClass)))
    for d in range(7):
        for h in range(24):
            out[d, h] = traffic.multipliers(monday + dt.timedelta(days=d, hours=h))
    return out


def _peak(hour: npt.NDArray[np.int64], dow: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    weekday = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    weekend = ((hour >= 12) & (hour <= 14)) | ((hour >= 18) & (hour <= 20))
    return np.where(dow < 5, weekday, weekend)


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
    days: int = 56,
    start: dt.date = dt.date(2026, 1, 5),
    restaurants: int | None = None,
    traffic: TrafficModel | None = None,
    prep_noise: float = 0.08,
    travel_noise: float = 0.06,
    progress: Callable[[str], None] | None = None,
) -> History:
    """``orders`` deliveries over ``days`` days from ``start``; same arguments, same history."""
    if orders < 1:
        raise ValueError("orders must be at least 1")
    say = progress or _log.info
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # The seeded city's first restaurants (a smaller city is a prefix of a bigger one);
    # about 200 orders each, so a small history stays quick to make.
    n_rest = restaurants if restaurants is not None else min(500, max(30, orders // 200))
    city = build_city(seed=7, restaurants=n_rest, drivers=300, customers=2000)
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
    d_speed = np.exp(rng.normal(0.0, 0.10, len(drivers)))
    d_ids = np.array([d.driver_id for d in drivers])

    # Orders per restaurant (popularity), then each order's time, size, kitchen and driver.
    pop = np.array([r.popularity for r in rests])
    per_r = rng.multinomial(orders, pop / pop.sum())
    cols: dict[str, list[npt.NDArray[np.generic]]] = {k: [] for k in COLUMNS}
    trees = _Trees(graph)
    hour_p = np.outer(_DAILY, _HOURLY).ravel()
    hour_p /= hour_p.sum()
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
        # Drivers are somewhere within a few km of the kitchen when assigned.
        nd = np.hypot(nx - rx, ny - ry)
        near = np.flatnonzero((nd > 200) & (nd < 4000) & np.isfinite(inn[:, 0]))
        if len(near) == 0:
            near = np.flatnonzero(np.isfinite(inn[:, 0]))
        dnode = near[rng.integers(0, len(near), size=k)]
        drv = rng.integers(0, len(drivers), size=k)

        slot = rng.choice(7 * 24, size=k, p=hour_p)  # (weekday, hour) of the order
        dow, hour = slot // 24, slot % 24
        # A day of the window with that weekday, a minute in the hour.
        first_dow = start.weekday()
        offset_days = (dow - first_dow) % 7 + 7 * rng.integers(0, max(1, days // 7), size=k)
        minute_s = rng.uniform(0, 3600, size=k)
        peak = _peak(hour, dow)
        weather = rng.choice(len(_WEATHER_P), size=k, p=_WEATHER_P)
        items = 1 + rng.poisson(1.6, size=k)
        subtotal = np.round(items * rng.uniform(800, 1800, size=k)).astype(np.int64)
        load = rng.poisson(0.5 + 4.0 * _HOURLY[hour] * min(rs.popularity, 3.0))

        prep_min = (
            rs.prep_mean_min
            * (0.78 + 0.11 * (items - 1))
            * (1.0 + 0.06 * load)
            * np.where(peak, 1.12, 1.0)
            * _WEATHER_PREP[weather]
            * np.exp(rng.normal(0.0, prep_noise, size=k))
        )
        prep_s = np.clip(prep_min, 4.0, 80.0) * 60.0

        mult = table[dow, hour]  # (k, classes)
        r_leg = out[c_node[cust]]  # restaurant -> customer
        p_leg = inn[dnode]  # driver -> restaurant
        r_ff = r_leg[:, 1:].sum(axis=1)
        r_graph = (r_leg[:, 1:] * mult).sum(axis=1)
        p_ff = p_leg[:, 1:].sum(axis=1)
        p_graph = (p_leg[:, 1:] * mult).sum(axis=1)
        veh = d_vehicle[drv]
        speed = d_speed[drv] * _WEATHER_TRAVEL[weather]
        pickup_s = (
            vehicle_time_s(veh, p_ff, p_graph)
            * speed
            * np.exp(rng.normal(0.0, travel_noise, size=k))
        )
        zone_km = np.hypot(cx[cust] - center_x, cy[cust] - center_y) / 1000.0
        parking_s = np.clip(3.0 - 0.3 * zone_km, 0.8, 3.0) * 60.0 * rng.uniform(0.8, 1.2, k)
        travel_s = (
            vehicle_time_s(veh, r_ff, r_graph)
            * speed
            * np.exp(rng.normal(0.0, travel_noise, size=k))
            + parking_s
        )
        assign_s = rng.uniform(30, 150, size=k) * np.where(peak, 1.4, 1.0)
        handover_s = rng.uniform(60, 180, size=k)
        wait_s = np.maximum(0.0, assign_s + pickup_s - prep_s) + handover_s

        local = [
            dt.datetime.combine(start + dt.timedelta(days=int(od)), dt.time(int(h)), tzinfo=_TZ)
            for od, h in zip(offset_days, hour, strict=True)
        ]
        ts = np.array([t.timestamp() for t in local]) + minute_s
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
        cols["weather"].append(weather)
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
    missing = [k for k in COLUMNS if k not in hist]
    if missing:
        raise ValueError(f"{path}: not an order history (missing {', '.join(missing)})")
    n = {len(v) for v in hist.values()}
    if len(n) > 1:
        raise ValueError(f"{path}: columns differ in length")
    return hist
