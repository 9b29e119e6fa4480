"""The MDRP part of ``benchmarks/dispatch.py``: replay real Grubhub days, and the trip solve.

``--mdrp DIR`` replays every ``*.json`` trace in DIR with ``batch`` (trips: bundles,
kitchen-timed release, horizon drivers) and ``plain`` (our run of the baseline: one
order a trip, every order released at once, a 60 s batch, never revised), every
offer accepted. Beside them: the lower bound computed from the trace (every order
finds a courier waiting at the restaurant when its food is ready) and, when DIR has
a README.md with the instances' table, its figures (an independent evaluator's
greedy, 60 s batch and lower bound). The target: every order delivered, and half
the gap between the README's batch and the bound closed on p90 click-to-door and on
the share within the promise (or within 0.5 min / 1 point of the bound).

The trip solve: ``trips.plan_trips`` on 500 pending orders × 2,000 drivers (a
quarter of them busy, free within the horizon), bundles of up to 3, against
scipy's ``linear_sum_assignment`` alone on a dense 500 × 2,000 matrix.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from foodmesh.core.geo import haversine_m
from foodmesh.core.progress import Progress
from foodmesh.core.trace import Trace, load_trace
from servers.dispatch.replay import SimConfig, simulate
from servers.dispatch.trips import FreeDriver, TravelRule, TripConfig, TripOrder, plan_trips

__all__ = ["bench_mdrp", "bench_trip_solve", "lower_bound", "readme_figures"]

_log = logging.getLogger("bench.dispatch")
_ROW = re.compile(r"^\|\s*(mdrp-[\w-]+)\s*\|(.*)\|\s*$")
_FIG = re.compile(r"(?:([\d,]+),\s*)?([\d.]+)\s*min,\s*([\d.]+)\s*%")


def readme_figures(folder: Path) -> dict[str, dict[str, Any]]:
    """The README's table by instance: greedy, batch (delivered, p90, share), bound."""
    path = folder / "README.md"
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m.group(2).split("|")]
        figs = [_FIG.search(c) for c in cells[1:]]
        if len(figs) < 3 or not all(figs):
            continue

        def fig(f: re.Match[str] | None) -> dict[str, Any]:
            assert f is not None
            d = int(f.group(1).replace(",", "")) if f.group(1) else None
            return {"delivered": d, "p90_min": float(f.group(2)), "share": float(f.group(3)) / 100}

        out[m.group(1)] = {"greedy": fig(figs[0]), "batch": fig(figs[1]), "bound": fig(figs[2])}
    return out


def lower_bound(trace: Trace) -> dict[str, float]:
    """Every order's courier waiting at the restaurant when the food is ready: p90 and share."""
    kitchens = {r.id: (r.lat, r.lon) for r in trace.restaurants}
    c2d = []
    for o in trace.orders:
        lat, lon = kitchens[o.restaurant_id]
        leg = haversine_m(lat, lon, o.dropoff_lat, o.dropoff_lon) / trace.speed_mps
        c2d.append(o.ready_s - o.placed_s + trace.pickup_service_s + leg + trace.dropoff_service_s)
    a = np.array(c2d)
    return {
        "p90_min": float(np.percentile(a, 90) / 60),
        "share": float((a <= trace.target_click_to_door_s).mean()),
    }


def _target(batch: dict[str, Any], bound: dict[str, Any]) -> dict[str, float]:
    """Half the gap closed, or within 0.5 min / 1 point of the bound, whichever is looser."""
    return {
        "p90_min": max((batch["p90_min"] + bound["p90_min"]) / 2, bound["p90_min"] + 0.5),
        "share": min((batch["share"] + bound["share"]) / 2, bound["share"] - 0.01),
    }


def _figures(m: Any) -> dict[str, Any]:
    return {
        "delivered": m.delivered,
        "orders": m.orders,
        "p90_min": round(m.click_to_door_p90_min, 2),
        "share": round(m.on_time_share, 4),
        "mean_min": round(m.click_to_door_mean_min, 2),
        "orders_per_trip": round(m.orders_per_trip, 3),
        "courier_hours_per_order": round(m.courier_hours_per_order, 4),
        "utilisation": round(m.utilisation, 4),
        "idle_share": round(m.courier_idle_share, 4),
        "driver_wait_min": round(m.driver_wait_mean_min, 2),
        "food_wait_min": round(m.food_wait_mean_min, 2),
        "wall_s": round(m.wall_s, 1),
    }


