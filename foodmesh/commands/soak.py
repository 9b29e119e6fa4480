"""``foodmesh soak``: the platform under load for a long while, its parts killed on a schedule,
then an audit of the stores; report.json and report.md in a folder; non-zero when it fails."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError, UsageError

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "parse_duration", "run"]


def parse_duration(text: str) -> float:
    """``30m``, ``90s``, ``1h`` or plain seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 90s or 1800)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("soak", help="the platform under load and faults, then an audit")
    p.add_argument("--duration", type=parse_duration, default=1800.0,
                   help="how long the load runs: 30m, 90s, 1800 (default 30m)")  # fmt: skip
    p.add_argument("--load", type=float, default=4.0,
                   help="times the default city's orders per hour (200; default 4)")  # fmt: skip
    p.add_argument("--faults", type=Path, help="the fault schedule (YAML or JSON); default: "
                   "every kind, spread over the run")  # fmt: skip
    p.add_argument("--seed", type=int, default=7, help="the city's and the load's seed")
    p.add_argument("--out", type=Path, help="the report's folder (default soak-<time>/)")
    p.add_argument("--drivers", type=int, default=2000,
                   help="drivers on the road (default 2000: the issue's city)")  # fmt: skip
    p.add_argument("--restaurants", type=int, default=200, help="restaurants (default 200)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.2,
        help="kitchen and travel times times this (default 0.2: orders finish within a run)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="seconds after the load for outboxes and consumers to catch up",
    )
    p.add_argument(
        "--target",
        nargs="?",
        type=Path,
        const=Path(os.environ.get("FOODMESH_STATE_DIR") or ".foodmesh"),
        metavar="STATE_DIR",
        help="soak the platform a running `foodmesh up` serves from STATE_DIR (default "
        ".foodmesh): its processes are killed and its stores restarted; no latency faults",
    )
    p.add_argument(
        "--keep-infra",
        action="store_true",
        help="leave the run's PostgreSQL/Redis/NATS running with their data (to inspect)",
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_soak(args))


async def _soak(args: argparse.Namespace) -> int:
    from foodmesh.services import available
    from foodmesh.soak.faults import ScheduleError, default_schedule, load_schedule
    from foodmesh.soak.report import write_report
    from foodmesh.soak.run import SoakConfig, run_soak

    if args.duration < 30:
        raise UsageError("soak: --duration must be at least 30 s")
    if not 0 < args.load <= 1000:
        raise UsageError("soak: --load must be within (0, 1000]")
    names = [s.name for s in available()] + ["gateway"]
    try:
        schedule = (
            load_schedule(args.faults, services=names)
            if args.faults
            else default_schedule(args.duration, services=names)
        )
    except (OSError, ScheduleError, ValueError) as exc:
        raise CliError(f"soak: the fault schedule {args.faults}: {exc}") from None
    out = (args.out or Path(f"soak-{time.strftime('%Y%m%d-%H%M%S')}")).absolute()
    if (out / "state").exists() or (out / "report.json").exists():
        raise CliError(f"soak: {out} holds an earlier run; name a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: results in {out}", flush=True)
    config = SoakConfig(
        duration_s=args.duration, load=args.load, schedule=schedule, out_dir=out,
        seed=args.seed, drivers=args.drivers, restaurants=args.restaurants,
        prep_scale=args.time_scale, travel_scale=args.time_scale, settle_s=args.settle,
        keep_infra=args.keep_infra, target=args.target.absolute() if args.target else None,
    )  # fmt: skip
    result = await run_soak(config)
    report = write_report(result, out)
    verdict = "PASSED" if report["passed"] else "FAILED"
    print(
        f"soak {verdict}: {report['acknowledged_orders']} orders acknowledged "
        f"({report['delivered']} delivered, {report['cancelled']} cancelled, "
        f"{report['in_progress']} in progress); lost {report['lost_orders']}, double "
        f"assignments {report['double_assignments']}, double charges "
        f"{report['double_charges']}, lingering holds {report['lingering_holds']}, unhandled "
        f"errors {report['unhandled_errors']}; error rate outside faults "
        f"{report['error_rate_outside_faults']:.3%}",
        flush=True,
    )
    for f in report["audit"]["failures"]:
        print(f"  audit: {f}")
    for k, ok in report["checks"].items():
        if not ok:
            print(f"  failed: {k}")
    print(f"soak: report in {out / 'report.md'}", flush=True)
    return 0 if report["passed"] else 1
