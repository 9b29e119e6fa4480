"""``foodmesh infra up|down|status``: the real PostgreSQL, Redis and NATS servers."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING

from foodmesh.commands._common import URL_VARS, state_dir

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    inf = sub.add_parser("infra", help="start/stop the real PostgreSQL, Redis and NATS servers")
    inf.add_argument("action", choices=("up", "down", "status"))
    inf.add_argument(
        "--clusters",
        action="store_true",
        help="up: a Redis Cluster (3 primaries, 3 replicas) and a 3-node NATS JetStream "
        "cluster instead of single servers (`down` stops them too)",
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_infra(args))


async def _infra(args: argparse.Namespace) -> int:
    from foodmesh import infra

    state = state_dir(args)
    if args.action == "up":
        if all(os.environ.get(v) for v in URL_VARS):
            print("using the servers named by FOODMESH_*_URL; nothing to start")
            for v in URL_VARS:
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
                urls = await infra.up(state, env=env, smtp=True)
            except BaseException:
                await asyncio.to_thread(redis.down)
                await asyncio.to_thread(nats.down)
                raise
        else:
            urls = await infra.up(state, env=env, smtp=True)
        took = asyncio.get_running_loop().time() - started
        what = "redis cluster and nats cluster" if args.clusters else "redis and nats"
        print(f"# postgres, {what} ready in {took:.2f}s (state in {state})")
        print(f"export FOODMESH_POSTGRES_URL={urls.postgres_url}")
        print(f"export FOODMESH_REDIS_URL={urls.redis_url}")
        print(f"export FOODMESH_NATS_URL={urls.nats_url}")
        print(f"export FOODMESH_SMTP_URL={urls.smtp_url}")
        if inbox := infra.smtp_inbox_url(state):
            print(f"# the SMTP server keeps every message: {inbox}")
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
