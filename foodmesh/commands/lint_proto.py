"""``foodmesh lint-proto``: ``buf lint`` and ``buf breaking`` over proto/, offline."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    lp = sub.add_parser("lint-proto", help="buf lint and buf breaking over proto/ (offline)")
    lp.add_argument("--against", help="a git commit to compare with (default: the merge base "
                    "with main, or the previous commit on main)")  # fmt: skip
    lp.add_argument("--no-breaking", action="store_true", help="only `buf lint`")


def run(args: argparse.Namespace) -> int:
    from foodmesh.protolint import main as lint_proto

    against = ["--against", args.against] if args.against else []
    return lint_proto([*against, *(["--no-breaking"] if args.no_breaking else [])])
