"""``foodmesh retrain-eta``: learn from the platform's own deliveries, in the background.

Reads the delivered orders from the Order database, trains a candidate, validates
it against the model in service on the latest held-out deliveries and promotes it
(writes it where the ETA service hot-loads models) only if it is better
(``servers.eta.retrain``). ``--once`` makes one pass (a Kubernetes CronJob);
otherwise it looks every minute and retrains on a schedule and when enough new
deliveries arrived (``foodmesh up`` runs it so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError, state_dir, urls

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("retrain-eta", help="retrain the ETA models on the platform's deliveries, "
                       "promote only if better")  # fmt: skip
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--every", type=float, default=900.0,
                   help="seconds between scheduled passes (default 900)")  # fmt: skip
    p.add_argument("--poll", type=float, default=60.0,
                   help="seconds between looks at the deliveries (default 60)")  # fmt: skip
    p.add_argument("--min-new", type=int, default=300,
                   help="new deliveries that start a pass at once (default 300)")  # fmt: skip
    p.add_argument("--min-new-on-schedule", type=int, default=50,
                   help="new deliveries a scheduled pass needs (default 50; from 20 the "
                   "serving model's interval is recalibrated even when too few to learn "
                   "from)")  # fmt: skip
    p.add_argument("--min-orders", type=int, default=300,
                   help="deliveries a model trained on them alone needs (default 300)")  # fmt: skip
    p.add_argument("--min-refine", type=int, default=60,
                   help="deliveries to refine the serving model with (default 60)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=150, help="boosting rounds per model")
    p.add_argument("--out", help="model directory (default: $FOODMESH_ETA_MODEL_DIR or "
                   "<state dir>/models, where the ETA service looks)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_retrain(args))


async def _retrain(args: argparse.Namespace) -> int:
    import logging

    from servers.eta.retrain import RetrainConfig, Retrainer

    logging.getLogger("foodmesh.eta.retrain").setLevel(logging.INFO)
    out = Path(args.out) if args.out else Path(
        os.environ.get("FOODMESH_ETA_MODEL_DIR") or state_dir(args) / "models")  # fmt: skip
    pg = os.environ.get("FOODMESH_POSTGRES_URL") or (await urls(state_dir(args)))[
        "FOODMESH_POSTGRES_URL"]  # fmt: skip
    if (args.every <= 0 or args.poll <= 0 or args.min_new < 1 or args.min_orders < 50
            or args.min_refine < 20 or args.min_new_on_schedule < 1):  # fmt: skip
        raise CliError("retrain-eta: --every and --poll must be positive, --min-new and "
                       "--min-new-on-schedule at least 1, --min-orders at least 50, "
                       "--min-refine at least 20")  # fmt: skip
    cfg = RetrainConfig(every_s=args.every, poll_s=args.poll, min_new=args.min_new,
                        min_new_on_schedule=args.min_new_on_schedule,
                        min_orders=args.min_orders, min_refine=args.min_refine,
                        rounds=args.rounds)  # fmt: skip
    retrainer = Retrainer(pg, out, config=cfg, say=lambda s: print(s, flush=True))
    if args.once:
        await retrainer.check(force=True)
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"retrain-eta: watching the Order database's deliveries; models in {out}", flush=True)
    await retrainer.run(stop)
    return 0
