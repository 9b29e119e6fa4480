"""The hang report names the line each task waits on (see tests/_hang_dump.py)."""

from __future__ import annotations

import asyncio
import io

from tests._hang_dump import dump_tasks


async def _parked(ev: asyncio.Event) -> None:
    await ev.wait()  # the line the report must name


async def test_the_report_names_the_await_a_task_is_parked_on() -> None:
    ev = asyncio.Event()
    task = asyncio.create_task(_parked(ev), name="parked-here")
    await asyncio.sleep(0)
    try:
        text = dump_tasks(io.StringIO())
        block = text.split("parked-here", 1)[1]
        assert "in _parked" in block
        assert "locks.py" in block and "in wait" in block
    finally:
        ev.set()
        await task
