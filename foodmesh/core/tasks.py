"""Stopping background tasks at shutdown, with a bound.

``task.cancel(); await task`` hangs forever if the task swallows its cancellation:
on Python 3.11 ``asyncio.wait_for`` does exactly that when the awaited thing
finishes at the moment the cancel arrives (gh-86296), and a loop around it then
carries on. A shutdown must not depend on every loop being written perfectly, so
``stop_tasks`` cancels again while a task lives, and gives up (logging which task)
after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_tasks"]

_log = logging.getLogger(__name__)


async def stop_tasks(
    tasks: Iterable[asyncio.Future[Any] | None], *, timeout_s: float = 5.0
) -> None:
    """Cancels ``tasks`` (``None`` entries are skipped) and waits until they have ended.

    A task's exception is logged, not raised: shutdown goes on. A task still running
    after ``timeout_s`` is logged and left behind.
    """
    live = {t for t in tasks if t is not None}
    ended: list[asyncio.Future[Any]] = []
    deadline = time.monotonic() + timeout_s
    while live:
        for t in live:
            t.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            for t in live:
                _log.warning("task %r did not stop within %.1fs; left behind", t, timeout_s)
            break
        done, live = await asyncio.wait(live, timeout=min(left, 0.5))
        ended.extend(done)
    for t in ended:
        if not t.cancelled() and t.exception() is not None:
            _log.warning("task %r ended with %r", t, t.exception())
