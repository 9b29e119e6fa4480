"""``foodmesh up``: infrastructure, migrations, every service, the gateway, the dashboard
and the simulator, supervised until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from foodmesh.commands._common import URL_VARS, CliError, auth, state_dir
from foodmesh.commands.migrate import migrate_services
from foodmesh.commands.seed import city_args, seed_into
from foodmesh.core.auth import mint_token

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers
    from foodmesh.core.services import ServiceInfo
    from foodmesh.supervisor import ProcessSpec

__all__ = ["add_parser", "platform_specs", "run"]

_log = logging.getLogger("foodmesh.cli")


def add_parser(sub: Subparsers) -> None:
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
    city_args(up)
    up.add_argument(
        "--keep-infra", action="store_true", help="leave PostgreSQL/Redis/NATS running on exit"
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_up(args))


async def _up(args: argparse.Namespace) -> int:
    from foodmesh import infra
    from foodmesh.services import available
    from foodmesh.supervisor import ProcessSpec, Supervisor, python_argv

    # A laptop's platform: development mode (the dev secret unless one is set), said loudly
    # by each process. Outside it (FOODMESH_DEV=0) every process needs real secrets and TLS
    # files (FOODMESH_TLS_*), which `up` does not make: production runs on Kubernetes.
    os.environ.setdefault("FOODMESH_DEV", "1")
    auth("up")
    state = state_dir(args)
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
        # The first URL of the output (before any log line carrying one): tools and people
        # take the first URL they see.
        print(f"gateway: http://127.0.0.1:{gateway_port}", flush=True)
    if all(os.environ.get(v) for v in URL_VARS):
        urls = {v: os.environ[v] for v in URL_VARS}
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
    # Real mail for the simulated city: the development SMTP server keeps what it is sent.
    smtp_before = (await infra.status(state)).servers
    mail = await _mail(state) if any(s.name == "notification" for s in services) else {}
    started_smtp = bool(mail) and not any(x.name == "smtp" for x in smtp_before)
    try:
        await migrate_services([s.name for s in services], urls["FOODMESH_POSTGRES_URL"])
        dashboard_port = os.environ.get("FOODMESH_DASHBOARD_PORT", "8090")
        specs = platform_specs(
            services, urls, state, gateway_port=gateway_port, dashboard_port=dashboard_port,
            gateway=not args.no_gateway, dashboard=not args.no_dashboard,
            extra_env={**mail, "dispatch": city_dispatch()},
        )  # fmt: skip
        if any(s.name == "eta" for s in services):
            # Learning from the platform's own deliveries, beside the ETA service: a
            # candidate is promoted (hot-loaded) only if it beats the model in service.
            specs.append(
                ProcessSpec(
                    name="retrain-eta",
                    argv=python_argv("--state-dir", str(state), "retrain-eta", "--every", "300",
                                     "--min-new", "150", "--min-new-on-schedule", "25",
                                     "--min-orders", "150", "--min-refine", "40"),
                    env={**urls, "FOODMESH_STATE_DIR": str(state)},
                )
            )  # fmt: skip
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
            secret = auth("up").secret
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
                pricing = names.get("pricing")
                try:
                    await seed_into(
                        args,
                        f"127.0.0.1:{names['catalog'].grpc_port}",
                        f"127.0.0.1:{dispatch.grpc_port}" if dispatch else None,
                        f"127.0.0.1:{pricing.grpc_port}" if pricing else None,
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
        elif started_smtp and not args.keep_infra:
            await asyncio.to_thread(infra.stop_smtp, state)
    return 0


def platform_specs(
    services: Sequence[ServiceInfo],
    urls: Mapping[str, str],
    state: Path,
    *,
    gateway_port: str,
    dashboard_port: str,
    gateway: bool = True,
    dashboard: bool = True,
    ports: Mapping[str, tuple[int, int]] | None = None,
    gateway_metrics_port: str | None = None,
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ProcessSpec]:
    """Every service, the gateway and the dashboard as supervised processes.

    ``ports`` moves a service off its default ``(grpc, metrics)`` ports (a soak runs
    beside a developer's ``up``); ``extra_env`` adds settings per process name (the SMTP
    server for Notification and its inbox for the dashboard).
    """
    from foodmesh.supervisor import ProcessSpec, python_argv

    ports = ports or {}
    extra_env = extra_env or {}

    def grpc_port(s: ServiceInfo) -> int:
        return ports.get(s.name, (s.grpc_port, s.metrics_port))[0]

    def metrics_port(s: ServiceInfo) -> int:
        return ports.get(s.name, (s.grpc_port, s.metrics_port))[1]

    specs = [
        ProcessSpec(
            name=s.name,
            argv=python_argv("serve", s.name),
            env={
                **urls,
                "FOODMESH_STATE_DIR": str(state),  # ETA's models live under it
                f"FOODMESH_{s.name.upper()}_PORT": str(grpc_port(s)),
                f"FOODMESH_{s.name.upper()}_METRICS_PORT": str(metrics_port(s)),
                **extra_env.get(s.name, {}),
                # where each of the others listens: FOODMESH_ORDER_PRICING_TARGET, ...
                **{
                    f"FOODMESH_{s.name.upper()}_{t.name.upper()}_TARGET": (
                        f"127.0.0.1:{grpc_port(t)}"
                    )
                    for t in services
                    if t is not s
                },
            },
            grpc_port=grpc_port(s),
        )
        for s in services
    ]
    if services and gateway:  # last: it answers /readyz once they serve
        specs.append(
            ProcessSpec(
                name="gateway",
                argv=python_argv("serve", "gateway"),
                env={
                    **urls,  # Redis: the rate limits' buckets
                    "FOODMESH_GATEWAY_PORT": gateway_port,
                    "FOODMESH_GATEWAY_METRICS_PORT": gateway_metrics_port
                    or os.environ.get("FOODMESH_GATEWAY_METRICS_PORT", "9100"),
                    # per-IP limits per simulated customer (each sends X-Forwarded-For),
                    # as behind a real load balancer
                    "FOODMESH_GATEWAY_TRUST_FORWARDED_FOR": "1",
                    "FOODMESH_GATEWAY_SERVICES": ",".join(s.name for s in services),
                    **{
                        f"FOODMESH_GATEWAY_{s.name.upper()}_TARGET": f"127.0.0.1:{grpc_port(s)}"
                        for s in services
                    },
                },
                http_url=f"http://127.0.0.1:{gateway_port}/readyz",
            )
        )
    if services and dashboard:
        specs.append(
            ProcessSpec(
                name="dashboard",
                argv=python_argv("serve", "dashboard"),
                env={
                    **urls,
                    "FOODMESH_DASHBOARD_PORT": dashboard_port,
                    **extra_env.get("dashboard", {}),
                    **{
                        f"FOODMESH_DASHBOARD_{t.name.upper()}_TARGET": (f"127.0.0.1:{grpc_port(t)}")
                        for t in services
                    },
                },
                http_url=f"http://127.0.0.1:{dashboard_port}/healthz",
            )
        )
    return specs


async def _mail(state: Path) -> dict[str, dict[str, str]]:
    """The SMTP server for Notification (and its inbox for the dashboard), per process."""
    from foodmesh import infra

    smtp = os.environ.get(infra.SMTP_URL_VAR) or (await infra.up(state, smtp=True)).smtp_url
    print(f"{infra.SMTP_URL_VAR}={smtp}")
    out = {"notification": {"FOODMESH_NOTIFICATION_SMTP_URL": smtp}}
    if inbox := infra.smtp_inbox_url(state):
        out["dashboard"] = {"FOODMESH_DASHBOARD_SMTP_INBOX_URL": inbox}
    return out


#: The city's dispatch: stacked orders (K per driver) and offers timed to the kitchen:
#: the driver is there 30 s plus 20 % of the prep estimate before the food. The estimate
#: misses by 14 % of itself (sd) in the live city; a minute the food waits costs the
#: customer a minute, one the driver waits the planner 0.1 (``driver_wait_weight``), so
#: the best margin leaves the food waiting 1 time in 11: 1.34 sd, 19 % of the estimate.
CITY_DISPATCH = {
    "FOODMESH_DISPATCH_MAX_ORDERS": "2",
    "FOODMESH_DISPATCH_KITCHEN_RELEASE_S": "30",
    "FOODMESH_DISPATCH_KITCHEN_RELEASE_SPREAD": "0.2",
}


def city_dispatch() -> dict[str, str]:
    """Dispatch's settings in ``up``'s city: ``CITY_DISPATCH`` unless the environment says."""
    return {k: os.environ.get(k, v) for k, v in CITY_DISPATCH.items()}


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
