"""``foodmesh sim [run]``: a living city against the running platform; ``sim history``: order
history for ETA training, offline."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foodmesh.commands._common import CliError, auth

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    """``foodmesh sim [run]`` (the default) and room for more (``sim history``)."""
    from foodmesh.services import KNOWN

    ports = {s.name: s.grpc_port for s in KNOWN}
    gw = f"http://127.0.0.1:{os.environ.get('FOODMESH_GATEWAY_PORT', '8080')}"

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", default=gw, help=f"the HTTP gateway's URL (default {gw})")
        p.add_argument("--location-target", default=f"127.0.0.1:{ports['location']}",
                       help="Location's gRPC address (drivers' fixes)")  # fmt: skip
        p.add_argument("--dispatch-target", default=None,
                       help="Dispatch's gRPC address (default 127.0.0.1:<its port> when the"
                       " service exists; 'none': drivers only stream fixes)")  # fmt: skip
        p.add_argument("--seed", type=int, default=7, help="the city's seed, as seeded (default 7)")
        p.add_argument("--restaurants", type=int, default=500, help="as seeded (default 500)")
        p.add_argument("--drivers", type=int, default=600, help="drivers on the road (default 600)")
        p.add_argument("--customers", type=int, default=2000, help="(default 2000)")
        p.add_argument(
            "--orders-per-hour",
            type=float,
            default=200.0,
            help="the week's mean rate; the daily curve shapes it (default 200)",
        )
        p.add_argument("--flat", action="store_true", help="a flat rate, no daily curve")
        p.add_argument(
            "--duration",
            type=_duration,
            default=600.0,
            help="how long to run: seconds, or 45m, 1h; 0 runs until Ctrl-C (default 600)",
        )
        p.add_argument("--report", choices=("eta",), default=None,
                       help="at the end, print a report read from the platform: eta (the "
                       "promise's error per stage, from the Order database)")  # fmt: skip
        p.add_argument("--report-after", type=_duration, default=None,
                       help="count orders delivered this long after the start (default 30m, "
                       "or half a shorter run)")  # fmt: skip
        p.add_argument("--no-shifts", action="store_true", help="every driver works now")
        p.add_argument(
            "--prep-scale",
            type=float,
            default=1.0,
            help="multiply kitchen times (below 1: faster kitchens)",
        )
        p.add_argument(
            "--travel-scale",
            type=float,
            default=1.0,
            help="multiply travel times (below 1: faster drives)",
        )
        p.add_argument(
            "--bad-share",
            type=float,
            default=0.02,
            help="share of customers and drivers who misbehave on purpose",
        )
        p.add_argument(
            "--silent-share",
            type=float,
            default=0.03,
            help="share of drivers who go silent mid-delivery",
        )
        p.add_argument(
            "--auto-confirm-share",
            type=float,
            default=0.3,
            help="share of restaurants that confirm orders automatically",
        )
        p.add_argument(
            "--absent-kitchen-share",
            type=float,
            default=0.01,
            help="share of restaurants that never confirm (their orders time out)",
        )
        p.add_argument(
            "--straight", action="store_true", help="straight lines instead of the road graph"
        )
        p.add_argument(
            "--record",
            metavar="TRACE.json",
            help="write what was generated as a foodmesh-trace/1 file",
        )
        p.add_argument("--json", action="store_true", help="print the final counts as JSON")
        p.add_argument("--health-port", type=int, default=0,
                       help="serve GET /healthz with the live counters on this port")  # fmt: skip
        p.add_argument(
            "--wait",
            type=float,
            default=120.0,
            help="seconds to wait for the gateway's /readyz first (0: do not wait)",
        )

    sim = sub.add_parser("sim", help="a living city against the running platform (run, ...)")
    run_args(sim)
    sim_sub = sim.add_subparsers(dest="sim_command")
    run_args(sim_sub.add_parser("run", help="customers, kitchens and drivers in real time"))
    # `foodmesh sim history` is added here, on sim_sub.
    hist = sim_sub.add_parser("history", help="order history for ETA training (offline, fast)")
    hist.add_argument("--orders", type=int, default=100_000, help="deliveries to generate")
    hist.add_argument("--out", required=True, help="file to write (.npz, or .csv)")
    hist.add_argument("--seed", type=int, default=0, help="same seed, same history")
    hist.add_argument("--days", type=int, default=56, help="days the history spans")


def _duration(text: str) -> float:
    """Seconds from ``600``, ``90s``, ``45m`` or ``1h``."""
    t = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(t[-1:], None)
    try:
        value = float(t[:-1]) * scale if scale is not None else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (600, 90s, 45m, 1h)") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a duration must not be negative: {text!r}")
    return value


async def _eta_report(args: argparse.Namespace, started: Any) -> None:
    """The ETA report over the run: each stage's error on orders delivered after warm-up."""
    import dataclasses
    import datetime as dt
    import json

    from foodmesh.commands._common import state_dir, urls
    from servers.order.eta_stages import report

    ended = dt.datetime.now(dt.UTC)
    run_s = (ended - started).total_seconds()
    after = args.report_after if args.report_after is not None else min(1800.0, run_s / 2)
    pg = os.environ.get("FOODMESH_POSTGRES_URL") or (await urls(state_dir(args)))[
        "FOODMESH_POSTGRES_URL"]  # fmt: skip
    since = started + dt.timedelta(seconds=after)
    rows = await report(pg, since=since, until=ended)
    targets = {"placement": (3.0, 6.0), "pickup": (1.5, None)}
    if args.json:
        print(json.dumps({"report": "eta", "run_s": round(run_s), "after_s": after,
                          "stages": [dataclasses.asdict(r) for r in rows]}))  # fmt: skip
        return
    print(
        f"ETA report: orders delivered from {after / 60:.0f} min into the run to its end "
        f"({run_s / 60:.0f} min); targets: placement MAE < 3, p90 < 6, 80% coverage "
        "75-85 %; pickup MAE < 1.5 (minutes)"
    )
    print(f"{'stage':<13}{'orders':>7}{'MAE':>7}{'p90':>7}{'bias':>7}{'cover80':>9}  target")
    for r in rows:
        mae_t, p90_t = targets.get(r.stage, (None, None))
        cov = f"{r.coverage80 * 100:.0f}%" if r.coverage80 is not None else "-"
        ok = []
        if mae_t is not None:
            ok.append("MAE " + ("ok" if r.mae_min < mae_t else "MISSED"))
        if p90_t is not None:
            ok.append("p90 " + ("ok" if r.p90_min < p90_t else "MISSED"))
        if r.stage == "placement" and r.coverage80 is not None:
            ok.append("cover " + ("ok" if 0.75 <= r.coverage80 <= 0.85 else "MISSED"))
        print(
            f"{r.stage:<13}{r.orders:>7}{r.mae_min:>7.2f}{r.p90_min:>7.2f}{r.bias_min:>7.2f}"
            f"{cov:>9}  {', '.join(ok)}"
        )
    if not rows:
        print("no delivered orders with recorded estimates in the window")


