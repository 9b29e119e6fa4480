"""SearchRestaurants over 10,000 restaurants, open loop, against a raw Redis GEOSEARCH.

Data: ``--restaurants`` (default 10,000) restaurants spread uniformly over a 55 x 53 km
metro area around San Francisco (about 3.4 per km², a little under a real city's
density), each with 1-3 cuisines, an octagonal delivery zone of 3-6 miles and a
maximum distance of 5-10 miles. They are written to PostgreSQL through the
service's own store; the service then builds its Redis index from PostgreSQL at
start (the rebuild time is reported).

Load: searches at uniformly random points of the area (no two alike: nothing a cache of
popular searches could reuse), radius 5 miles (a third at 2-10), 30% with
a cuisine filter, a quarter open-now, random sort, page size 20; sent open loop at
``--rate`` (default 200/s) for ``--duration`` s (default 20), latency counted from the
intended send time. The service runs in its own process with production defaults
(access log on), the load generator in this one.

Then a *popular* phase at the same rate: the searches come from 50 busy 0.01° cells (a
different exact point every time, inside those cells): what the popular-search cache
(``servers/catalog/cells.py``) serves from its entries. And, in this process, the cache
itself: the CPU of one search on the replica's table computed whole (a miss: scan the
latitude band, then decide) against one finished from a cached cell (a hit), over the same
points (``cache`` in the JSON).

Baseline: the same points sent as raw ``GEOSEARCH ... BYRADIUS`` (ids only, no
documents) over a GEO set per geohash-4 region of the same restaurants (written by the
benchmark: the index itself keeps no GEO sets, each replica holds its regions in memory),
pipelined, at the same rate, from this process: the floor of fetching the candidates.
The ratio says what exact distance, zones, hours, filters, ranking, paging and gRPC
cost on top.

    python benchmarks/catalog.py              # ~90 s (seeding included)
    python benchmarks/catalog.py --quick --json
Target: search p95 < 50 ms at 200 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    bench_infra,
    emit_json,
    fresh_database,
    machine,
    now_iso,
    open_loop,
    parser,
    print_table,
    ratio,
    server_process,
)
from clients import CatalogClient, ClientOptions  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.core.geo import METERS_PER_MILE, cells_covering  # noqa: E402
from foodmesh.core.redis import Keys  # noqa: E402
from foodmesh.v1 import catalog_pb2 as pb  # noqa: E402
from servers.catalog import SPEC  # noqa: E402
from servers.catalog.hours import Span  # noqa: E402
from servers.catalog.index import REGION_PRECISION, SearchIndex, region_of  # noqa: E402
from servers.catalog.model import Address, Restaurant, Zone  # noqa: E402
from servers.catalog.store import CatalogStore  # noqa: E402
from servers.catalog.zones import Polygon  # noqa: E402
from servers.runtime.migrate import load_migrations, migrate  # noqa: E402

CENTER = (37.76, -122.43)
SPAN_LAT, SPAN_LON = 0.25, 0.30
CUISINES = ["italian", "thai", "mexican", "sushi", "indian", "burgers", "chinese", "vegan",
            "pizza", "korean", "greek", "french"]  # fmt: skip
NAMESPACE = "bench"
CALL_TIMEOUT_S = 5.0


# --- the server side (a child process) ----------------------------------------------------


async def _serve() -> None:
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env("catalog", {**os.environ, "FOODMESH_SHUTDOWN_GRACE_S": "2"})
    configure_logging(settings.log_level)
    async with run_service(SPEC, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


# --- data -----------------------------------------------------------------------------------


def _octagon(lat: float, lon: float, miles: float) -> Polygon:
    dlat = miles * METERS_PER_MILE / 111_195.0
    dlon = dlat / math.cos(math.radians(lat))
    pts = [(lat + dlat * math.sin(k * math.pi / 4), lon + dlon * math.cos(k * math.pi / 4))
           for k in range(8)]  # fmt: skip
    return Polygon.of(pts)


def _restaurants(n: int, seed: int) -> list[Restaurant]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lat = CENTER[0] + rng.uniform(-SPAN_LAT, SPAN_LAT)
        lon = CENTER[1] + rng.uniform(-SPAN_LON, SPAN_LON)
        late = rng.random() < 0.3
        hours = tuple(Span(d, 11 * 60, (26 if late else 22) * 60) for d in range(1, 8))
        out.append(
            Restaurant(
                restaurant_id=f"rest_{i:05d}", name=f"Restaurant {i}",
                cuisines=tuple(rng.sample(CUISINES, rng.randint(1, 3))),
                address=Address(lat, lon, street=f"{i} Market St", city="San Francisco",
                                state="CA", zip="94103", country="US"),
                time_zone="America/Los_Angeles", hours=hours, closures=(),
                price_level=rng.randint(1, 4), currency="USD",
                minimum_order_minor=rng.randrange(0, 2000, 100),
                avg_prep_time_min=rng.choice([10, 15, 20, 25, 30]),
                image_url=f"https://cdn.example/rest_{i:05d}.jpg", paused=rng.random() < 0.03,
                zones=(Zone("main", _octagon(lat, lon, rng.uniform(3, 6)),
                            rng.randrange(99, 699, 50), 0),),
                max_delivery_miles=rng.choice([5.0, 7.5, 10.0]), owner_id=f"owner_{i}",
            )
        )  # fmt: skip
    return out


async def _seed(pg_url: str, restaurants: list[Restaurant], progress: Progress) -> None:
    assert SPEC.migrations is not None
    await migrate(pg_url, service="catalog", migrations=load_migrations(SPEC.migrations))
    async with AsyncConnectionPool(pg_url, min_size=8, max_size=8, open=False) as pool:
        store = CatalogStore(pool)
        queue = list(reversed(restaurants))

        async def worker() -> None:
            while queue:
                await store.upsert_restaurant(queue.pop())
                progress.add()

        await asyncio.gather(*(worker() for _ in range(8)))
    progress.finish()


def _requests(n: int, seed: int) -> list[pb.SearchRestaurantsRequest]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        req = pb.SearchRestaurantsRequest(
            lat=CENTER[0] + rng.uniform(-SPAN_LAT * 0.9, SPAN_LAT * 0.9),
            lon=CENTER[1] + rng.uniform(-SPAN_LON * 0.9, SPAN_LON * 0.9),
            radius=5.0 if rng.random() < 2 / 3 else rng.choice([2.0, 3.0, 10.0]),
            sort=rng.choice([1, 1, 2, 3, 4]),  # type: ignore[arg-type]
            page_size=20,
            open_now=rng.random() < 0.25,
        )
        if rng.random() < 0.3:
            req.cuisine.append(rng.choice(CUISINES))
        out.append(req)
    return out


def _popular(n: int, seed: int, cells: int = 50) -> list[pb.SearchRestaurantsRequest]:
    """Searches from ``cells`` busy 0.01° cells: exact points differ, cells repeat."""
    rng = random.Random(seed)
    centres = [(round(CENTER[0] + rng.uniform(-SPAN_LAT * 0.8, SPAN_LAT * 0.8), 2),
                round(CENTER[1] + rng.uniform(-SPAN_LON * 0.8, SPAN_LON * 0.8), 2))
               for _ in range(cells)]  # fmt: skip
    out = []
    for req in _requests(n, seed + 1):
        clat, clon = rng.choice(centres)
        req.lat = clat + rng.uniform(-0.0049, 0.0049)
        req.lon = clon + rng.uniform(-0.0049, 0.0049)
        req.radius = 5.0
        del req.cuisine[:]
        out.append(req)
    return out


def _cache_cpu(restaurants: list[Restaurant], reqs: list[pb.SearchRestaurantsRequest],
               progress: Progress) -> dict[str, Any]:  # fmt: skip
    """In-process CPU per search: computed whole (miss) vs finished from the cell (hit)."""
    import datetime as dt

    from servers.catalog.cells import CellCache
    from servers.catalog.convert import query_from_pb
    from servers.catalog.search import SearchDoc, paginate
    from servers.catalog.table import RegionTable, search_table

    table = RegionTable.merge([RegionTable([SearchDoc.of(r) for r in restaurants])])
    now = dt.datetime.now(dt.UTC)
    queries = [query_from_pb(r) for r in reqs]
    cache = CellCache(ttl_s=3600.0)
    for q in queries:  # fill: every cell once
        cache.rows(table, q, [0])
    out: dict[str, Any] = {}
    for name in ("miss", "hit"):
        t0 = time.process_time()
        for q in queries:
            rows, zones = cache.rows(table, q, [0]) if name == "hit" else (None, None)
            paginate(search_table(table, q, now, parts=[0], rows=rows, zones=zones), q, "")
            progress.add()
        out[f"{name}_us_per_search"] = round((time.process_time() - t0) / len(queries) * 1e6, 1)
    out["ratio_hit_to_miss"] = ratio(out["hit_us_per_search"], out["miss_us_per_search"])
    out["searches"] = len(queries)
    progress.finish()
    return out


# --- the run --------------------------------------------------------------------------------


async def run(*, n: int, rate: float, duration: float) -> dict[str, Any]:
    restaurants = _restaurants(n, seed=1)
    requests = _requests(max(1, round(rate * duration)), seed=2)
    popular = _popular(max(1, round(rate * duration)), seed=3)
    async with bench_infra("catalog") as urls:
        pg_url = await fresh_database(urls.postgres_url, "catalog")
        t0 = time.perf_counter()
        await _seed(pg_url, restaurants, Progress("seed PostgreSQL", total=n))
        seed_s = time.perf_counter() - t0
        redis = aioredis.Redis.from_url(urls.redis_url)
        keys = Keys(NAMESPACE)
        await redis.delete(SearchIndex(redis, keys).built_key)
        async with redis.pipeline(transaction=False) as pipe:
            for r in restaurants:
                geo = keys.region("bench:geo", region_of(r.address.lat, r.address.lon))
                pipe.geoadd(geo, [r.address.lon, r.address.lat, r.restaurant_id])
            await pipe.execute()
        env = {
            "FOODMESH_POSTGRES_URL": pg_url,
            "FOODMESH_REDIS_URL": urls.redis_url,
            "FOODMESH_NATS_URL": urls.nats_url,
            "FOODMESH_NAMESPACE": NAMESPACE,
            "FOODMESH_CATALOG_PORT": "0",
            "FOODMESH_CATALOG_METRICS_PORT": "0",
        }
        os.environ.update(env)
        opts = ClientOptions(metadata=bearer(mint_token(DEV_SECRET, subject="bench",
                                                        role="service")))  # fmt: skip
        try:
            async with (
                server_process(sys.executable, __file__, "--serve") as server,
                CatalogClient(server.target, options=opts) as client,
            ):
                t0 = time.perf_counter()
                for _ in range(2400):  # up to 2 minutes
                    if await redis.exists(SearchIndex(redis, keys).built_key):
                        break
                    await asyncio.sleep(0.05)
                rebuild_s = time.perf_counter() - t0
                sizes = []
                for req in requests[:50]:  # warm up; and how big the answers are
                    reply = await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                    sizes.append(reply.total_count)

                raw_i = 0

                async def raw() -> None:
                    nonlocal raw_i
                    req = requests[raw_i % len(requests)]
                    raw_i += 1
                    radius_m = (req.radius or 5.0) * METERS_PER_MILE
                    async with redis.pipeline(transaction=False) as pipe:
                        for region in cells_covering(req.lat, req.lon, radius_m, REGION_PRECISION):
                            pipe.geosearch(keys.region("bench:geo", region), longitude=req.lon,
                                           latitude=req.lat, radius=radius_m, unit="m")  # fmt: skip
                        await pipe.execute()

                ours_i = 0
                totals: list[int] = []

                async def ours() -> None:
                    nonlocal ours_i
                    req = requests[ours_i % len(requests)]
                    ours_i += 1
                    reply = await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                    totals.append(reply.total_count)

                total = round(rate * duration)
                raw_cpu0 = time.process_time()
                raw_result = await open_loop(
                    raw, rate=rate, duration=duration,
                    progress=Progress(f"raw GEOSEARCH @{rate:g}/s", total=total),
                )  # fmt: skip
                raw_cpu = time.process_time() - raw_cpu0
                cpu0 = server.cpu_seconds()
                ours_result = await open_loop(
                    ours, rate=rate, duration=duration,
                    progress=Progress(f"SearchRestaurants @{rate:g}/s", total=total),
                )  # fmt: skip
                cpu1 = server.cpu_seconds()
                pop_i = 0

                async def hot() -> None:
                    nonlocal pop_i
                    req = popular[pop_i % len(popular)]
                    pop_i += 1
                    await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)

                for req in popular[:50]:
                    await client.search_restaurants(req, deadline_s=CALL_TIMEOUT_S)
                pcpu0 = server.cpu_seconds()
                popular_result = await open_loop(
                    hot, rate=rate, duration=duration,
                    progress=Progress(f"popular cells @{rate:g}/s", total=total),
                )  # fmt: skip
                pcpu1 = server.cpu_seconds()
        finally:
            await redis.aclose()
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0

    def fig(r: LatencyResult) -> dict[str, Any]:
        out = r.as_dict()
        out["p95_ms"] = (
            round(float(sorted(r.samples_s)[int(0.95 * (len(r.samples_s) - 1))]) * 1000, 3)
            if r.ok
            else None
        )
        return out

    raw_fig, ours_fig, pop_fig = fig(raw_result), fig(ours_result), fig(popular_result)
    if server_cpu is not None and ours_result.ok:
        ours_fig["server_cpu_ms_per_call"] = round(server_cpu / ours_result.ok * 1000, 3)
        ours_fig["server_cpu_pct"] = round(100 * server_cpu / ours_result.seconds, 1)
    if pcpu0 is not None and pcpu1 is not None and popular_result.ok:
        pop_fig["server_cpu_ms_per_call"] = round((pcpu1 - pcpu0) / popular_result.ok * 1000, 3)
    sample = requests[: min(len(requests), 2000)]
    hot_sample = popular[: min(len(popular), 2000)]
    cache_fig = {
        "random_points": _cache_cpu(restaurants, sample,
                                    Progress("in-process miss/hit, random", total=2 * len(sample))),
        "popular_cells": _cache_cpu(restaurants, hot_sample,
                                    Progress("in-process miss/hit, popular",
                                             total=2 * len(hot_sample))),
    }  # fmt: skip
    raw_fig["client_cpu_ms_per_call"] = round(raw_cpu / max(1, raw_result.ok) * 1000, 3)
    return {
        "benchmark": "catalog",
        "machine": machine(),
        "date": now_iso(),
        "settings": {
            "restaurants": n,
            "rate": rate,
            "duration_s": duration,
            "area_km": [round(2 * SPAN_LAT * 111.2, 1), round(2 * SPAN_LON * 88.0, 1)],
            "page_size": 20,
            "servers": "catalog in a subprocess, load generator in this one",
        },
        "seed_s": round(seed_s, 2),
        "index_rebuild_s": round(rebuild_s, 2),
        "hits_per_search": {
            "mean": round(sum(totals) / len(totals), 1) if totals else None,
            "max": max(totals, default=None),
            "warmup_mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
        },
        "raw": raw_fig,
        "ours": ours_fig,
        "popular": pop_fig,
        "cache": cache_fig,
        "ratio": {
            "p50": ratio(ours_result.p50_ms, raw_result.p50_ms),
            "p95": ratio(ours_fig["p95_ms"], raw_fig["p95_ms"]),
            "p99": ratio(ours_result.p99_ms, raw_result.p99_ms),
            "throughput": ratio(ours_result.rate, raw_result.rate),
        },
        "target": {"p95_ms": 50.0, "met": bool(ours_fig["p95_ms"] and ours_fig["p95_ms"] < 50)},
    }


def _report(result: dict[str, Any], took: float) -> None:
    s = result["settings"]
    rows = []
    for name, key in (("raw Redis GEOSEARCH (ids only)", "raw"), ("SearchRestaurants", "ours"),
                      ("SearchRestaurants, 50 popular cells", "popular")):  # fmt: skip
        f = result[key]
        rows.append([name, f["rate"], f["p50_ms"], f["p95_ms"], f["p99_ms"], f["max_ms"],
                     f["errors"] + f["dropped"], f.get("server_cpu_ms_per_call")])  # fmt: skip
    print_table(
        f"catalog search: {s['restaurants']:,} restaurants, open loop @{s['rate']:g}/s for "
        f"{s['duration_s']:g}s, {result['machine']['cpus']} cpus, {took:.0f}s in all",
        ["path", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "failed", "srv CPU ms/call"],
        rows,
    )
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in result["ratio"].items()])
    print_table(
        "popular-search cache, in-process CPU per search (search + first page)",
        ["searches", "miss µs", "hit µs", "hit / miss"],
        [[k, c["miss_us_per_search"], c["hit_us_per_search"], c["ratio_hit_to_miss"]]
         for k, c in result["cache"].items()],
    )  # fmt: skip
    h = result["hits_per_search"]
    print(f"\nhits per search: mean {h['mean']}, max {h['max']}; seeding {result['seed_s']} s, "
          f"index rebuilt from PostgreSQL in {result['index_rebuild_s']} s")  # fmt: skip
    met = "met" if result["target"]["met"] else "NOT met"
    print(f"target p95 < 50 ms at {s['rate']:g}/s: {met}")


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--restaurants", type=int, default=10_000)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    duration = args.duration or (4.0 if args.quick else 20.0)
    rate = args.rate or 200.0
    n = args.restaurants if not args.quick else min(args.restaurants, 3000)
    t0 = time.perf_counter()
    result = asyncio.run(run(n=n, rate=rate, duration=duration))
    if args.json:
        emit_json(result)
    else:
        _report(result, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
