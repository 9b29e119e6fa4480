"""``foodmesh seed``: write the simulated city into the running Catalog (and Dispatch)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "city_args", "run", "seed_into"]


def city_args(p: argparse.ArgumentParser) -> None:
    """The city's options, shared with ``foodmesh up``."""
    p.add_argument("--seed", type=int, default=7, help="the city's random seed (default 7)")
    p.add_argument("--restaurants", type=int, default=500, help="how many (default 500)")
    p.add_argument("--drivers", type=int, default=600, help="how many (default 600)")


def add_parser(sub: Subparsers) -> None:
    sd = sub.add_parser("seed", help="write the simulated city into the running services")
    city_args(sd)
    sd.add_argument("--catalog-target", help="Catalog address (default 127.0.0.1:<its port>)")
    sd.add_argument("--dispatch-target", help="Dispatch address (default 127.0.0.1:<its port>)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_seed(args))


async def seed_into(args: argparse.Namespace, catalog: str, dispatch: str | None) -> None:
    """Builds the city of ``args`` (see :func:`city_args`) and writes it; one line of counts."""
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
    await seed_into(args, catalog, dispatch)
    return 0
