"""ETA: model accuracy and training time, then Route, EstimateDelivery and batch latencies.

1. **History and training**: ``--orders`` (default 100,000) deliveries from the
   offline generator (``foodmesh sim history``), then ``train-eta``'s training
   (XGBoost prep and travel quantile models, ``xgboost.train``, nthread 2).
   Figures: generation and training time; held-out (the latest 20% of orders by
   time) MAE and p90 absolute error in minutes, for prep, travel and the total, next
   to the routing-only baseline (road graph time × traffic multiplier with the
   vehicle's profile + the best fixed prep). Targets: total MAE < 3 min and at least
   20% below the baseline's.
2. **Serving**: the ETA service in its own process (real Redis, started here, or
   ``FOODMESH_REDIS_URL``) with that model. Open loop (latency from each call's
   scheduled time), ``--rate`` calls a second for ``--duration`` s each:
   - Route, uncached (a fresh origin-destination pair every call; target p99 < 20 ms)
     against the raw engine: ``RoadGraph.route`` on the same pairs in this process;
   - Route, cached (pairs already asked; target < 1 ms) against a raw Redis GET of an
     entry of the same size from this process, and against the gRPC floor: a
     Health/Check of the same server at the same rate (a call that does nothing), so
     "what a cached route adds above any call" is a figure of its own;
   - EstimateDelivery at order time (fresh restaurant-customer pairs, so the route is
     computed each time; target p99 < 25 ms) and again with its legs cached
     (TrackOrder asks the same order again every 30 s);
   - EstimateTravelTimes of 200 drivers to one restaurant (target < 50 ms), against
     the raw engine's many-to-one ``RoadGraph.travel_times`` on the same points.

    python benchmarks/eta.py                 # ~6 min on 2 cores (training dominates)
    python benchmarks/eta.py --quick --json  # 10,000 orders, short phases
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    closed_loop,
    emit_json,
    env_url,
    machine,
    now_iso,
    open_loop,
    parser,
    print_table,
    ratio,
    server_process,
)
from clients import ClientOptions, EtaClient  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.roads import RoadGraph, TrafficModel  # noqa: E402
from foodmesh.sim import history  # noqa: E402
from foodmesh.v1 import common_pb2, eta_pb2  # noqa: E402
from servers.eta.training import TrainConfig, train  # noqa: E402

NAMESPACE = "bench-eta"
CENTER = (37.7749, -122.4194)


async def _serve() -> None:
    from servers import eta
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env("eta", {**os.environ, "FOODMESH_SHUTDOWN_GRACE_S": "2"})
    configure_logging(settings.log_level)
    async with run_service(eta.SPEC, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


@contextlib.asynccontextmanager
async def _redis() -> AsyncIterator[str]:
    given = env_url("FOODMESH_REDIS_URL")
    if given:
        yield given
        return
    from foodmesh.infra import start_infra

    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-eta-") as tmp:
        async with start_infra(Path(tmp), durable=False, remove=True) as running:
            yield running.urls.redis_url


def _points(
    graph: RoadGraph, n: int, seed: int, radius_m: float = 5000.0
) -> list[tuple[float, float]]:
    """Road points within ``radius_m`` of the design's point (where deliveries happen)."""
    rng = np.random.default_rng(seed)
    cx, cy = graph.plane.to_xy(*CENTER)
    near = np.flatnonzero(np.hypot(graph.x - cx, graph.y - cy) < radius_m)
    pick = near[rng.integers(0, len(near), size=n)]
    jitter = rng.normal(0, 0.00015, size=(n, 2))
    return [(float(graph.lat[i] + a), float(graph.lon[i] + b))
            for i, (a, b) in zip(pick, jitter, strict=True)]  # fmt: skip


def _ll(p: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=p[0], lon=p[1])


def _train_phase(orders: int, rounds: int, model_dir: Path) -> dict[str, Any]:
    graph = RoadGraph.default()
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    h = history.generate(graph, orders=orders, seed=1, progress=say)
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = train(h, out_dir=model_dir, config=TrainConfig(rounds=rounds, nthread=2),
                   progress=say)  # fmt: skip
    train_s = time.perf_counter() - t1
    return {
        "orders": orders,
        "generate_s": round(gen_s, 2),
        "train_s": round(train_s, 2),
        "model_version": result.model.version,
        "held_out": result.metrics["held_out"],
    }


