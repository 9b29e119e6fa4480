"""QuoteOrder and cached GetSurge with 64 concurrent callers, against a raw Redis read.

Servers: the Catalog, Location and Pricing services, each in its own process with
production defaults (surge cached 60 s per cell, Catalog answers 2 s), on real
PostgreSQL, Redis and NATS started by the benchmark; one restaurant with a menu and
a delivery zone, and 20 available drivers streaming positions in its cell.

Load: ``--callers`` (default 64) closed-loop callers quoting a two-line cart back to
back for ``--duration`` s (default 10): the throughput ceiling; the same callers
asking GetSurge (cached) as long, in ``--rounds`` (3) alternating rounds. Then
``--rate`` (default 1000, the target) quotes a second arrive on schedule (open
loop): the latencies the target's p99 < 20 ms is about.

Baseline: the same callers running ``GET`` of the cell's cached surge entry straight
from Redis with redis-py in this process: the floor of "read a cached surge". The
ratios say what gRPC, auth, the Catalog cache, fees, tax and storing the quote cost.

**Pricing CPU µs/call** is the main figure: the Pricing process's user + system CPU
(all threads, from ``/proc``) over a phase, divided by the calls it served. Unlike
throughput it hardly depends on what else the (shared) machine runs, and GetSurge's
figure is the floor every call pays (gRPC, the interceptor, auth, metrics), so
QuoteOrder minus GetSurge is what pricing a quote itself costs.

``--channels N`` lets the callers share N gRPC channels (default: one each).
``FOODMESH_BENCH_PROFILE=/tmp/p.prof`` runs the Pricing server under cProfile;
``FOODMESH_BENCH_SERVER_LOG=/tmp/bench`` keeps each server's log as ``/tmp/bench.<name>``.

    python benchmarks/pricing.py            # ~50 s
    python benchmarks/pricing.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402

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
from clients import CatalogClient, ClientOptions, LocationClient, PricingClient  # noqa: E402
from foodmesh.core.auth import DEV_SECRET, bearer, mint_token  # noqa: E402
from foodmesh.v1 import catalog_pb2 as cpb  # noqa: E402
from foodmesh.v1 import common_pb2, location_pb2  # noqa: E402
from foodmesh.v1 import pricing_pb2 as pb  # noqa: E402
from servers import catalog, location, pricing  # noqa: E402
from servers.runtime.migrate import load_migrations, migrate  # noqa: E402

NAMESPACE = "bench"
CALL_TIMEOUT_S = 10.0
REST = (37.7755, -122.4183)
SPECS = {"catalog": catalog.SPEC, "location": location.SPEC, "pricing": pricing.SPEC}


async def _serve(name: str) -> None:
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env(name, {**os.environ, "FOODMESH_SHUTDOWN_GRACE_S": "2"})
    configure_logging(settings.log_level)
    if keep := os.environ.get("FOODMESH_BENCH_SERVER_LOG"):  # a copy of each server's log
        logging.getLogger().addHandler(logging.FileHandler(f"{keep}.{name}"))
    async with run_service(SPECS[name], settings) as running:
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


async def _drivers(target: str, n: int = 20) -> None:
    """``n`` available drivers in the restaurant's cell (one fix each, the index keeps them)."""
    for i in range(n):
        async with LocationClient(target, options=_opts("driver", f"drv_{i}")) as c:
            req = location_pb2.UpdateLocationRequest(lat=REST[0] + i * 1e-4, lon=REST[1])
            req.timestamp.GetCurrentTime()
            await c.update_location(req)


def _quote() -> pb.QuoteOrderRequest:
    return pb.QuoteOrderRequest(
        customer_id="cus_1", restaurant_id="rest_1",
        items=[pb.QuoteItem(item_id="pizza", quantity=1, customizations=["large"]),
               pb.QuoteItem(item_id="salad", quantity=2)],
        delivery_address=common_pb2.Address(street="456 Mission St", state="CA", zip="94105",
                                            lat=37.7749, lon=-122.4194),
    )  # fmt: skip


