"""Retries a start-up step (a stream to declare, a consumer to bind) until it succeeds.

Waits grow exponentially from ``first_s`` to ``max_s``, each drawn between half and
all of its step (jitter: replicas started together do not retry in step). A failure
is logged as a WARNING naming what failed, the attempt and the next wait, at most
once per ``warn_every_s`` (the lines between go to DEBUG, and the next WARNING counts
them); failures in the first ``quiet_s`` seconds, while the dependencies of a
starting process normally come up, go to DEBUG only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["retry"]

T = TypeVar("T")


async def retry(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    first_s: float = 0.1,
    max_s: float = 2.0,
    deadline_s: float | None = None,
    log: logging.Logger,
    warn_every_s: float = 30.0,
    quiet_s: float = 0.0,
    rng: random.Random | None = None,
) -> T:
    """``attempt()``'s result, calling it again after each failure.

    Raises the last failure once the next wait would end past ``deadline_s`` seconds
    after the first call (None: retries until cancelled).
    """
    draw = rng or random.Random()
    started = time.monotonic()
    last_warned: float | None = None
    unreported = 0
    n = 0
    while True:
        n += 1
        try:
            return await attempt()
        except Exception as exc:
            now = time.monotonic()
            wait = min(max_s, first_s * 2 ** min(n - 1, 30)) * draw.uniform(0.5, 1.0)
            if deadline_s is not None and now - started + wait > deadline_s:
                log.warning("%s failed (attempt %d): %s; giving up after %.1fs",
                            what, n, exc, now - started)  # fmt: skip
                raise
            unreported += 1
            quiet = now - started < quiet_s
            due = last_warned is None or now - last_warned >= warn_every_s
            if quiet or not due:
                log.debug("%s failed (attempt %d): %s; next try in %.2fs", what, n, exc, wait)
            else:
                more = f", {unreported - 1} more since the last line" if unreported > 1 else ""
                log.warning("%s failed (attempt %d%s): %s; next try in %.2fs",
                            what, n, more, exc, wait)  # fmt: skip
                last_warned, unreported = now, 0
        await asyncio.sleep(wait)
