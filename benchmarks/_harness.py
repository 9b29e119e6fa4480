"""Shared pieces of the benchmarks: open-loop load, percentiles, progress, table, JSON.

Open loop means requests are sent on a fixed schedule (t0 + i/rate) whatever
the server does, and latency runs from the *intended* send time: a server that
falls behind shows its queueing in the figures instead of slowing the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LatencyResult",
    "Progress",
    "closed_loop",
    "emit_json",
    "machine",
    "open_loop",
    "parser",
    "print_table",
]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": time.strftime("%Y-%m-%d"),
    }


class Progress:
    """Log lines on stderr, at most one a second: done so far and the rate."""

    def __init__(self, label: str, *, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._t0 = time.perf_counter()
        self._last = self._t0

    def add(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= 1.0:
            self._last = now
            self._print(now)

    def finish(self) -> None:
        self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        rate = self.done / max(now - self._t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        print(f"  {self.label}: {self.done}{of} in {now - self._t0:.1f}s ({rate:,.0f}/s)",
              file=sys.stderr, flush=True)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Latencies in milliseconds and what was achieved."""

    sent: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(latencies_s: Sequence[float], *, errors: int, seconds: float) -> LatencyResult:
        ms = np.asarray(latencies_s, dtype=float) * 1000 if latencies_s else np.zeros(1)
        q = np.percentile(ms, [50, 90, 99, 99.9])
        return LatencyResult(
            sent=len(latencies_s) + errors, errors=errors, seconds=seconds,
            rate=len(latencies_s) / seconds if seconds else 0.0,
            p50_ms=float(q[0]), p90_ms=float(q[1]), p99_ms=float(q[2]), p999_ms=float(q[3]),
            max_ms=float(ms.max()), mean_ms=float(ms.mean()),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


async def open_loop(
    send: Callable[[], Awaitable[None]],
    *,
    rate: float,
    duration: float,
    progress: Progress | None = None,
    max_in_flight: int = 10_000,
) -> LatencyResult:
    """Calls ``send`` ``rate`` times a second for ``duration`` s; latency from intended start."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    in_flight: set[asyncio.Task[None]] = set()
    total = int(rate * duration)
    t0 = loop.time()

    async def one(intended: float) -> None:
        nonlocal errors
        try:
            await send()
            latencies.append(loop.time() - intended)
        except Exception:  # noqa: BLE001 — counted, the run goes on
            errors += 1
        if progress:
            progress.add()

    for i in range(total):
        intended = t0 + i / rate
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            errors += 1  # the client cannot keep more open: counted as a failure, not hidden
            continue
        task = asyncio.create_task(one(intended))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
    if progress:
        progress.finish()
    return LatencyResult.of(latencies, errors=errors, seconds=loop.time() - t0)


async def closed_loop(
    send: Callable[[], Awaitable[None]],
    *,
    concurrency: int,
    duration: float,
    progress: Progress | None = None,
) -> LatencyResult:
    """``concurrency`` callers back to back for ``duration`` s: the throughput ceiling."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    stop_at = loop.time() + duration
    t0 = loop.time()

    async def caller() -> None:
        nonlocal errors
        while loop.time() < stop_at:
            start = loop.time()
            try:
                await send()
                latencies.append(loop.time() - start)
            except Exception:  # noqa: BLE001 — counted, the run goes on
                errors += 1
            if progress:
                progress.add()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    if progress:
        progress.finish()
    return LatencyResult.of(latencies, errors=errors, seconds=loop.time() - t0)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table on stdout."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def emit_json(obj: dict[str, Any]) -> None:
    """The one JSON object of ``--json``, on stdout."""
    print(json.dumps(obj, indent=None, sort_keys=True))


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quick", action="store_true", help="a short smoke run (~10 s)")
    p.add_argument("--duration", type=float, help="seconds per measured phase")
    return p
