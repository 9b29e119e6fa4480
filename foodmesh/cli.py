"""The `foodmesh` command: infra, migrate, gen, lint-proto, serve, up, status.

Expected failures (a bad setting, a server that does not answer, a port in
use) print one line that names the problem and what to do, and exit 1; only
bugs print a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from foodmesh import __version__
from foodmesh.core.auth import (
    MAX_SERVICE_TOKEN_S,
    ROLES,
    AuthConfigError,
    AuthSettings,
    auth_settings,
    mint_service_token,
    mint_token,
)

__all__ = ["main"]

_log = logging.getLogger("foodmesh.cli")
_URL_VARS = ("FOODMESH_POSTGRES_URL", "FOODMESH_REDIS_URL", "FOODMESH_NATS_URL")


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


def _state_dir(args: argparse.Namespace) -> Path:
    raw = args.state_dir or os.environ.get("FOODMESH_STATE_DIR") or ".foodmesh"
    return Path(raw).absolute()


async def _urls(state_dir: Path) -> dict[str, str]:
    """Server URLs from the environment, else from the infra running under ``state_dir``."""
    if all(os.environ.get(v) for v in _URL_VARS):
        return {v: os.environ[v] for v in _URL_VARS}
    from foodmesh import infra

    st = await infra.status(state_dir)
    urls = st.urls if st.all_running else None
    if urls is None:
        raise CliError(
            f"no running infrastructure under {state_dir}: start it with `foodmesh infra up`, "
            "or set " + ", ".join(_URL_VARS)
        )
    found = {
        "FOODMESH_POSTGRES_URL": urls.postgres_url,
        "FOODMESH_REDIS_URL": urls.redis_url,
        "FOODMESH_NATS_URL": urls.nats_url,
    }
    return {v: os.environ.get(v) or found[v] for v in _URL_VARS}


# ---------------------------------------------------------------- infra


async def _infra(args: argparse.Namespace) -> int:
    from foodmesh import infra

    state = _state_dir(args)
    if args.action == "up":
        if all(os.environ.get(v) for v in _URL_VARS):
            print("using the servers named by FOODMESH_*_URL; nothing to start")
            for v in _URL_VARS:
                print(f"export {v}={os.environ[v]}")
            return 0
        started = asyncio.get_running_loop().time()
        env = dict(os.environ)
        if args.clusters:
            from foodmesh.infra.cluster import LocalNatsCluster, LocalRedisCluster

            redis, nats = LocalRedisCluster(state.absolute()), LocalNatsCluster(state.absolute())
            try:  # a failed start leaves no node of either cluster running
                env["FOODMESH_REDIS_URL"], env["FOODMESH_NATS_URL"] = await asyncio.gather(
                    redis.up(), nats.up()
                )
                urls = await infra.up(state, env=env)
            except BaseException:
                await asyncio.to_thread(redis.down)
                await asyncio.to_thread(nats.down)
                raise
        else:
            urls = await infra.up(state, env=env)
        took = asyncio.get_running_loop().time() - started
        what = "redis cluster and nats cluster" if args.clusters else "redis and nats"
        print(f"# postgres, {what} ready in {took:.2f}s (state in {state})")
        print(f"export FOODMESH_POSTGRES_URL={urls.postgres_url}")
        print(f"export FOODMESH_REDIS_URL={urls.redis_url}")
        print(f"export FOODMESH_NATS_URL={urls.nats_url}")
        if args.clusters:
            print("export FOODMESH_NATS_REPLICAS=3")
        return 0
    if args.action == "down":
        await infra.down(state)
        print(f"stopped everything under {state}")
        return 0
    st = await infra.status(state)
    print(infra.format_status(st) if hasattr(infra, "format_status") else st)
    return 0 if st.all_running else 3


# ---------------------------------------------------------------- migrate


async def _migrate_services(names: Sequence[str], postgres_url: str) -> int:
    from foodmesh.services import load_spec
    from servers.runtime.migrate import load_migrations, migrate

    total = 0
    for name in names:
        spec = load_spec(name)
        if spec.migrations is None:
            continue
        applied = await migrate(
            postgres_url, service=name, migrations=load_migrations(spec.migrations)
        )
        for m in applied:
            print(f"{name}: applied {m.version:04d}_{m.name}")
        total += len(applied)
    return total


async def _migrate(args: argparse.Namespace) -> int:
    from foodmesh.services import available

    names = args.services or [s.name for s in available()]
    absent = sorted(set(names) - {s.name for s in available()})
    if absent:
        have = ", ".join(s.name for s in available()) or "none yet"
        raise CliError(f"no service named {', '.join(absent)} (available: {have})")
    urls = await _urls(_state_dir(args))
    total = await _migrate_services(names, urls["FOODMESH_POSTGRES_URL"])
    print(f"migrations up to date ({total} applied now, services: {', '.join(names) or 'none'})")
    return 0


# ---------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    if args.service == "gateway":  # HTTP, not a gRPC service: its own server
        from gateway import main as gateway_main

        return gateway_main()
    if args.service == "dashboard":  # HTTP too: the ops dashboard
        from dashboard import main as dashboard_main

        if not os.environ.get("FOODMESH_NATS_URL"):
            os.environ.update(asyncio.run(_urls(_state_dir(args))))
        return dashboard_main()
    from foodmesh.services import KNOWN, load_spec
    from servers.runtime.serve import serve

    try:
        spec = load_spec(args.service)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if not all(os.environ.get(v) for v in _URL_VARS):
        os.environ.update(asyncio.run(_urls(_state_dir(args))))
    info = next(s for s in KNOWN if s.name == args.service)
    up = args.service.upper()
    os.environ.setdefault(f"FOODMESH_{up}_PORT", str(info.grpc_port))
    os.environ.setdefault(f"FOODMESH_{up}_METRICS_PORT", str(info.metrics_port))
    return serve(spec)


# ---------------------------------------------------------------- up / status


async def _up(args: argparse.Namespace) -> int:
    from foodmesh import infra
    from foodmesh.services import available
    from foodmesh.supervisor import ProcessSpec, Supervisor, python_argv

    # A laptop's platform: development mode (the dev secret unless one is set), said loudly
    # by each process; FOODMESH_DEV=0 with a real FOODMESH_AUTH_SECRET runs it otherwise.
    os.environ.setdefault("FOODMESH_DEV", "1")
    _auth("up")
    state = _state_dir(args)
    services = available()
    if args.services:
        wanted = set(args.services)
        unknown = wanted - {s.name for s in services}
        if unknown:
            raise CliError(f"unknown or absent services: {', '.join(sorted(unknown))}")
        services = [s for s in services if s.name in wanted]
    started_infra = False
    trainer: asyncio.subprocess.Process | None = None
    gateway_port = os.environ.get("FOODMESH_GATEWAY_PORT", "8080")
    if services and not args.no_gateway:
        # Before any log line: tools and people take the first URL they see.
        print(f"gateway: http://127.0.0.1:{gateway_port}", flush=True)
    if all(os.environ.get(v) for v in _URL_VARS):
        urls = {v: os.environ[v] for v in _URL_VARS}
    else:
        before = await infra.status(state)
        started_infra = not before.all_running
        u = await infra.up(state)
        urls = {
            "FOODMESH_POSTGRES_URL": u.postgres_url,
            "FOODMESH_REDIS_URL": u.redis_url,
            "FOODMESH_NATS_URL": u.nats_url,
        }
    for k, v in urls.items():
        print(f"{k}={v}")
    try:
        await _migrate_services([s.name for s in services], urls["FOODMESH_POSTGRES_URL"])
        specs = [
            ProcessSpec(
                name=s.name,
                argv=python_argv("serve", s.name),
                env={
                    **urls,
                    "FOODMESH_STATE_DIR": str(state),  # ETA's models live under it
                    f"FOODMESH_{s.name.upper()}_PORT": str(s.grpc_port),
                    f"FOODMESH_{s.name.upper()}_METRICS_PORT": str(s.metrics_port),
                    # where each of the others listens: FOODMESH_ORDER_PRICING_TARGET, ...
                    **{
                        f"FOODMESH_{s.name.upper()}_{t.name.upper()}_TARGET": (
                            f"127.0.0.1:{t.grpc_port}"
                        )
                        for t in services
                        if t is not s
                    },
                },
                grpc_port=s.grpc_port,
            )
            for s in services
        ]
        if services and not args.no_gateway:  # last: it answers /readyz once they serve
            specs.append(
                ProcessSpec(
                    name="gateway",
                    argv=python_argv("serve", "gateway"),
                    env={
                        **urls,  # Redis: the rate limits' buckets
                        "FOODMESH_GATEWAY_PORT": gateway_port,
                        "FOODMESH_GATEWAY_METRICS_PORT": os.environ.get(
                            "FOODMESH_GATEWAY_METRICS_PORT", "9100"
                        ),
                        # per-IP limits per simulated customer (each sends X-Forwarded-For),
                        # as behind a real load balancer
                        "FOODMESH_GATEWAY_TRUST_FORWARDED_FOR": "1",
                        "FOODMESH_GATEWAY_SERVICES": ",".join(s.name for s in services),
                        **{
                            f"FOODMESH_GATEWAY_{s.name.upper()}_TARGET": f"127.0.0.1:{s.grpc_port}"
                            for s in services
                        },
                    },
                    http_url=f"http://127.0.0.1:{gateway_port}/readyz",
                )
            )
        dashboard_port = os.environ.get("FOODMESH_DASHBOARD_PORT", "8090")
        if services and not args.no_dashboard:
            specs.append(
                ProcessSpec(
                    name="dashboard",
                    argv=python_argv("serve", "dashboard"),
                    env={
                        **urls,
                        "FOODMESH_DASHBOARD_PORT": dashboard_port,
                        **{
                            f"FOODMESH_DASHBOARD_{t.name.upper()}_TARGET": (
                                f"127.0.0.1:{t.grpc_port}"
                            )
                            for t in services
                        },
                    },
                    http_url=f"http://127.0.0.1:{dashboard_port}/healthz",
                )
            )
        simulate = bool(services) and not (args.no_sim or args.no_gateway or args.no_seed)
        if simulate:  # last: it waits for the gateway, then drives the city in real time
            specs.append(
                ProcessSpec(
                    name="sim",
                    argv=python_argv(
                        "sim", "run", "--gateway", f"http://127.0.0.1:{gateway_port}",
                        "--seed", str(args.seed), "--restaurants", str(args.restaurants),
                        "--drivers", str(args.drivers),
                        "--orders-per-hour", f"{args.orders_per_hour:g}", "--duration", "0",
                    ),
                    env={"FOODMESH_STATE_DIR": str(state)},
                )
            )  # fmt: skip
        if not specs:
            print("no services exist in this checkout yet; infrastructure is up (Ctrl-C stops)")
        supervisor = Supervisor(specs, state_dir=state, grace_s=args.grace)
        ready = asyncio.Event()
        runner = asyncio.create_task(supervisor.run(on_ready=ready))
        await asyncio.wait(
            [runner, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if ready.is_set():
            listening = [f"{s.name}:{s.grpc_port}" for s in services]
            if services and not args.no_gateway:
                listening.append(f"gateway http://127.0.0.1:{gateway_port}")
            if services and not args.no_dashboard:
                listening.append(f"dashboard http://127.0.0.1:{dashboard_port}")
            print("foodmesh is up: " + (", ".join(listening) or "infrastructure only"))
            secret = _auth("up").secret
            if services and not args.no_gateway:
                who = "cust_000000"  # the seed city's customer at the design's example point
                token = mint_token(secret, subject=who, role="customer", ttl_s=7 * 86400)
                print(f"customer page: http://127.0.0.1:{gateway_port}/app/#token={token}")
                print(f"test token ({who}, customer, 7 days): {token}")
            if services and not args.no_dashboard:
                ops = mint_token(secret, subject="ops_local", role="ops", ttl_s=7 * 86400)
                print(f"dashboard: http://127.0.0.1:{dashboard_port}/#token={ops}")
            print("`foodmesh status` shows health; Ctrl-C stops everything")
            if any(s.name == "eta" for s in services):
                trainer = await _first_eta_model(state)
            names = {s.name: s for s in services}
            if "catalog" in names and not args.no_seed:
                dispatch = names.get("dispatch")
                try:
                    await _seed_into(
                        args,
                        f"127.0.0.1:{names['catalog'].grpc_port}",
                        f"127.0.0.1:{dispatch.grpc_port}" if dispatch else None,
                    )
                except (grpc.aio.AioRpcError, CliError) as exc:  # the platform keeps running
                    _log.error("seeding the city failed: %s", exc)
        await runner
    finally:
        if trainer is not None and trainer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                trainer.terminate()
            await trainer.wait()
        if started_infra and not args.keep_infra:
            await infra.down(state)
            print("infrastructure stopped")
    return 0


def _has_model(models: Path) -> bool:
    return models.is_dir() and any(models.glob("eta-*.json"))


async def _first_eta_model(state: Path) -> asyncio.subprocess.Process | None:
    """Trains a first ETA model in the background if there is none (the first ``up``).

    The ETA service answers with its routing-only baseline meanwhile and loads the
    model as soon as the file appears. 20,000 simulated orders: about a minute here.
    """
    from foodmesh.supervisor import python_argv

    models = Path(os.environ.get("FOODMESH_ETA_MODEL_DIR") or state / "models")
    if await asyncio.to_thread(_has_model, models):
        return None
    print(f"training a first ETA model on 20,000 simulated orders (into {models}); "
          "the ETA service uses its baseline until it is ready")  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *python_argv(
            "--state-dir",
            str(state),
            "train-eta",
            "--source",
            "sim",
            "--orders",
            "20000",
            "--out",
            str(models),
        ),  # fmt: skip
        start_new_session=True,
    )


async def _status(args: argparse.Namespace) -> int:
    from foodmesh import infra
    from foodmesh.supervisor import as_json, read_status, status_table

    state = _state_dir(args)
    rows = await read_status(state)
    st = await infra.status(state)
    if args.json:
        print(as_json(rows))
    else:
        print(infra.format_status(st) if hasattr(infra, "format_status") else st)
        print()
        print(status_table(rows))
    ok = st.all_running and all(r.health == "SERVING" for r in rows)
    return 0 if ok else 3


# ---------------------------------------------------------------- seed


def _city_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=7, help="the city's random seed (default 7)")
    p.add_argument("--restaurants", type=int, default=500, help="how many (default 500)")
    p.add_argument("--drivers", type=int, default=600, help="how many (default 600)")


async def _seed_into(args: argparse.Namespace, catalog: str, dispatch: str | None) -> None:
    from foodmesh.sim.city import build_city
    from foodmesh.sim.seed import seed_city

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        city = build_city(seed=args.seed, restaurants=args.restaurants, drivers=args.drivers)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    r = await seed_city(city, catalog_target=catalog, dispatch_target=dispatch)
    skipped = f" (drivers skipped: {r.skipped_drivers})" if r.skipped_drivers else ""
    print(
        f"city {args.seed}: {r.restaurants} restaurants, {r.menus} menus, {r.drivers} drivers"
        f" in {loop.time() - t0:.1f}s{skipped}"
    )


async def _seed(args: argparse.Namespace) -> int:
    from foodmesh.services import KNOWN, available

    ports = {s.name: s.grpc_port for s in KNOWN}
    present = {s.name for s in available()}
    catalog = args.catalog_target or f"127.0.0.1:{ports['catalog']}"
    dispatch = args.dispatch_target or (
        f"127.0.0.1:{ports['dispatch']}" if "dispatch" in present else None
    )
    await _seed_into(args, catalog, dispatch)
    return 0


# ---------------------------------------------------------------- sim


def _sim_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
            type=float,
            default=600.0,
            help="seconds to run; 0 runs until Ctrl-C (default 600)",
        )
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
        auth_secret=_auth("sim").secret,
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
        stats = Stats(started=time.monotonic())
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


async def _sim(args: argparse.Namespace) -> int:
    handlers = {None: _sim_run, "run": _sim_run, "history": _sim_history}
    return await handlers[args.sim_command](args)


async def _train_eta(args: argparse.Namespace) -> int:
    import json

    from servers.eta.training import TrainConfig, train

    out = Path(args.out) if args.out else Path(
        os.environ.get("FOODMESH_ETA_MODEL_DIR") or _state_dir(args) / "models")  # fmt: skip
    if args.history:
        from foodmesh.sim import history

        try:
            h = history.load(Path(args.history))
        except Exception as exc:  # a missing, truncated or foreign file: say which, no trace
            raise CliError(f"train-eta: cannot read {args.history}: {exc}") from None
        source = f"file {args.history}"
    else:
        import psycopg

        from foodmesh.roads import RoadGraph
        from foodmesh.sim import history
        from servers.eta.order_history import MIN_ORDERS, load_order_history

        graph = await asyncio.to_thread(RoadGraph.default)
        real = None
        if args.source != "sim":
            try:
                pg = (await _urls(_state_dir(args)))["FOODMESH_POSTGRES_URL"]
                real = await load_order_history(pg, graph, progress=print)
            except CliError:
                if args.source == "db":
                    raise
            except (OSError, psycopg.Error) as exc:  # no database there, or not ours
                if args.source == "db":
                    raise CliError(f"train-eta: cannot read the Order database: {exc}") from None
            if real is None and args.source == "db":
                raise CliError(f"train-eta: the Order database has fewer than {MIN_ORDERS} "
                               "complete deliveries")  # fmt: skip
        if real is not None:
            h, source = real, "order database"
        else:
            h = await asyncio.to_thread(history.generate, graph, orders=args.orders,
                                        seed=args.seed, progress=print)  # fmt: skip
            source = f"simulator ({args.orders:,} orders, seed {args.seed})"
    config = TrainConfig(rounds=args.rounds, nthread=args.nthread, seed=args.seed)
    try:
        result = await asyncio.to_thread(
            train, h, out_dir=out, config=config, progress=print, source=source
        )
    except ValueError as exc:
        raise CliError(f"train-eta: {exc}") from None
    print(json.dumps(result.metrics["held_out"], indent=2))
    print(f"model {result.model.version} written to {result.path}")
    return 0


# ---------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foodmesh", description="Run and develop foodmesh.")
    p.add_argument("--version", action="version", version=f"foodmesh {__version__}")
    p.add_argument(
        "--state-dir",
        help="where servers keep their data (default: $FOODMESH_STATE_DIR or ./.foodmesh)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    inf = sub.add_parser("infra", help="start/stop the real PostgreSQL, Redis and NATS servers")
    inf.add_argument("action", choices=("up", "down", "status"))
    inf.add_argument(
        "--clusters",
        action="store_true",
        help="up: a Redis Cluster (3 primaries, 3 replicas) and a 3-node NATS JetStream "
        "cluster instead of single servers (`down` stops them too)",
    )

    mig = sub.add_parser("migrate", help="apply database migrations (safe to run concurrently)")
    mig.add_argument("services", nargs="*", help="services to migrate (default: all)")

    gen = sub.add_parser("gen", help="regenerate foodmesh/v1 stubs from proto/")
    gen.add_argument("--check", action="store_true", help="fail if committed stubs drift")

    lp = sub.add_parser("lint-proto", help="buf lint and buf breaking over proto/ (offline)")
    lp.add_argument("--against", help="a git commit to compare with (default: the merge base "
                    "with main, or the previous commit on main)")  # fmt: skip
    lp.add_argument("--no-breaking", action="store_true", help="only `buf lint`")

    srv = sub.add_parser("serve", help="run one service in the foreground")
    srv.add_argument("service")

    up = sub.add_parser("up", help="infrastructure + migrations + every service, supervised")
    up.add_argument("--services", nargs="*", help="only these services")
    up.add_argument("--grace", type=float, default=10.0, help="shutdown grace per process (s)")
    up.add_argument("--no-gateway", action="store_true", help="do not start the HTTP gateway")
    up.add_argument("--no-seed", action="store_true", help="do not write the simulated city")
    up.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    up.add_argument("--no-sim", action="store_true", help="do not run the city simulator")
    # Balanced with the drivers: about 40 % of them are on shift at the dinner peak, each
    # delivering ~2 orders an hour, against the peak's ~2.8× the week's mean rate.
    up.add_argument("--orders-per-hour", type=float, default=200.0,
                    help="the simulator's mean order rate over the week (default 200)")  # fmt: skip
    _city_args(up)
    up.add_argument(
        "--keep-infra", action="store_true", help="leave PostgreSQL/Redis/NATS running on exit"
    )

    sd = sub.add_parser("seed", help="write the simulated city into the running services")
    _city_args(sd)
    sd.add_argument("--catalog-target", help="Catalog address (default 127.0.0.1:<its port>)")
    sd.add_argument("--dispatch-target", help="Dispatch address (default 127.0.0.1:<its port>)")

    _sim_parser(sub)

    te = sub.add_parser("train-eta", help="train the ETA models (XGBoost) on order history")
    te.add_argument("--history", help="a history file (from `sim history`); default: generate")
    te.add_argument("--source", choices=("auto", "db", "sim"), default="auto",
                    help="without --history: the Order database's deliveries (db), the "
                    "simulator (sim), or the database when it has enough (auto)")  # fmt: skip
    te.add_argument("--orders", type=int, default=100_000, help="orders to generate (no --history)")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--rounds", type=int, default=250, help="boosting rounds per model")
    te.add_argument("--nthread", type=int, default=2, help="XGBoost threads")
    te.add_argument("--out", help="model directory (default: $FOODMESH_ETA_MODEL_DIR or "
                    "<state dir>/models, where the ETA service looks)")  # fmt: skip

    from foodmesh.roads.cli import add_parser as _roads_parser  # `foodmesh roads ...`

    _roads_parser(sub)
    st = sub.add_parser("status", help="health of the infrastructure and every process")
    st.add_argument("--json", action="store_true")

    tok = sub.add_parser(
        "token", help="print a bearer token (signed with $FOODMESH_AUTH_SECRET) for grpcurl/curl"
    )
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--subject", required=True, help="customer, driver, restaurant or service id")
    tok.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid")
    return p


def _auth(process: str) -> AuthSettings:
    """The secrets this command runs with (the one decision, foodmesh.core.auth.auth_settings)."""
    try:
        return auth_settings(process=process)
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None


def _token(args: argparse.Namespace) -> int:
    auth = _auth("token")
    try:
        if args.role == "service":  # under the service key, at most 15 minutes
            ttl = min(args.ttl, MAX_SERVICE_TOKEN_S)
            print(mint_service_token(auth.service_secret, subject=args.subject, ttl_s=ttl))
        else:
            print(mint_token(auth.secret, subject=args.subject, role=args.role, ttl_s=args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["replay"]:  # its own parser, in servers/dispatch/replay.py
        from servers.dispatch.replay import run_cli

        return run_cli(raw[1:])
    args = _parser().parse_args(argv)
    if args.command != "serve":  # a service logs through the runtime's one format
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)-5s %(name)s %(message)s",
        )
    from foodmesh.core.errors import FoodmeshError
    from foodmesh.infra.errors import InfraError

    try:
        if args.command == "gen":
            from foodmesh.gen import main as gen_main

            return gen_main(["--check"] if args.check else [])
        if args.command == "lint-proto":
            from foodmesh.protolint import main as lint_proto

            against = ["--against", args.against] if args.against else []
            return lint_proto([*against, *(["--no-breaking"] if args.no_breaking else [])])
        if args.command == "serve":
            return _serve(args)
        if args.command == "token":
            return _token(args)
        if args.command == "roads":
            from foodmesh.roads.cli import run as _roads

            return _roads(args)
        handler = {
            "infra": _infra,
            "migrate": _migrate,
            "up": _up,
            "status": _status,
            "seed": _seed,
            "sim": _sim,
            "train-eta": _train_eta,
        }
        return asyncio.run(handler[args.command](args))
    except KeyboardInterrupt:
        return 130
    except (CliError, InfraError, AuthConfigError) as exc:
        print(f"foodmesh: {exc}", file=sys.stderr)
        return 1
    except FoodmeshError as exc:
        print(f"foodmesh: {exc.message}", file=sys.stderr)
        return 1
