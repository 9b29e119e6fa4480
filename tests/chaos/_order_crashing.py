"""The Order service, killed (SIGKILL) at one point of PlaceOrder: a chaos test's process.

``python -m tests.chaos._order_crashing authorized`` (after the card hold, before the
commit) or ``placed`` (after the commit, before the relay publishes) serves Order as
``foodmesh serve order`` does, with placement hooks that kill the process there. The
production code has no such switch: only this test-only entry point installs the hooks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import grpc

from servers.order import SPEC, build
from servers.runtime.serve import Resources, serve

POINTS = ("authorized", "placed")
_log = logging.getLogger("foodmesh.order")


class CrashAt:
    """Placement hooks that SIGKILL this process when the placement reaches ``point``."""

    def __init__(self, point: str) -> None:
        self.point = point

    def reached(self, point: str) -> None:
        if point == self.point:
            _log.error("crash at %s: killing this process", point)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in POINTS:
        print(f"usage: python -m tests.chaos._order_crashing {{{'|'.join(POINTS)}}}",
              file=sys.stderr)  # fmt: skip
        return 2
    hooks = CrashAt(argv[0])

    async def register(
        server: grpc.aio.Server, resources: Resources
    ) -> Callable[[], Awaitable[None]]:
        return await build(server, resources, hooks=hooks)

    return serve(dataclasses.replace(SPEC, register=register))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