async def run(
    *, callers: int, channels: int, duration: float, rate: float, rounds: int
) -> dict[str, Any]:
    async with bench_infra("pricing") as urls:
        pg_url = await fresh_database(urls.postgres_url, "pricing")
        for spec in SPECS.values():
            assert spec.migrations is not None
            await migrate(pg_url, service=spec.name, migrations=load_migrations(spec.migrations))
        state = tempfile.mkdtemp(prefix="foodmesh-bench-pricing-loc-")
        os.environ.update({
            "FOODMESH_POSTGRES_URL": pg_url, "FOODMESH_REDIS_URL": urls.redis_url,
            "FOODMESH_NATS_URL": urls.nats_url, "FOODMESH_NAMESPACE": NAMESPACE,
            "FOODMESH_LOCATION_STATE_DIR": state,
            **{f"FOODMESH_{n.upper()}_{k}": "0" for n in SPECS for k in ("PORT", "METRICS_PORT")},
        })  # fmt: skip
        async with (
            server_process(sys.executable, __file__, "--serve", "catalog") as cat,
            server_process(sys.executable, __file__, "--serve", "location") as loc,
        ):
            await _seed(cat.target)
            await _drivers(loc.target)
            os.environ["FOODMESH_PRICING_CATALOG_TARGET"] = cat.target
            os.environ["FOODMESH_PRICING_LOCATION_TARGET"] = loc.target
            async with server_process(sys.executable, __file__, "--serve", "pricing") as srv:
                clients = [PricingClient(srv.target, options=_opts("service", f"order_{i}"))
                           for i in range(channels or callers)]  # fmt: skip
                try:
                    first = (await clients[0].quote_order(_quote())).quote
                    for c in clients[:8]:  # warm up
                        await c.quote_order(_quote())
                    n = 0

                    async def quote() -> None:
                        nonlocal n
                        n += 1
                        await clients[n % len(clients)].quote_order(_quote())

                    at = pb.GetSurgeRequest(lat=REST[0], lon=REST[1])

                    async def surge() -> None:
                        nonlocal n
                        n += 1
                        await clients[n % len(clients)].get_surge(at)

                    # Closed loop in alternating rounds of QuoteOrder and GetSurge, so both
                    # see the same (shared, noisy) machine and their CPU figures compare.
                    parts: dict[str, list[LatencyResult]] = {"quote": [], "surge": []}
                    cpu = {"quote": 0.0, "surge": 0.0}
                    for r in range(rounds):
                        for key, call, name in (("quote", quote, "QuoteOrder"),
                                                ("surge", surge, "GetSurge")):  # fmt: skip
                            label = f"{name} x{callers} ({r + 1}/{rounds})"
                            before = srv.cpu_seconds() or 0.0
                            parts[key].append(await closed_loop(
                                call, concurrency=callers, duration=duration / rounds,
                                progress=Progress(label)))  # fmt: skip
                            cpu[key] += (srv.cpu_seconds() or 0.0) - before
                    closed = LatencyResult.combine(parts["quote"])
                    surged = LatencyResult.combine(parts["surge"])
                    opened = None
                    cpu_open = cpu_callers = 0.0
                    if rate > 0:
                        await asyncio.sleep(1.0)
                        label = f"QuoteOrder at {rate:g}/s"
                        before, mine = srv.cpu_seconds() or 0.0, time.process_time()
                        opened = await open_loop(quote, rate=rate, duration=duration,
                                                 progress=Progress(label))  # fmt: skip
                        cpu_open = (srv.cpu_seconds() or 0.0) - before
                        cpu_callers = time.process_time() - mine
                finally:
                    for c in clients:
                        await c.close()
        raw = await _raw(urls.redis_url, first.surge.cell, callers=callers, duration=duration)
    ours = closed.as_dict()
    ours["pricing_cpu_us_per_call"] = _per_call(cpu["quote"], closed.ok)
    got_surge = surged.as_dict()
    got_surge["pricing_cpu_us_per_call"] = _per_call(cpu["surge"], surged.ok)
    return {
        "benchmark": "pricing",
        "machine": machine(),
        "date": now_iso(),
        "settings": {"callers": callers, "channels": channels or callers, "rounds": rounds,
                     "duration_s": duration, "rate": rate,
                     "servers": "catalog, location and pricing in subprocesses, callers here"},
        "sample_quote": {"total": first.total.amount_minor, "surge": first.surge.multiplier,
                         "supply": first.surge.supply, "lines": len(first.lines)},
        "raw": raw.as_dict(),
        "ours": ours,
        "open_loop": None if opened is None else {
            **opened.as_dict(), "pricing_cpu_us_per_call": _per_call(cpu_open, opened.ok),
            # The callers' own process (gRPC client, protobuf, scheduling) shares the cores.
            "callers_cpu_us_per_call": _per_call(cpu_callers, opened.ok)},
        "get_surge": got_surge,
        "ratio": {
            "quote_throughput": ratio(closed.rate, raw.rate),
            "quote_p50": ratio(closed.p50_ms, raw.p50_ms),
            "quote_p99": ratio(closed.p99_ms, raw.p99_ms),
            "get_surge_p99": ratio(surged.p99_ms, raw.p99_ms),
        },
    }  # fmt: skip


