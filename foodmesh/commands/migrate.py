"""``foodmesh migrate [SERVICE ...]``: apply the services' database migrations."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError, state_dir, urls

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "migrate_services", "run"]


def add_parser(sub: Subparsers) -> None:
    mig = sub.add_parser("migrate", help="apply database migrations (safe to run concurrently)")
    mig.add_argument("services", nargs="*", help="services to migrate (default: all)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_migrate(args))


async def migrate_services(names: Sequence[str], postgres_url: str) -> int:
    """Applies the pending migrations of ``names``, one line each; returns how many."""
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
    found = await urls(state_dir(args))
    total = await migrate_services(names, found["FOODMESH_POSTGRES_URL"])
    print(f"migrations up to date ({total} applied now, services: {', '.join(names) or 'none'})")
    return 0
