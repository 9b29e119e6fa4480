"""The `foodmesh` command: the parser and the dispatch; each command is a module of
:mod:`foodmesh.commands` (infra, migrate, gen, lint-proto, serve, up, seed, sim, train-eta,
replay, roads, soak, status, token).

Expected failures (a bad setting, a server that does not answer, a port in
use) print one line that names the problem and what to do, and exit 1; only
bugs print a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from foodmesh import __version__
from foodmesh.commands import (
    gen,
    infra,
    lint_proto,
    migrate,
    replay,
    retrain_eta,
    roads,
    seed,
    serve,
    sim,
    soak,
    status,
    token,
    train_eta,
    up,
)
from foodmesh.commands._common import CliError, Command, UsageError
from foodmesh.core.auth import AuthConfigError

__all__ = ["main"]

#: In the order ``foodmesh --help`` lists them.
_COMMANDS: dict[str, Command] = {
    "infra": infra,
    "migrate": migrate,
    "gen": gen,
    "lint-proto": lint_proto,
    "serve": serve,
    "up": up,
    "seed": seed,
    "sim": sim,
    "soak": soak,
    "train-eta": train_eta,
    "retrain-eta": retrain_eta,
    "replay": replay,
    "roads": roads,
    "status": status,
    "token": token,
}
_LOG_FORMAT = "%(asctime)s %(levelname)-5s %(name)s %(message)s"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``foodmesh`` parser, and each command's own (for its usage errors)."""
    p = argparse.ArgumentParser(prog="foodmesh", description="Run and develop foodmesh.")
    p.add_argument("--version", action="version", version=f"foodmesh {__version__}")
    p.add_argument(
        "--state-dir",
        help="where servers keep their data (default: $FOODMESH_STATE_DIR or ./.foodmesh)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for command in _COMMANDS.values():
        command.add_parser(sub)
    assert set(sub.choices) == set(_COMMANDS), "each module adds the command it is listed as"
    return p, sub.choices


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    args = parser.parse_args(argv)
    command = _COMMANDS[args.command]
    # A service logs through the runtime's one format (serve: LOG_FORMAT = None).
    log_format = getattr(command, "LOG_FORMAT", _LOG_FORMAT)
    if log_format is not None:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format=log_format
        )
    from foodmesh.core.errors import FoodmeshError
    from foodmesh.infra.errors import InfraError

    try:
        return command.run(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        commands[args.command].error(str(exc))  # exits 2, as argparse does
    except (CliError, InfraError, AuthConfigError) as exc:
        print(f"foodmesh: {exc}", file=sys.stderr)
        return 1
    except FoodmeshError as exc:
        print(f"foodmesh: {exc.message}", file=sys.stderr)
        return 1
