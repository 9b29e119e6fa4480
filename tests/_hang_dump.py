"""When a test is about to hit its pytest-timeout, print where every asyncio task waits.

pytest-timeout dumps the threads' stacks, and for an asyncio test that is only the
event loop idling in ``select``: it says nothing of which ``await`` never returned.
A few seconds before the limit this prints each live task's coroutine stack, so a
hang seen once in CI names its line.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Iterator

import pytest

_MARGIN_S = 5.0


def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    try:
        return float(item.config.getini("timeout") or 0)
    except (ValueError, KeyError):
        return 0.0


def _awaits(coro: object) -> list[str]:
    """The chain of awaits a suspended coroutine is in, outermost first (file:line)."""
    lines: list[str] = []
    for _ in range(64):
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        nxt = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
        if nxt is None:
            if coro is not None and frame is None:
                lines.append(f"awaiting {coro!r}")
            break
        coro = nxt
    return lines


def dump_tasks(out: io.TextIOBase | None = None) -> str:
    """Every live asyncio task (of any loop) with its coroutine stack, as text."""
    buf = io.StringIO()
    for _ in range(3):  # the set may change under us: the loop runs in another thread
        try:
            tasks = list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
            break
        except RuntimeError:
            continue
    else:
        tasks = []
    buf.write(f"---- {len(tasks)} asyncio tasks near the test's timeout ----\n")
    for t in tasks:
        if t.done():
            continue
        buf.write(f"\n{t!r}\n")
        try:
            for line in _awaits(t.get_coro()):
                buf.write(f"  {line}\n")
        except Exception as exc:  # a frame gone under us: say so, go on
            buf.write(f"  (stack unavailable: {exc!r})\n")
    text = buf.getvalue()
    (out or sys.stderr).write(text)
    return text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    limit = _limit(item)
    timer = None
    if limit > _MARGIN_S * 2:
        timer = threading.Timer(limit - _MARGIN_S, dump_tasks)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
