"""``foodmesh train-eta``: train the ETA models (XGBoost) on the Order database's deliveries,
a history file, or simulated orders."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError, state_dir, urls

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
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


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_train_eta(args))


async def _train_eta(args: argparse.Namespace) -> int:
    import json

    from servers.eta.training import TrainConfig, train

    out = Path(args.out) if args.out else Path(
        os.environ.get("FOODMESH_ETA_MODEL_DIR") or state_dir(args) / "models")  # fmt: skip
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
                pg = (await urls(state_dir(args)))["FOODMESH_POSTGRES_URL"]
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