def _per_call(cpu_s: float, calls: int) -> float | None:
    """Microseconds of the Pricing process's CPU (all threads) per call of a phase."""
    if not calls or not cpu_s:
        return None
    return round(cpu_s / calls * 1e6, 1)


async def _raw(redis_url: str, cell: str, *, callers: int, duration: float) -> Any:
    client = aioredis.Redis.from_url(redis_url, max_connections=callers)
    keys = [k async for k in client.scan_iter(match=f"{NAMESPACE}:surge:*{cell}*", count=1000)]
    key = keys[0] if keys else f"{NAMESPACE}:surge:missing"
    try:

        async def raw() -> None:
            await client.get(key)

        return await closed_loop(raw, concurrency=callers, duration=duration,
                                 progress=Progress(f"raw Redis GET x{callers}"))  # fmt: skip
    finally:
        await client.aclose()


def _report(result: dict[str, Any], took: float) -> None:
    s = result["settings"]
    rows = []
    for name, key in (("raw Redis GET of the cached surge", "raw"), ("QuoteOrder", "ours"),
                      ("GetSurge (cached)", "get_surge")):  # fmt: skip
        f = result[key]
        rows.append([name, f["rate"], f["p50_ms"], f["p99_ms"], f["max_ms"], f["errors"],
                     f.get("pricing_cpu_us_per_call")])  # fmt: skip
    print_table(
        f"Pricing: {s['callers']} closed-loop callers for {s['duration_s']:g}s, "
        f"{result['machine']['cpus']} cpus, {took:.0f}s in all",
        ["path", "per s", "p50 ms", "p99 ms", "max ms", "errors", "Pricing CPU µs/call"],
        rows,
    )
    if (f := result.get("open_loop")) is not None:
        print_table(
            f"QuoteOrder open loop at {s['rate']:g}/s for {s['duration_s']:g}s (latency from"
            " each call's scheduled time)",
            ["per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "dropped", "late",
             "Pricing CPU µs/call", "callers' CPU µs/call"],
            [[f["rate"], f["p50_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"], f["errors"],
              f["dropped"], f["late"], f.get("pricing_cpu_us_per_call"),
              f.get("callers_cpu_us_per_call")]],
        )  # fmt: skip
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in result["ratio"].items()])
    print(f"\nsample quote: {result['sample_quote']}")


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--callers", type=int, default=64)
    p.add_argument(
        "--channels",
        type=int,
        default=0,
        help="gRPC channels the callers share (default: one per caller)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating QuoteOrder/GetSurge rounds the closed-loop time is cut in",
    )
    p.add_argument("--serve", choices=sorted(SPECS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        profile = os.environ.get("FOODMESH_BENCH_PROFILE")
        if profile and args.serve == "pricing":  # where the Pricing server's time goes
            import cProfile

            cProfile.runctx("asyncio.run(_serve(args.serve))", globals(), locals(), profile)
            return 0
        asyncio.run(_serve(args.serve))
        return 0
    duration = args.duration or (3.0 if args.quick else 10.0)
    t0 = time.perf_counter()
    rate = 1000.0 if args.rate is None else args.rate
    result = asyncio.run(
        run(
            callers=args.callers,
            channels=args.channels,
            duration=duration,
            rate=rate,
            rounds=max(1, args.rounds),
        )
    )
    if args.json:
        emit_json(result)
    else:
        _report(result, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
