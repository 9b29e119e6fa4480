"""``foodmesh gen [--check]``: regenerate foodmesh/v1 from proto/ (or check it has not drifted)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    gen = sub.add_parser("gen", help="regenerate foodmesh/v1 stubs from proto/")
    gen.add_argument("--check", action="store_true", help="fail if committed stubs drift")


def run(args: argparse.Namespace) -> int:
    from foodmesh.gen import main as gen_main

    return gen_main(["--check"] if args.check else [])
