"""The start-up retry helper: backoff, its log lines, and giving up at a deadline."""

from __future__ import annotations

import logging
import random

import pytest

from servers.runtime.retry import retry

_LOG = logging.getLogger("tests.retry")


class Flaky:
    """A step that fails ``failures`` times (each with its own error), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.raised: list[Exception] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            exc = ConnectionError(f"refused #{self.calls}")
            self.raised.append(exc)
            raise exc
        return "up"


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == _LOG.name]


async def test_retries_until_the_step_succeeds_and_warns_with_the_attempt_and_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOG.name)
    step = Flaky(3)
    got = await retry("the event stream", step, first_s=0.001, max_s=0.004, log=_LOG)
    assert (got, step.calls) == ("up", 4)
    warnings = _lines(caplog, logging.WARNING)
    # Rate-limited: the first failure warns, the next two (within warn_every_s) are DEBUG.
    assert len(warnings) == 1
    assert warnings[0].startswith("the event stream failed (attempt 1): refused #1; next try in ")
    debug = _lines(caplog, logging.DEBUG)
    assert [d.split(";")[0] for d in debug] == [
        "the event stream failed (attempt 2): refused #2",
        "the event stream failed (attempt 3): refused #3",
    ]


async def test_a_warning_counts_the_failures_it_did_not_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOG.name)
    step = Flaky(3)
    await retry("x", step, first_s=0.001, max_s=0.001, log=_LOG, warn_every_s=0.0)
    assert [w.split(";")[0] for w in _lines(caplog, logging.WARNING)] == [
        "x failed (attempt 1): refused #1",
        "x failed (attempt 2): refused #2",
        "x failed (attempt 3): refused #3",
    ]


async def test_failures_within_the_quiet_start_are_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOG.name)
    step = Flaky(2)
    await retry("x", step, first_s=0.001, max_s=0.001, log=_LOG, quiet_s=3600.0)
    assert _lines(caplog, logging.WARNING) == []
    assert len(_lines(caplog, logging.DEBUG)) == 2


async def test_waits_double_up_to_the_cap_with_jitter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOG.name)
    step = Flaky(6)
    await retry("x", step, first_s=0.01, max_s=0.08, log=_LOG, warn_every_s=0.0,
                rng=random.Random(7))  # fmt: skip
    waits = [float(w.rsplit(" ", 1)[1].rstrip("s")) for w in _lines(caplog, logging.WARNING)]
    steps = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    assert len(waits) == len(steps)
    for wait, step_s in zip(waits, steps, strict=True):  # logged to 2 decimals
        assert step_s * 0.5 - 0.005 <= wait <= step_s + 0.005


async def test_gives_up_at_its_deadline_with_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=_LOG.name)
    step = Flaky(10**9)
    with pytest.raises(ConnectionError) as raised:
        await retry("the consumer", step, first_s=0.001, max_s=0.002, deadline_s=0.05, log=_LOG)
    assert step.calls >= 2
    assert raised.value is step.raised[-1]
    last = _lines(caplog, logging.WARNING)[-1]
    assert last.startswith(f"the consumer failed (attempt {step.calls}): refused #{step.calls}; ")
    assert "giving up after" in last


async def test_cancellation_is_not_retried() -> None:
    import asyncio

    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    task = asyncio.create_task(retry("x", hangs, first_s=0.001, log=_LOG))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
