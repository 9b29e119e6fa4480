"""``foodmesh replay TRACE.json``: replay a foodmesh-trace/1 through the dispatch code.

The engine is :mod:`servers.dispatch.replay` (the live matching and offer rules on a
virtual clock); it is imported only when the command runs, as it loads the solver.
Progress goes to stderr, the table (or JSON) to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from foodmesh.commands._common import UsageError

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers
    from servers.dispatch.replay import Metrics

__all__ = ["LOG_FORMAT", "add_arguments", "add_parser", "run", "table"]

#: The replay's progress lines carry no logger name: one program, one voice.
LOG_FORMAT = "%(asctime)s %(levelname)-5s %(message)s"

_log = logging.getLogger("foodmesh.replay")


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a foodmesh-trace/1 through the dispatch code (batch vs greedy)",
        description="Replay a foodmesh-trace/1 through the dispatch code.",
    )
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The replay's options, on ``p``."""
    p.add_argument("trace", nargs="?", help="the trace (JSON); omit with --generate")
    p.add_argument(
        "--policy",
        choices=("batch", "plain", "greedy", "both", "all"),
        default="both",
        help="batch: trips (bundles, kitchen-timed); plain: one order a trip every 60 s;"
        " greedy: nearest driver; both: batch and greedy; all: the three (default both)",
    )
    p.add_argument("--accept-prob", type=float, default=0.9)
    p.add_argument("--batch-interval", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--max-orders", type=int, default=3, help="orders a trip carries at most (3)")
    p.add_argument(
        "--ceil-minutes",
        action="store_true",
        help="travel in whole minutes rounded up (mdrplib's rule) instead of continuously",
    )
    p.add_argument(
        "--generate",
        type=int,
        metavar="ORDERS",
        help="replay a generated trace of this many orders instead",
    )
    p.add_argument("--couriers", type=int, default=300, help="with --generate (default 300)")
    p.add_argument("--write", help="with --generate: also save the trace here")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Replays the trace with each policy asked for; 2 when the trace cannot be read."""
    if not 0 <= args.accept_prob <= 1:
        raise UsageError("--accept-prob must be between 0 and 1")
    if not args.generate and not args.trace:
        raise UsageError("give a TRACE.json or --generate ORDERS")
    if not 1 <= args.max_orders <= 5:
        raise UsageError("--max-orders must be between 1 and 5")
    if not args.batch_interval > 0:
        raise UsageError("--batch-interval must be positive")
    from servers.dispatch.replay import (
        ReplayPolicy,
        SimConfig,
        TraceError,
        generate_trace,
        load_trace,
        simulate,
    )
    from servers.dispatch.trips import TripConfig

    try:
        if args.generate:
            doc = generate_trace(orders=args.generate, couriers=args.couriers, seed=args.seed)
            if args.write:
                Path(args.write).write_text(json.dumps(doc))
            trace = load_trace(doc)
        else:
            trace = load_trace(args.trace)
    except TraceError as exc:
        print(f"foodmesh replay: {exc}", file=sys.stderr)
        return 2
    named: dict[str, list[ReplayPolicy]] = {
        "both": ["batch", "greedy"],
        "all": ["batch", "plain", "greedy"],
    }
    policies: list[ReplayPolicy] = named.get(args.policy, [args.policy])
    results = []
    for policy in policies:
        cfg = SimConfig(
            policy=policy,
            accept_prob=args.accept_prob,
            batch_interval_s=args.batch_interval,
            seed=args.seed,
            trips=TripConfig(max_orders=args.max_orders),
            ceil_minutes=args.ceil_minutes,
        )
        _log.info(
            "replaying %s (%d orders, %d couriers) with policy %s",
            trace.name,
            len(trace.orders),
            len(trace.couriers),
            policy,
        )
        results.append(simulate(trace, cfg, progress=True))
    if args.json:
        print(json.dumps({"trace": trace.name, "results": [asdict(m) for m in results]}))
    else:
        print(f"trace {trace.name}: {len(trace.orders)} orders, {len(trace.couriers)} couriers")
        print(table(results))
    return 0


_ROWS = [
    ("orders delivered", "delivered", "{:d}"),
    ("orders unassigned", "unassigned", "{:d}"),
    ("click-to-door mean (min)", "click_to_door_mean_min", "{:.1f}"),
    ("click-to-door p90 (min)", "click_to_door_p90_min", "{:.1f}"),
    ("on time (share)", "on_time_share", "{:.1%}"),
    ("food wait mean (min)", "food_wait_mean_min", "{:.1f}"),
    ("driver wait at restaurant (min)", "driver_wait_mean_min", "{:.1f}"),
    ("orders per trip", "orders_per_trip", "{:.2f}"),
    ("courier-hours per order", "courier_hours_per_order", "{:.3f}"),
    ("driver utilisation (share)", "utilisation", "{:.1%}"),
    ("courier idle (share)", "courier_idle_share", "{:.1%}"),
    ("offers per order", "offers_per_order", "{:.2f}"),
    ("deciding, wall (s)", "decide_wall_s", "{:.2f}"),
    ("batches", "batches", "{:d}"),
    ("simulated hours", "sim_hours", "{:.1f}"),
    ("replay wall (s)", "wall_s", "{:.1f}"),
]


def table(results: Sequence[Metrics]) -> str:
    """The policies side by side, one metric a row."""
    head = f"{'':32}" + "".join(f"{m.policy:>12}" for m in results)
    lines = [head, "-" * len(head)]
    for label, key, fmt in _ROWS:
        lines.append(f"{label:32}" + "".join(f"{fmt.format(getattr(m, key)):>12}" for m in results))
    return "\n".join(lines)
