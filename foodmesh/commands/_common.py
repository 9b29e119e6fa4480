"""What the commands share: the expected-failure error, the state directory, the servers' URLs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from foodmesh.core.auth import AuthConfigError, AuthSettings, auth_settings

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "URL_VARS", "CliError", "Command", "Subparsers", "UsageError", "auth", "state_dir", "urls",
]  # fmt: skip

URL_VARS = ("FOODMESH_POSTGRES_URL", "FOODMESH_REDIS_URL", "FOODMESH_NATS_URL")


class Command(Protocol):
    """A command module. It may also set ``LOG_FORMAT`` (None: it sets up its own logging)."""

    def add_parser(self, sub: Subparsers) -> None:
        """Adds the command (its name, help and options) to ``foodmesh``'s subparsers."""

    def run(self, args: argparse.Namespace) -> int:
        """Runs the parsed command; returns the exit status."""


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


class UsageError(CliError):
    """A wrong combination of a command's options: its usage and the message, exit code 2."""


def state_dir(args: argparse.Namespace) -> Path:
    raw = args.state_dir or os.environ.get("FOODMESH_STATE_DIR") or ".foodmesh"
    return Path(raw).absolute()


async def urls(state: Path) -> dict[str, str]:
    """Server URLs from the environment, else from the infra running under ``state``."""
    if all(os.environ.get(v) for v in URL_VARS):
        return {v: os.environ[v] for v in URL_VARS}
    from foodmesh import infra

    st = await infra.status(state)
    running = st.urls if st.all_running else None
    if running is None:
        raise CliError(
            f"no running infrastructure under {state}: start it with `foodmesh infra up`, "
            "or set " + ", ".join(URL_VARS)
        )
    found = {
        "FOODMESH_POSTGRES_URL": running.postgres_url,
        "FOODMESH_REDIS_URL": running.redis_url,
        "FOODMESH_NATS_URL": running.nats_url,
    }
    return {v: os.environ.get(v) or found[v] for v in URL_VARS}


def auth(process: str) -> AuthSettings:
    """The secrets this command runs with (the one decision, foodmesh.core.auth.auth_settings)."""
    try:
        return auth_settings(process=process)
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None