async def _sim_health(port: int, stats: Any) -> Any:
    """``GET /healthz`` with the live counters, for Kubernetes' probes (``--health-port``)."""
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **stats.as_json()})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, os.environ.get("FOODMESH_HOST", "127.0.0.1"), port).start()
    return runner


async def _sim_run(args: argparse.Namespace) -> int:
    import json
    import signal
    import time

    from foodmesh.services import KNOWN, available
    from foodmesh.sim.agents import SimConfig, Stats
    from foodmesh.sim.run import SimConfigError, run_sim, upsert_drivers, wait_for_gateway

    dispatch: str | None = args.dispatch_target
    if dispatch is None and "dispatch" in {s.name for s in available()}:
        dispatch = f"127.0.0.1:{next(s.grpc_port for s in KNOWN if s.name == 'dispatch')}"
    if dispatch in ("", "none"):
        dispatch = None
    config = SimConfig(
        gateway=args.gateway, location_target=args.location_target, dispatch_target=dispatch,
        seed=args.seed, restaurants=args.restaurants, drivers=args.drivers,
        customers=args.customers, orders_per_hour=args.orders_per_hour, flat_demand=args.flat,
        duration_s=args.duration, shifts=not args.no_shifts, prep_scale=args.prep_scale,
        travel_scale=args.travel_scale, bad_share=args.bad_share,
        silent_share=args.silent_share, roads=not args.straight,
        auto_confirm_share=args.auto_confirm_share,
        absent_kitchen_share=args.absent_kitchen_share,
        auth_secret=auth("sim").secret,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if config.problems():
            raise SimConfigError(config.problems())
        if args.wait > 0 and not await wait_for_gateway(
            config.gateway, within_s=args.wait, stop=stop
        ):
            if stop.is_set():
                return 130
            raise CliError(
                f"sim: the gateway at {config.gateway} is not ready after {args.wait:g}s"
            )
        if dispatch is not None:
            await upsert_drivers(config, dispatch)
        import datetime as dt

        stats = Stats(started=time.monotonic())
        started = dt.datetime.now(dt.UTC)
        health = await _sim_health(args.health_port, stats) if args.health_port else None
        try:
            result = await run_sim(config, record=args.record, stop=stop, stats=stats)
        finally:
            if health is not None:
                await health.cleanup()
    except SimConfigError as exc:
        raise CliError(f"sim: {exc}") from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if args.report == "eta":
        await _eta_report(args, started)
    if args.json:
        print(json.dumps({**result.stats.as_json(), "roads": result.roads,
                          "trace": str(result.trace_path or "")}))  # fmt: skip
    elif result.trace_path is not None:
        print(f"trace: {result.trace_path} ({result.orders_recorded} orders)")
    return 0


async def _sim_history(args: argparse.Namespace) -> int:
    from foodmesh.roads import RoadGraph
    from foodmesh.sim import history

    if args.orders < 1 or args.days < 7:
        raise CliError("sim history: --orders must be at least 1 and --days at least 7")
    graph = await asyncio.to_thread(RoadGraph.default)
    h = await asyncio.to_thread(history.generate, graph, orders=args.orders, seed=args.seed,
                                days=args.days, progress=print)  # fmt: skip
    path = history.save(h, Path(args.out))
    print(f"wrote {len(h['order_ts']):,} orders to {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {None: _sim_run, "run": _sim_run, "history": _sim_history}
    return asyncio.run(handlers[args.sim_command](args))
