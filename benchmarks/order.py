"""PlaceOrder with 64 concurrent callers, against raw single-row INSERT transactions.

Servers: the Catalog and the Order service, each in its own process with production
defaults (access log on, pool of 10 PostgreSQL connections), on real PostgreSQL and
NATS started by the benchmark; one restaurant with a menu and a delivery zone. The
outbox relay publishes every order to JetStream while the load runs.

Load: ``--callers`` (default 64) closed-loop callers, each placing orders back to back
for ``--duration`` s (default 30, the issue's minimum) with fresh idempotency keys, two lines each
(one with a customization), paid with the sandbox's ``pm_card_visa``. A PlaceOrder
is three Catalog reads, an idempotency claim, a sandbox authorization (a PostgreSQL
transaction) and the order's transaction (order, lines, timeline, outbox, NOTIFY).

Then ``--rate`` (default 300, the target) orders a second arrive on schedule for
``--duration`` s (open loop): its latencies, measured from each order's intended
send time, are the ones the target's p99 is about (a closed loop of 64 callers at
300/s has a mean latency of 64/300 s = 213 ms by Little's law, whatever the server).

Baseline: the same number of callers running single-row ``INSERT`` transactions (one
JSONB row of the order's size) through a pool of 10 connections to the same
PostgreSQL, from this process: the floor of "write one order durably". The ratio
says what validation, the catalog, payment, idempotency, the outbox and gRPC cost.

Then SearchRestaurants over ``--restaurants`` (default 10,000) restaurants at
``--search-rate`` (default 200/s, the target) for 20 s, open loop: throughput and
p50/p95/p99 against a raw Redis GEOSEARCH, and the popular-search cache's hit against
miss (this is ``benchmarks/catalog.py``'s run, on its own fresh servers; ``--no-search``
skips it). The issue's two figures, one command.

    python benchmarks/order.py            # ~3 min (search seeding included)
    python benchmarks/order.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    bench_infra,
    closed_loop,
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
from clients import CatalogClient, ClientOptions, OrderClient  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.v1 import catalog_pb2 as cpb  # noqa: E402
from foodmesh.v1 import common_pb2  # noqa: E402
from foodmesh.v1 import order_pb2 as pb  # noqa: E402
from servers import catalog, order  # noqa: E402
from servers.runtime.migrate import load_migrations, migrate  # noqa: E402

NAMESPACE = "bench"
CALL_TIMEOUT_S = 10.0
REST = (37.7755, -122.4183)


async def _serve(name: str) -> None:
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env(name, {**os.environ, "FOODMESH_SHUTDOWN_GRACE_S": "2"})
    configure_logging(settings.log_level)
    spec = catalog.SPEC if name == "catalog" else order.SPEC
    async with run_service(spec, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


def _opts(role: str, subject: str) -> ClientOptions:
    return ClientOptions(
        metadata=bearer(mint_token(DEV_SECRET, subject=subject, role=role)),
        deadline_s=CALL_TIMEOUT_S,
    )


def _usd(n: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=n, currency_code="USD")


async def _seed(target: str) -> None:
    half = 0.03
    ring = [(REST[0] - half, REST[1] - half), (REST[0] - half, REST[1] + half),
            (REST[0] + half, REST[1] + half), (REST[0] + half, REST[1] - half)]  # fmt: skip
    async with CatalogClient(target, options=_opts("ops", "bench")) as c:
        await c.upsert_restaurant(cpb.UpsertRestaurantRequest(restaurant=cpb.Restaurant(
            restaurant_id="rest_1", name="Luigi's", cuisines=["pizza"],
            address=common_pb2.Address(lat=REST[0], lon=REST[1]), time_zone="UTC",
            hours=[cpb.OpeningHours(weekday=d, open_minute=0, close_minute=1440)
                   for d in range(1, 8)],
            price_level=2, minimum_order=_usd(1000), avg_prep_time_min=18,
            zones=[cpb.DeliveryZone(zone_id="z", delivery_fee=_usd(299), minimum_order=_usd(0),
                                    polygon=[common_pb2.LatLng(lat=a, lon=b) for a, b in ring])],
            max_delivery_distance_miles=5)))  # fmt: skip
        await c.upsert_menu(cpb.UpsertMenuRequest(restaurant_id="rest_1", categories=[
            cpb.MenuCategory(category_id="c", name="Mains", items=[
                cpb.MenuItem(item_id="pizza", name="Pizza", price=_usd(1499), available=True,
                    customizations=[cpb.CustomizationGroup(group_id="size", name="Size",
                        min_choices=0, max_choices=1, options=[cpb.CustomizationOption(
                            option_id="large", name="Large", price_delta=_usd(300),
                            available=True)])]),
                cpb.MenuItem(item_id="salad", name="Salad", price=_usd(899),
                             available=True)])]))  # fmt: skip


def _request(key: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        idempotency_key=key, restaurant_id="rest_1", payment_method_id="pm_card_visa",
        items=[pb.OrderItemInput(item_id="pizza", quantity=1, customizations=["large"]),
               pb.OrderItemInput(item_id="salad", quantity=2)],
        delivery_address=common_pb2.Address(street="456 Mission St", lat=37.7749, lon=-122.4194),
    )  # fmt: skip


async def run(*, callers: int, duration: float, rate: float) -> dict[str, Any]:
    async with bench_infra("order") as urls:
        pg_url = await fresh_database(urls.postgres_url, "order")
        for spec in (catalog.SPEC, order.SPEC):
            assert spec.migrations is not None
            await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
        os.environ.update({
            "FOODMESH_POSTGRES_URL": pg_url, "FOODMESH_REDIS_URL": urls.redis_url,
            "FOODMESH_NATS_URL": urls.nats_url, "FOODMESH_NAMESPACE": NAMESPACE,
            "FOODMESH_CATALOG_PORT": "0", "FOODMESH_CATALOG_METRICS_PORT": "0",
            "FOODMESH_ORDER_PORT": "0", "FOODMESH_ORDER_METRICS_PORT": "0",
        })  # fmt: skip
        async with server_process(sys.executable, __file__, "--serve", "catalog") as cat:
            await _seed(cat.target)
            os.environ["FOODMESH_ORDER_CATALOG_TARGET"] = cat.target
            async with server_process(sys.executable, __file__, "--serve", "order") as srv:
                clients = [OrderClient(srv.target, options=_opts("customer", f"cus_{i}"))
                           for i in range(callers)]  # fmt: skip
                try:
                    for i, c in enumerate(clients[:8]):  # warm up
                        await c.place_order(_request(f"warm-{i}"))
                    ids = itertools.count()
                    sample = pb.Order()

                    async def ours() -> None:
                        n = next(ids)
                        reply = await clients[n % callers].place_order(_request(f"k-{n}"))
                        sample.CopyFrom(reply.order)

                    cpu0, ccpu0 = srv.cpu_seconds(), cat.cpu_seconds()
                    ours_result = await closed_loop(
                        ours, concurrency=callers, duration=duration,
                        progress=Progress(f"PlaceOrder x{callers}"),
                    )  # fmt: skip
                    cpu1, ccpu1 = srv.cpu_seconds(), cat.cpu_seconds()
                    open_result = None
                    if rate > 0:  # the target's latency: orders arriving on schedule
                        await asyncio.sleep(1.0)
                        open_result = await open_loop(
                            ours, rate=rate, duration=duration,
                            progress=Progress(f"PlaceOrder at {rate:g}/s"),
                        )  # fmt: skip
                finally:
                    for c in clients:
                        await c.close()
                body = json.dumps({"order": str(sample)})
                published = await _published(pg_url)
        raw_result = await _raw(pg_url, body, callers=callers, duration=duration)

    def cpu(a: float | None, b: float | None) -> float | None:
        if a is None or b is None or not ours_result.ok:
            return None
        return round((b - a) / ours_result.ok * 1000, 3)

    ours_fig, raw_fig = ours_result.as_dict(), raw_result.as_dict()
    ours_fig["order_cpu_ms_per_call"] = cpu(cpu0, cpu1)
    ours_fig["catalog_cpu_ms_per_call"] = cpu(ccpu0, ccpu1)
    open_fig = open_result.as_dict() if open_result is not None else None
    return {
        "benchmark": "order",
        "machine": machine(),
        "date": now_iso(),
        "settings": {"callers": callers, "duration_s": duration, "pg_pool": 10, "rate": rate,
                     "servers": "catalog and order in subprocesses, callers in this one"},
        "raw": raw_fig,
        "ours": ours_fig,
        "open_loop": open_fig,
        "outbox": published,
        "ratio": {
            "throughput": ratio(ours_result.rate, raw_result.rate),
            "p50": ratio(ours_result.p50_ms, raw_result.p50_ms),
            "p99": ratio(ours_result.p99_ms, raw_result.p99_ms),
        },
    }  # fmt: skip


async def _published(pg_url: str) -> dict[str, int]:
    row: tuple[Any, ...] | None = None
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for _ in range(100):  # let the relay drain
            cur = await conn.execute("SELECT count(*) FILTER (WHERE published_at IS NULL),"
                                     " count(*) FROM orders.outbox")  # fmt: skip
            row = await cur.fetchone()
            assert row is not None
            if row[0] == 0:
                break
            await asyncio.sleep(0.1)
    assert row is not None
    return {"pending": int(row[0]), "events": int(row[1])}


async def _raw(pg_url: str, body: str, *, callers: int, duration: float) -> LatencyResult:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE bench_raw (id uuid PRIMARY KEY, body jsonb NOT NULL)")
    pool = AsyncConnectionPool(pg_url, min_size=10, max_size=10, open=False)
    await pool.open(wait=True)
    try:

        async def raw() -> None:
            async with pool.connection() as c, c.transaction():
                await c.execute("INSERT INTO bench_raw (id, body) VALUES (%s, %s)",
                                (uuid.uuid4(), body))  # fmt: skip

        return await closed_loop(raw, concurrency=callers, duration=duration,
                                 progress=Progress(f"raw INSERT x{callers}"))  # fmt: skip
    finally:
        await pool.close()


def _report(result: dict[str, Any], took: float) -> None:
    s = result["settings"]
    rows = []
    for name, key in (("raw single-row INSERT transaction", "raw"), ("PlaceOrder", "ours")):
        f = result[key]
        rows.append([name, f["rate"], f["p50_ms"], f["p99_ms"], f["max_ms"], f["errors"],
                     f.get("order_cpu_ms_per_call"), f.get("catalog_cpu_ms_per_call")])  # fmt: skip
    print_table(
        f"PlaceOrder: {s['callers']} closed-loop callers for {s['duration_s']:g}s, "
        f"{result['machine']['cpus']} cpus, {took:.0f}s in all",
        ["path", "per s", "p50 ms", "p99 ms", "max ms", "errors", "order CPU ms", "catalog CPU ms"],
        rows,
    )
    if (f := result.get("open_loop")) is not None:
        print_table(
            f"PlaceOrder open loop at {s['rate']:g}/s for {s['duration_s']:g}s (latency from"
            " each call's scheduled time)",
            ["per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "dropped", "late"],
            [[f["rate"], f["p50_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"], f["errors"],
              f["dropped"], f["late"]]],
        )  # fmt: skip
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in result["ratio"].items()])
    o = result["outbox"]
    print(f"\noutbox: {o['events']} events, {o['pending']} still pending after the run")


def _report_search(result: dict[str, Any]) -> None:
    from benchmarks import catalog as catalog_bench

    catalog_bench._report(result, result.get("took_s", 0.0))


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--callers", type=int, default=64)
    p.add_argument("--restaurants", type=int, default=10_000, help="for the search phase")
    p.add_argument("--search-rate", type=float, default=200.0, help="searches per second")
    p.add_argument("--no-search", action="store_true", help="PlaceOrder only")
    p.add_argument("--serve", choices=["catalog", "order"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    duration = args.duration or (4.0 if args.quick else 30.0)
    t0 = time.perf_counter()
    rate = 300.0 if args.rate is None else args.rate  # the target; 0 skips the open loop
    saved = dict(os.environ)
    try:
        result = asyncio.run(run(callers=args.callers, duration=duration, rate=rate))
    finally:  # run() points FOODMESH_*_URL at servers that are gone now
        os.environ.clear()
        os.environ.update(saved)
    took = time.perf_counter() - t0
    if not args.no_search:
        from benchmarks import catalog as catalog_bench

        t1 = time.perf_counter()
        n = min(args.restaurants, 3000) if args.quick else args.restaurants
        search = asyncio.run(catalog_bench.run(n=n, rate=args.search_rate,
                                               duration=4.0 if args.quick else 20.0))  # fmt: skip
        search["took_s"] = round(time.perf_counter() - t1, 1)
        result["search"] = search
    if args.json:
        emit_json(result)
    else:
        _report(result, took)
        if "search" in result:
            print()
            _report_search(result["search"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
