"""``foodmesh status``: health of the infrastructure and of every supervised process."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from foodmesh.commands._common import state_dir

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    st = sub.add_parser("status", help="health of the infrastructure and every process")
    st.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    from foodmesh import infra
    from foodmesh.supervisor import as_json, read_status, status_table

    state = state_dir(args)
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