def bench_mdrp(folder: Path, *, interval_s: float = 2.0, quick: bool = False) -> dict[str, Any]:
    """Every trace in ``folder``: ours, our plain baseline, the bound, the README's figures."""
    readme = readme_figures(folder)
    paths = sorted(folder.glob("*.json"))
    if quick:
        paths = paths[:1]
    progress = Progress("instances replayed", total=len(paths), every=0.0)
    rows = []
    for path in paths:
        trace = load_trace(path)
        _log.info("replaying %s (%d orders, %d couriers)", trace.name, len(trace.orders),
                  len(trace.couriers))  # fmt: skip
        ours = simulate(
            trace, SimConfig(policy="batch", accept_prob=1.0, batch_interval_s=interval_s),
            progress=True,
        )  # fmt: skip
        plain = simulate(trace, SimConfig(policy="plain", accept_prob=1.0), progress=True)
        row: dict[str, Any] = {
            "instance": trace.name,
            "orders": len(trace.orders),
            "couriers": len(trace.couriers),
            "ours": _figures(ours),
            "plain": _figures(plain),
            "bound": lower_bound(trace),
        }
        ref = readme.get(trace.name)
        if ref is not None:
            row["readme"] = ref
            tgt = _target(ref["batch"], ref["bound"])
            row["target"] = tgt
            row["met"] = bool(
                ours.delivered == ours.orders
                and ours.click_to_door_p90_min <= tgt["p90_min"] + 1e-9
                and ours.on_time_share >= tgt["share"] - 1e-9
            )
        rows.append(row)
        progress.add()
    progress.finish()
    return {"interval_s": interval_s, "instances": rows}


def _solve_instance(
    n: int, m: int, seed: int
) -> tuple[list[TripOrder], list[FreeDriver], TravelRule]:
    rng = random.Random(seed)
    city = (40.75, -73.98)
    m_lat = 1 / 111_195.0
    m_lon = m_lat / math.cos(math.radians(city[0]))

    def pt(sd: float) -> tuple[float, float]:
        return city[0] + rng.gauss(0, sd) * m_lat, city[1] + rng.gauss(0, sd) * m_lon

    rests = [pt(4000) for _ in range(150)]
    orders = []
    for i in range(n):
        r = rng.randrange(len(rests))
        d = pt(4000)
        orders.append(TripOrder(f"o{i}", f"r{r}", *rests[r], *d, placed_at=-rng.uniform(0, 1200),
                                ready_at=rng.uniform(-300, 1500)))  # fmt: skip
    drivers = [
        FreeDriver(f"d{j}", *pt(5000), free_at=0.0 if j % 4 else rng.uniform(0, 900))
        for j in range(m)
    ]
    return orders, drivers, TravelRule(speed_mps=5.2)


def bench_trip_solve(n: int = 500, m: int = 2000, repeats: int = 3) -> dict[str, Any]:
    """``plan_trips`` on n pending × m drivers, bundles ≤ 3, vs raw LSA of that shape."""
    orders, drivers, travel = _solve_instance(n, m, seed=n)
    cfg = TripConfig(max_orders=3, scarcity_bundling=False)
    best = math.inf
    cpu = math.inf
    rnd = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        rnd = plan_trips(orders, drivers, now=0.0, interval_s=2.0, travel=travel, config=cfg)
        best = min(best, time.perf_counter() - t)
        cpu = min(cpu, time.thread_time() - c)
    assert rnd is not None
    cost = np.random.default_rng(n).random((n, m))
    t = time.perf_counter()
    linear_sum_assignment(cost)
    raw = time.perf_counter() - t
    sizes = [p.why.bundle_size for p in rnd.plans]
    return {
        "size": f"{n}x{m}",
        "ours_s": round(best, 4),
        "ours_cpu_s": round(cpu, 4),
        "raw_lsa_s": round(raw, 4),
        "ratio": round(best / raw, 2) if raw > 0 else None,
        "bundles": rnd.bundles,
        "trips_planned": len(rnd.plans),
        "orders_per_trip": round(sum(sizes) / max(1, len(sizes)), 3),
        "committed": sum(1 for p in rnd.plans if p.commit),
        "target_s": 1.0,
    }
