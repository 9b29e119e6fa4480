"""Road graph and routing (foodmesh.roads) on the default city, in process.

Phases, each on the same graph (the generated San Francisco grid):

- ``size``: nodes, edges, file size; generation time; load time of the ``.npz``
  (median of several loads); the first snap (builds the KD-tree) and the ALT
  landmarks of every traffic bucket of a week (``warm``);
- ``route``: ``RoadGraph.route`` between random points (uncached: every pair is
  new), weekday rush hour with the traffic model, all of it timed: snapping both
  ends, the A* search, path, turn-by-turn steps and polyline. All pairs, and
  short ones (< 3 km straight line, a driver to a restaurant) apart;
- ``raw dijkstra``: the baseline: scipy.sparse.csgraph.dijkstra from the
  origin's node on the same weights (the search alone, endpoints snapped
  beforehand, no path assembly), one call per pair;
- ``batch 200``: ``travel_times`` of 200 random drivers to one restaurant
  (snapping included), against 200 ``route`` calls and against the raw floor:
  one scipy Dijkstra on the reversed graph.

Latencies are of single calls back to back on one thread (a library call, no
queue in front of it). Targets (issue 10): route p99 < 20 ms, batch of 200 < 50 ms.

    python benchmarks/roads.py                # ~1 min
    python benchmarks/roads.py --quick --json # a few seconds
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.sparse.csgraph import dijkstra  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    Progress,
    emit_json,
    machine,
    now_iso,
    parser,
    print_table,
    ratio,
)
from foodmesh.roads import RoadGraph, TrafficModel, haversine_m  # noqa: E402
from foodmesh.roads.city import generate_city  # noqa: E402

RUSH = dt.datetime(2026, 11, 24, 18, 0)  # a Tuesday, local time


def _stats(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e3
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def _pairs(g: RoadGraph, n: int, seed: int) -> list[tuple[tuple[float, float], ...]]:
    """Random origin/destination pairs inside the city, both within 200 m of a road."""
    rng = np.random.default_rng(seed)
    lat0, lat1, lon0, lon1 = g.bounds()
    out: list[tuple[tuple[float, float], ...]] = []
    while len(out) < n:
        la = rng.uniform(lat0, lat1, 2 * n)
        lo = rng.uniform(lon0, lon1, 2 * n)
        snaps = g.snap_many(la, lo)
        pts = [(float(a), float(b)) for a, b, s in zip(la, lo, snaps, strict=True)
               if s.distance_m < 200]  # fmt: skip
        out.extend(zip(pts[0::2], pts[1::2], strict=False))
    return out[:n]


def run(*, routes: int, batches: int) -> dict[str, Any]:
    """All phases; returns the result object (raw figures, ours, ratios)."""
    result: dict[str, Any] = {"benchmark": "roads", "date": now_iso(), "machine": machine()}
    # ------------------------------------------------------------ size / load
    t0 = time.perf_counter()
    g = generate_city()
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = g.save(Path(tmp) / "city.npz")
        size = path.stat().st_size
        loads = []
        for _ in range(7):
            t = time.perf_counter()
            g = RoadGraph.load(path)
            loads.append(time.perf_counter() - t)
    t = time.perf_counter()
    g.snap(37.7749, -122.4194)
    snap_index_s = time.perf_counter() - t
    traffic = TrafficModel(timezone=g.timezone)
    t = time.perf_counter()
    g.warm(traffic=traffic)
    warm_s = time.perf_counter() - t
    result["graph"] = {
        "nodes": g.node_count,
        "edges": g.edge_count,
        "file_mb": round(size / 1e6, 2),
        "generate_s": round(gen_s, 3),
        "load_ms_median": round(float(np.median(loads)) * 1e3, 2),
        "snap_index_s": round(snap_index_s, 3),
        "warm_landmarks_s": round(warm_s, 3),
    }
    print(f"graph: {g!r}, loads in {result['graph']['load_ms_median']} ms", file=sys.stderr)
    # ------------------------------------------------------------ routes
    pairs = _pairs(g, routes, seed=1)
    ours: list[float] = []
    short: list[float] = []
    raw: list[float] = []
    fwd = g._forward(g._weights_for(RUSH, traffic, None))
    prog = Progress("routes (ours + raw dijkstra)", total=len(pairs))
    for o, d in pairs:
        t = time.perf_counter()
        g.route(o, d, depart_at=RUSH, traffic=traffic)
        took = time.perf_counter() - t
        ours.append(took)
        if haversine_m(o[0], o[1], d[0], d[1]) < 3_000:
            short.append(took)
        node = g.snap(*o).target
        t = time.perf_counter()
        dijkstra(fwd, directed=True, indices=node, return_predecessors=True)
        raw.append(time.perf_counter() - t)
        prog.add()
    prog.finish()
    result["route"] = _stats(ours)
    result["route_short"] = _stats(short) if short else None
    result["raw_dijkstra"] = _stats(raw)
    # ------------------------------------------------------------ batch of 200
    rng = np.random.default_rng(2)
    batch: list[float] = []
    naive: list[float] = []
    floor: list[float] = []
    rev = g._reverse(g._weights_for(RUSH, traffic, None))
    prog = Progress("batches of 200 (ours, 200 routes, raw)", total=batches)
    for b in range(batches):
        drivers = [p[0] for p in _pairs(g, 200, seed=100 + b)]
        restaurant = pairs[int(rng.integers(len(pairs)))][1]
        t = time.perf_counter()
        times = g.travel_times(drivers, restaurant, depart_at=RUSH, traffic=traffic)
        batch.append(time.perf_counter() - t)
        if b < max(1, batches // 5):  # 200 routes take seconds: a few rounds are enough
            t = time.perf_counter()
            one = [g.route(p, restaurant, depart_at=RUSH, traffic=traffic) for p in drivers]
            naive.append(time.perf_counter() - t)
            assert np.allclose(times, [r.duration_s for r in one])
        node = g.snap(*restaurant).source
        t = time.perf_counter()
        dijkstra(rev, directed=True, indices=node)
        floor.append(time.perf_counter() - t)
        prog.add()
    prog.finish()
    result["batch200"] = _stats(batch)
    result["batch200_as_routes"] = _stats(naive)
    result["batch200_raw_dijkstra"] = _stats(floor)
    pairs_of = {
        "route_p50_ours_over_raw": ("route", "raw_dijkstra", "p50_ms"),
        "route_p99_ours_over_raw": ("route", "raw_dijkstra", "p99_ms"),
        "batch200_p50_ours_over_raw": ("batch200", "batch200_raw_dijkstra", "p50_ms"),
        "batch200_p50_ours_over_200_routes": ("batch200", "batch200_as_routes", "p50_ms"),
    }
    result["ratio"] = {k: ratio(result[a][p], result[b][p]) for k, (a, b, p) in pairs_of.items()}
    result["targets"] = {
        "route_p99_ms_lt_20": result["route"]["p99_ms"] < 20,
        "batch200_p99_ms_lt_50": result["batch200"]["p99_ms"] < 50,
        "load_ms_lt_1000": result["graph"]["load_ms_median"] < 1000,
    }
    return result


def _report(r: dict[str, Any], took: float) -> None:
    gr = r["graph"]
    print_table(
        f"default city on {r['machine']['cpus']} cpus (load average "
        f"{r['machine']['loadavg_at_start']}), {took:.0f}s in all",
        ["nodes", "edges", "file MB", "generate s", "load ms", "KD-tree s", "landmarks s"],
        [[gr["nodes"], gr["edges"], gr["file_mb"], gr["generate_s"], gr["load_ms_median"],
          gr["snap_index_s"], gr["warm_landmarks_s"]]],
    )  # fmt: skip
    rows = []
    for key, label in (
        ("route", "route, all pairs (ours)"),
        ("route_short", "route, < 3 km (ours)"),
        ("raw_dijkstra", "raw scipy dijkstra, one source"),
        ("batch200", "batch of 200 travel_times (ours)"),
        ("batch200_as_routes", "batch of 200 as 200 route() calls"),
        ("batch200_raw_dijkstra", "raw scipy dijkstra, reversed"),
    ):
        s = r.get(key)
        if s:
            rows.append([label, s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]])
    print()
    print_table("latency per call", ["what", "calls", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    print()
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in r["ratio"].items()])
    print()
    print_table("targets", ["target", "met"], [[k, v] for k, v in r["targets"].items()])


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--routes", type=int, help="random routes to time (default 1000; quick 150)")
    p.add_argument("--batches", type=int, help="batches of 200 (default 50; quick 10)")
    args = p.parse_args()
    routes = args.routes or (150 if args.quick else 1000)
    batches = args.batches or (10 if args.quick else 50)
    t0 = time.perf_counter()
    result = run(routes=routes, batches=batches)
    result["took_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        emit_json(result)
    else:
        _report(result, result["took_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