def _raw_latency(fn: Callable[[int], object], n: int, label: str) -> LatencyResult:
    prog = Progress(label, total=n)
    samples = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - s)
        prog.add()
    prog.finish()
    return LatencyResult.of(samples, errors=0, seconds=time.perf_counter() - t0)


async def _serving(model_dir: Path, *, rate: float, duration: float) -> dict[str, Any]:
    graph = RoadGraph.default()
    traffic = TrafficModel()
    n = max(50, int(rate * duration) + 10)
    origins = _points(graph, n, seed=2)
    dests = _points(graph, n, seed=3)
    out: dict[str, Any] = {}
    async with _redis() as redis_url:
        os.environ.update({
            "FOODMESH_REDIS_URL": redis_url, "FOODMESH_NAMESPACE": NAMESPACE,
            "FOODMESH_ETA_PORT": "0", "FOODMESH_ETA_METRICS_PORT": "0",
            "FOODMESH_ETA_MODEL_DIR": str(model_dir), "FOODMESH_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        r = aioredis.Redis.from_url(redis_url)
        async for k in r.scan_iter(match=f"{NAMESPACE}:*"):
            await r.delete(k)
        async with server_process(sys.executable, __file__, "--serve") as srv:
            token = bearer(mint_token(DEV_SECRET, subject="bench", role="service"))
            client = EtaClient(srv.target, options=ClientOptions(metadata=token, deadline_s=10))
            try:

                def route_req(i: int) -> eta_pb2.RouteRequest:
                    return eta_pb2.RouteRequest(origin=_ll(origins[i]), destination=_ll(dests[i]))

                for i in range(5):  # warm up (model, snapping index, weights)
                    await client.route(route_req(n - 1 - i))
                    await client.estimate_delivery(
                        eta_pb2.EstimateDeliveryRequest(
                            restaurant_location=_ll(origins[-1 - i]),
                            delivery_location=_ll(dests[-1 - i]),
                            item_count=2,
                        )
                    )
                i_route = iter(range(n))
                routed: list[int] = []

                async def route_fresh() -> None:
                    i = next(i_route)
                    await client.route(route_req(i))
                    routed.append(i)

                fresh = await open_loop(route_fresh, rate=rate, duration=duration,
                                        progress=Progress("Route uncached"))  # fmt: skip
                asked = len(routed)
                i_cached = iter(range(10**9))

                async def route_cached() -> None:
                    reply = await client.route(route_req(routed[next(i_cached) % max(1, asked)]))
                    if not reply.cached:
                        raise RuntimeError("expected a cache hit")

                cached = await open_loop(route_cached, rate=rate, duration=duration,
                                         progress=Progress("Route cached"))  # fmt: skip
                # The floor under any answer of this server: a health check, the same
                # transport and runtime with no work, from this process at the same rate.
                health = health_pb2_grpc.HealthStub(client.channel)

                async def floor() -> None:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

                grpc_floor = await open_loop(floor, rate=rate, duration=duration,
                                             progress=Progress("gRPC floor"))  # fmt: skip
                restaurants = _points(graph, n, seed=4)
                customers = _points(graph, n, seed=5)
                i_est = iter(range(n))

                def est_req(i: int) -> eta_pb2.EstimateDeliveryRequest:
                    return eta_pb2.EstimateDeliveryRequest(
                        restaurant_id=f"rest_{i % 500:05d}",
                        restaurant_location=_ll(restaurants[i]),
                        delivery_location=_ll(customers[i]),
                        item_count=1 + i % 5,
                        subtotal=common_pb2.Money(amount_minor=2500, currency_code="USD"),
                        restaurant_active_orders=i % 7,
                    )

                estimated: list[int] = []

                async def estimate_fresh() -> None:
                    i = next(i_est)
                    r = await client.estimate_delivery(est_req(i))
                    if r.model_version == "baseline":
                        raise RuntimeError("model not loaded")
                    estimated.append(i)

                est = await open_loop(estimate_fresh, rate=rate, duration=duration,
                                      progress=Progress("EstimateDelivery uncached"))  # fmt: skip
                i_est2 = iter(range(10**9))

                async def estimate_again() -> None:
                    i = estimated[next(i_est2) % max(1, len(estimated))]
                    await client.estimate_delivery(est_req(i))

                est_cached = await open_loop(
                    estimate_again,
                    rate=rate,
                    duration=duration,
                    progress=Progress("EstimateDelivery legs cached"),
                )
                drivers = _points(graph, 200, seed=6, radius_m=4000)
                rest = restaurants[0]
                batch_req = eta_pb2.EstimateTravelTimesRequest(
                    legs=[eta_pb2.TravelLeg(origin=_ll(p), destination=_ll(rest)) for p in drivers]
                )
                await client.estimate_travel_times(batch_req)

                async def batch() -> None:
                    got = await client.estimate_travel_times(batch_req)
                    assert len(got.travel_times) == 200

                batch_res = await closed_loop(
                    batch,
                    concurrency=1,
                    duration=duration,
                    progress=Progress("EstimateTravelTimes x200"),
                )
            finally:
                await client.close()
        # Raw baselines, in this process.
        when = dt.datetime.now(dt.UTC)
        raw_route = _raw_latency(
            lambda i: graph.route(origins[routed[i]], dests[routed[i]], depart_at=when,
                                  traffic=traffic),
            min(len(routed), 300), "raw RoadGraph.route",
        )  # fmt: skip
        await r.set(f"{NAMESPACE}:raw", b"x" * 2000)
        raw_get_samples = []
        for _ in range(500):
            s = time.perf_counter()
            await r.get(f"{NAMESPACE}:raw")
            raw_get_samples.append(time.perf_counter() - s)
        raw_get = LatencyResult.of(raw_get_samples, errors=0, seconds=1.0)
        raw_batch = _raw_latency(
            lambda i: graph.travel_times(drivers, rest, depart_at=when, traffic=traffic),
            30, "raw RoadGraph.travel_times x200",
        )  # fmt: skip
        async for k in r.scan_iter(match=f"{NAMESPACE}:*"):
            await r.delete(k)
        await r.aclose()
    out["route_uncached"] = {"ours": fresh.as_dict(), "raw": raw_route.as_dict()}
    out["route_cached"] = {"ours": cached.as_dict(), "raw": raw_get.as_dict()}
    out["grpc_floor"] = {"ours": grpc_floor.as_dict()}
    # What the cache path adds above a call that does nothing, at the same percentiles.
    out["route_cached_above_floor_ms"] = {
        q: round(cached.as_dict()[f"{q}_ms"] - grpc_floor.as_dict()[f"{q}_ms"], 2)
        for q in ("p50", "p99")
    }
    out["estimate_uncached"] = {"ours": est.as_dict()}
    out["estimate_cached_legs"] = {"ours": est_cached.as_dict()}
    out["batch_200"] = {"ours": batch_res.as_dict(), "raw": raw_batch.as_dict()}
    return out


async def run(*, orders: int, rounds: int, rate: float, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-eta-models-") as tmp:
        model_dir = Path(tmp)
        training = await asyncio.to_thread(_train_phase, orders, rounds, model_dir)
        serving = await _serving(model_dir, rate=rate, duration=duration)
    ho = training["held_out"]
    above_floor = serving.pop("route_cached_above_floor_ms")
    ratios = {
        f"{k}_p99": ratio(v["ours"]["p99_ms"], v["raw"]["p99_ms"])
        for k, v in serving.items() if "raw" in v
    }  # fmt: skip
    ratios["total_mae_vs_baseline"] = ho["total"]["mae_vs_baseline"]
    ratios["total_mae_vs_rolling_prep_baseline"] = ho["total"]["mae_vs_rolling_baseline"]
    ratios["total_mae_vs_seed_formula"] = ho["total"]["mae_vs_seed_baseline"]
    if "wait" in ho:  # the pickup part before a driver is known, against the wait by hour
        ratios["pickup_wait_mae_vs_by_hour"] = ho["wait"]["mae_vs_baseline"]
    return {
        "benchmark": "eta",
        "machine": machine(),
        "date": now_iso(),
        "settings": {"orders": orders, "rounds": rounds, "rate": rate, "duration_s": duration},
        "training": training,
        "serving": serving,
        "raw": {k: v["raw"] for k, v in serving.items() if "raw" in v},
        "ours": {k: v["ours"] for k, v in serving.items()},
        "ratio": ratios,
        "route_cached_above_grpc_floor_ms": above_floor,
    }


def _report(res: dict[str, Any]) -> None:
    t, ho = res["training"], res["training"]["held_out"]
    print_table(
        f"ETA models: {t['orders']:,} simulated orders (generated in {t['generate_s']:.0f}s), "
        f"trained in {t['train_s']:.0f}s; held-out {ho['rows']:,} orders (latest 20%)",
        ["part", "MAE min", "p90 min", "baseline MAE", "baseline p90", "ours/baseline"],
        [[k, ho[k]["mae_min"], ho[k]["p90_min"], ho[k]["baseline_mae_min"],
          ho[k]["baseline_p90_min"], ho[k]["mae_vs_baseline"]]
         for k in ("prep", "travel", "wait", "total", "total_driver_assigned") if k in ho],
    )  # fmt: skip
    tot = ho["total"]
    print_table(
        "The total at order time against honest baselines (target: >= 25% below (a))",
        ["estimator", "MAE min", "p90 min", "ours/it"],
        [["ours (XGBoost, live kitchen features)", tot["mae_min"], tot["p90_min"], 1.0],
         ["(a) route time + restaurant's rolling mean prep + constant",
          tot["rolling_baseline_mae_min"], tot["rolling_baseline_p90_min"],
          tot["mae_vs_rolling_baseline"]],
         ["(b) seed formula: listed prep + 8 min + route time", tot["seed_baseline_mae_min"],
          tot["seed_baseline_p90_min"], tot["mae_vs_seed_baseline"]],
         ["routing only: route time + best constant", tot["baseline_mae_min"],
          tot["baseline_p90_min"], tot["mae_vs_baseline"]]],
    )  # fmt: skip
    print(f"80% interval coverage of the total: {tot['interval80_coverage']}")
    if "wait_by_hour_mae_min" in tot:
        print(
            f"the total with the pickup wait by hour instead of the wait model: MAE "
            f"{tot['wait_by_hour_mae_min']} min, p90 {tot['wait_by_hour_p90_min']} min"
        )
    s = res["settings"]
    rows = []
    for name, key in (("Route uncached", "route_uncached"), ("Route cached", "route_cached"),
                      ("gRPC floor (Health/Check)", "grpc_floor"),
                      ("EstimateDelivery uncached", "estimate_uncached"),
                      ("EstimateDelivery legs cached", "estimate_cached_legs"),
                      ("EstimateTravelTimes x200", "batch_200")):  # fmt: skip
        f = res["serving"][key]["ours"]
        raw = res["serving"][key].get("raw")
        rows.append([name, f["rate"], f["p50_ms"], f["p99_ms"], f["max_ms"], f["errors"],
                     raw["p50_ms"] if raw else None, raw["p99_ms"] if raw else None])  # fmt: skip
    print_table(
        f"ETA service at {s['rate']:g}/s open loop ({s['duration_s']:g}s a phase; batch closed "
        f"loop), {res['machine']['cpus']} cpus",
        ["call", "per s", "p50 ms", "p99 ms", "max ms", "errors", "raw p50 ms", "raw p99 ms"],
        rows,
    )
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in res["ratio"].items()])
    above = res["route_cached_above_grpc_floor_ms"]
    print(f"a cached Route above the gRPC floor: p50 {above['p50']} ms, p99 {above['p99']} ms")


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--orders", type=int, help="history size (default 100,000; --quick 10,000)")
    p.add_argument("--rounds", type=int, default=250, help="boosting rounds per model")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    orders = args.orders or (10_000 if args.quick else 100_000)
    duration = args.duration or (5.0 if args.quick else 20.0)
    rate = args.rate or 20.0
    res = asyncio.run(run(orders=orders, rounds=args.rounds, rate=rate, duration=duration))
    if args.json:
        emit_json(res)
    else:
        _report(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
