"""stop_tasks: a shutdown that cannot hang on a task that swallows its cancellation."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from foodmesh.core.tasks import stop_tasks


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:  # like wait_for on 3.11 when the cancel races a result
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task], timeout_s=5.0), timeout=10)
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_never_ends_is_left_behind_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def immortal() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="foodmesh.core.tasks"):
        await stop_tasks([task, None], timeout_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 3.0
    assert "did not stop" in caplog.text and "immortal" in caplog.text
    assert not task.done()
    task.get_coro().close()  # type: ignore[union-attr]


async def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="foodmesh.core.tasks"):
        await stop_tasks([task])
    assert "boom" in caplog.text
