"""``foodmesh seed``: write the simulated city into the running Catalog (and Dispatch)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from foodmesh.commands._common import CliError

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "city_args", "run", "seed_into"]


def city_args(p: argparse.ArgumentParser) -> None:
    """The city's options, shared with ``foodmesh up``."""
    p.add_argument("--seed", type=int, default=7, help="the city's random seed (default 7)")
    p.add_argument("--restaurants", type=int, default=500, help="how many (default 500)")
    p.add_argument("--drivers", type=int, default=600, help="how many (default 600)")
    p.add_argument("--prior-days", type=int, default=14,
                   help="days of synthetic demand history written into Pricing, so its "
                        "forecast trains from the start (default 14; 0: none)")  # fmt: skip


def add_parser(sub: Subparsers) -> None:
    sd = sub.add_parser("seed", help="write the simulated city into the running services")
    city_args(sd)
    sd.add_argument("--catalog-target", help="Catalog address (default 127.0.0.1:<its port>)")
    sd.add_argument("--dispatch-target", help="Dispatch address (default 127.0.0.1:<its port>)")
    sd.add_argument("--pricing-target", help="Pricing address (default 127.0.0.1:<its port>)")
    sd.add_argument("--orders-per-hour", type=float, default=200.0,
                    help="the city's mean order rate over the week, for the demand prior "
                         "(default 200, as `foodmesh up`)")  # fmt: skip
    sd.add_argument(
        "--prior-only",
        action="store_true",
        help="write only the demand prior (the city is in the Catalog already)",
    )
    sd.add_argument("--write-prior-template", metavar="FILE",
                    help="write two weeks of the city's demand as Pricing's shipped prior "
                         "(servers/pricing/data/demand_prior.npz) and exit")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_seed(args))


async def seed_into(
    args: argparse.Namespace, catalog: str, dispatch: str | None, pricing: str | None = None
) -> None:
    """Builds the city of ``args`` (see :func:`city_args`) and writes it; one line of counts.

    Given Pricing, also the demand prior (``--prior-days`` of synthetic history).
    """
    import grpc

    from foodmesh.sim.city import build_city
    from foodmesh.sim.seed import seed_city

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        city = build_city(seed=args.seed, restaurants=args.restaurants, drivers=args.drivers)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not getattr(args, "prior_only", False):
        r = await seed_city(city, catalog_target=catalog, dispatch_target=dispatch)
        skipped = f" (drivers skipped: {r.skipped_drivers})" if r.skipped_drivers else ""
        print(
            f"city {args.seed}: {r.restaurants} restaurants, {r.menus} menus, {r.drivers} drivers"
            f" in {loop.time() - t0:.1f}s{skipped}"
        )
    if pricing is not None and args.prior_days > 0:
        try:
            await _prior(args, city, pricing)
        except grpc.aio.AioRpcError as exc:  # the city stands without it: the fallback serves
            print(f"demand prior not written: Pricing answered {exc.code().name} "
                  f"({exc.details()})")  # fmt: skip


def _template(args: argparse.Namespace) -> int:
    from pathlib import Path

    from foodmesh.sim.city import build_city
    from foodmesh.sim.demand_prior import save_template, week_template

    city = build_city(seed=args.seed, restaurants=args.restaurants, drivers=0, customers=1)
    t = week_template(city, orders_per_hour=args.orders_per_hour, seed=args.seed)
    save_template(t, Path(args.write_prior_template))
    print(f"{args.write_prior_template}: two weeks of {len(t.cells)} cells, "
          f"{int(t.counts.sum()):,} orders")  # fmt: skip
    return 0


async def _prior(args: argparse.Namespace, city: Any, pricing: str) -> None:
    import datetime as dt

    from clients import ClientOptions
    from foodmesh.sim.demand_prior import demand_prior, seed_demand_prior
    from foodmesh.sim.seed import service_credentials

    prior = await asyncio.to_thread(
        demand_prior, city, now=dt.datetime.now(dt.UTC), days=args.prior_days,
        orders_per_hour=args.orders_per_hour, seed=args.seed,
    )  # fmt: skip
    options = ClientOptions(credentials=service_credentials().metadata, deadline_s=30.0)
    n = await seed_demand_prior(prior, pricing_target=pricing, options=options)
    print(f"demand prior: {args.prior_days} days of {len(prior.cells)} cells "
          f"({int(prior.counts.sum()):,} orders, {n:,} buckets) written into Pricing")  # fmt: skip


async def _seed(args: argparse.Namespace) -> int:
    if args.write_prior_template:
        return await asyncio.to_thread(_template, args)
    from foodmesh.services import KNOWN, available

    ports = {s.name: s.grpc_port for s in KNOWN}
    present = {s.name for s in available()}
    catalog = args.catalog_target or f"127.0.0.1:{ports['catalog']}"
    dispatch = args.dispatch_target or (
        f"127.0.0.1:{ports['dispatch']}" if "dispatch" in present else None
    )
    pricing = args.pricing_target or (
        f"127.0.0.1:{ports['pricing']}" if "pricing" in present else None
    )
    await seed_into(args, catalog, dispatch, pricing)
    return 0
