"""``foodmesh serve NAME``: one service (or the gateway, or the dashboard) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING

from foodmesh.commands._common import URL_VARS, CliError, state_dir, urls

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["LOG_FORMAT", "add_parser", "run"]

#: None: no logging set up here; a service logs through the runtime's one format.
LOG_FORMAT = None


def add_parser(sub: Subparsers) -> None:
    srv = sub.add_parser("serve", help="run one service in the foreground")
    srv.add_argument("service")


def run(args: argparse.Namespace) -> int:
    if args.service == "gateway":  # HTTP, not a gRPC service: its own server
        from gateway import main as gateway_main

        return gateway_main()
    if args.service == "dashboard":  # HTTP too: the ops dashboard
        from dashboard import main as dashboard_main

        if not os.environ.get("FOODMESH_NATS_URL"):
            os.environ.update(asyncio.run(urls(state_dir(args))))
        return dashboard_main()
    from foodmesh.services import KNOWN, load_spec
    from servers.runtime.serve import serve

    try:
        spec = load_spec(args.service)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if not all(os.environ.get(v) for v in URL_VARS):
        os.environ.update(asyncio.run(urls(state_dir(args))))
    info = next(s for s in KNOWN if s.name == args.service)
    up = args.service.upper()
    os.environ.setdefault(f"FOODMESH_{up}_PORT", str(info.grpc_port))
    os.environ.setdefault(f"FOODMESH_{up}_METRICS_PORT", str(info.metrics_port))
    return serve(spec)
