"""Shared pieces of the benchmarks: load drivers, percentiles, progress, table, JSON.

Open loop (:func:`open_loop`) sends on a fixed schedule, call ``i`` at
``t0 + i / rate``, whatever the server does, and measures latency from that
*intended* send time: a server that falls behind shows its queueing in the
figures instead of quietly slowing the client down (coordinated omission).
Closed loop (:func:`closed_loop`) runs N callers back to back: the throughput
ceiling, whose latencies are not the ones users see.

Every benchmark runs on its own (``python benchmarks/<area>.py``), logs its
progress to stderr, prints a table, and with ``--json`` prints exactly one JSON
object on stdout (:func:`emit_json`) holding the raw baseline, ours and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from foodmesh.core.progress import Progress
from foodmesh.infra import InfraURLs

# Benchmarks run on a laptop's mesh: explicit development mode (the dev secret).
os.environ.setdefault("FOODMESH_DEV", "1")

__all__ = [
    "LatencyResult",
    "bench_infra",
    "fresh_database",
    "Progress",
    "ServerProcess",
    "closed_loop",
    "emit_json",
    "env_url",
    "machine",
    "now_iso",
    "open_loop",
    "parser",
    "print_table",
    "ratio",
    "server_process",
    "server_processes",
]

#: A send dispatched later than this after its intended time counts as ``late``:
#: the client, not the server, was behind, so its latencies say less about the server.
LATE_AFTER_S = 0.005


def machine() -> dict[str, Any]:
    """What the figures were measured on (load average included: the machine is shared)."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "loadavg_at_start": load,
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def now_iso() -> str:
    """The current time, UTC, to the second: the ``date`` of a JSON result."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def env_url(name: str) -> str | None:
    """The URL in environment variable ``name`` (e.g. ``FOODMESH_POSTGRES_URL``), or None.

    Benchmarks that need a real server take it from here and otherwise skip that
    part (or start one themselves), saying which variable would enable it.
    """
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """What one load phase achieved; latencies in milliseconds.

    ``sent`` counts every call attempted; ``errors`` those that failed;
    ``dropped`` those never sent because ``concurrency_cap`` calls were already
    open (each is a failure the server caused, not hidden); ``late`` those the
    client dispatched more than :data:`LATE_AFTER_S` behind schedule.
    """

    sent: int
    ok: int
    errors: int
    dropped: int
    late: int
    seconds: float
    #: Completed calls per second.
    rate: float
    #: Calls per second asked for (open loop), or None (closed loop).
    offered_rate: float | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    #: How far behind schedule the client dispatched, at worst (open loop).
    max_lag_ms: float = 0.0
    samples_s: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)

    @staticmethod
    def of(
        latencies_s: Sequence[float] | npt.NDArray[np.float64],
        *,
        errors: int,
        seconds: float,
        dropped: int = 0,
        late: int = 0,
        offered_rate: float | None = None,
        max_lag_s: float = 0.0,
    ) -> LatencyResult:
        samples = np.asarray(latencies_s, dtype=np.float64)
        if samples.size:
            ms = samples * 1000.0
            p50, p90, p99, p999 = (float(x) for x in np.percentile(ms, [50, 90, 99, 99.9]))
            worst, mean = float(ms.max()), float(ms.mean())
        else:
            p50 = p90 = p99 = p999 = worst = mean = math.nan
        return LatencyResult(
            sent=int(samples.size) + errors + dropped,
            ok=int(samples.size),
            errors=errors,
            dropped=dropped,
            late=late,
            seconds=seconds,
            rate=samples.size / seconds if seconds > 0 else 0.0,
            offered_rate=offered_rate,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            p999_ms=p999,
            max_ms=worst,
            mean_ms=mean,
            max_lag_ms=max_lag_s * 1000.0,
            samples_s=samples,
        )

    @staticmethod
    def combine(parts: Sequence[LatencyResult]) -> LatencyResult:
        """One result from several runs of the same phase (e.g. alternating rounds)."""
        seconds = sum(p.seconds for p in parts)
        offered = [p.offered_rate for p in parts if p.offered_rate is not None]
        return LatencyResult.of(
            np.concatenate([p.samples_s for p in parts]) if parts else np.zeros(0),
            errors=sum(p.errors for p in parts),
            seconds=seconds,
            dropped=sum(p.dropped for p in parts),
            late=sum(p.late for p in parts),
            offered_rate=(sum(offered) / len(offered)) if offered else None,
            max_lag_s=max((p.max_lag_ms for p in parts), default=0.0) / 1000.0,
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures for JSON (no samples; NaN, when nothing completed, becomes null)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "samples_s":
                continue
            v = getattr(self, name)
            if isinstance(v, float):
                v = None if math.isnan(v) else round(v, 3)
            out[name] = v
        return out


async def open_loop(
    send: Callable[[], Awaitable[None]],
    *,
    rate: float,
    duration: float,
    concurrency_cap: int = 10_000,
    progress: Progress | None = None,
) -> LatencyResult:
    """Calls ``send`` ``rate`` times a second for ``duration`` s, on schedule.

    Call ``i`` is due at ``t0 + i / rate``; its latency runs from then to its
    completion, so time spent waiting on the client's own backlog counts too.
    When ``concurrency_cap`` calls are open the due call is dropped (counted).
    Returns once every call sent has completed.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * duration))
    latencies = np.empty(total, dtype=np.float64)
    completed = errors = dropped = late = in_flight = 0
    max_lag = 0.0

    async def one(intended: float) -> None:
        nonlocal completed, errors, in_flight
        try:
            await send()
        except Exception:  # counted; the run goes on
            errors += 1
            if progress:
                progress.add(errors=1)
        else:
            latencies[completed] = loop.time() - intended
            completed += 1
            if progress:
                progress.add()
        finally:
            in_flight -= 1

    t0 = loop.time()
    async with asyncio.TaskGroup() as group:
        i = 0
        while i < total:
            now = loop.time()
            due = min(total, math.floor((now - t0) * rate) + 1)
            while i < due:
                intended = t0 + i / rate
                i += 1
                lag = now - intended
                max_lag = max(max_lag, lag)
                if lag > LATE_AFTER_S:
                    late += 1
                if in_flight >= concurrency_cap:
                    dropped += 1
                    continue
                in_flight += 1
                group.create_task(one(intended))
            if progress:
                progress.tick()
            # sleep(0) when behind: still lets the calls in flight make progress.
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
    seconds = loop.time() - t0
    if progress:
        progress.finish()
    return LatencyResult.of(
        latencies[:completed],
        errors=errors,
        seconds=seconds,
        dropped=dropped,
        late=late,
        offered_rate=rate,
        max_lag_s=max_lag,
    )


async def closed_loop(
    send: Callable[[], Awaitable[None]],
    *,
    concurrency: int,
    duration: float,
    progress: Progress | None = None,
) -> LatencyResult:
    """``concurrency`` callers back to back for ``duration`` s: the throughput ceiling.

    Latencies run from each call's actual start (they are not user-facing
    latencies: a closed loop waits for the server before sending more).
    """
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    t0 = loop.time()
    stop_at = t0 + duration

    async def caller() -> None:
        nonlocal errors
        while loop.time() < stop_at:
            start = loop.time()
            try:
                await send()
            except Exception:  # counted; the run goes on
                errors += 1
                if progress:
                    progress.add(errors=1)
            else:
                latencies.append(loop.time() - start)
                if progress:
                    progress.add()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(caller())
    seconds = loop.time() - t0
    if progress:
        progress.finish()
    return LatencyResult.of(latencies, errors=errors, seconds=seconds)


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A server running in a child process: where it listens and how much CPU it has used."""

    pid: int
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process, all threads (Linux; else None)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def bench_infra(name: str) -> AsyncIterator[InfraURLs]:
    """Our own PostgreSQL, Redis and NATS in a temporary directory, removed afterwards."""
    from foodmesh.infra import start_infra

    with tempfile.TemporaryDirectory(prefix=f"foodmesh-bench-{name}-") as tmp:
        async with start_infra(Path(tmp), durable=False, remove=True) as running:
            yield running.urls


async def fresh_database(admin_url: str, name: str) -> str:
    """A new, empty database next to ``admin_url``'s (dropped first if a run left it)."""
    import psycopg

    db = f"bench_{name}_{os.getpid()}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        await conn.execute(f'CREATE DATABASE "{db}"')
    return admin_url.rsplit("/", 1)[0] + f"/{db}"


@contextlib.asynccontextmanager
async def server_processes(
    *argvs: Sequence[str], ready_within: float = 30.0
) -> AsyncIterator[list[ServerProcess]]:
    """Runs one child process per ``argv``, all started at once, until the block exits.

    Each child prints ``READY <port>`` on stdout once it listens; its stderr goes
    to a log file, whose tail is shown if it fails to start. On exit each gets
    SIGTERM, then SIGKILL if it has not stopped within 10 s.
    """
    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-") as tmp:
        started: list[tuple[Sequence[str], asyncio.subprocess.Process, Path]] = []
        try:
            for i, argv in enumerate(argvs):
                log = Path(tmp) / f"server-{i}.log"
                with log.open("wb") as log_file:
                    proc = await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log_file,
                    )
                started.append((argv, proc, log))
            ready: list[ServerProcess] = []
            async with asyncio.timeout(ready_within):
                for argv, proc, log in started:
                    assert proc.stdout is not None
                    line = (await proc.stdout.readline()).decode()
                    if not line.startswith("READY "):
                        tail = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"server {' '.join(argv)} did not start:\n{tail}")
                    ready.append(ServerProcess(proc.pid, int(line.split()[1]), log))
            yield ready
        finally:
            for _, proc, _ in started:
                if proc.returncode is None:
                    proc.terminate()
            for _, proc, _ in started:
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                assert proc.stdout is not None
                await proc.stdout.read()  # to EOF, so the pipe's transport closes


@contextlib.asynccontextmanager
async def server_process(*argv: str, ready_within: float = 30.0) -> AsyncIterator[ServerProcess]:
    """One server in a child process: :func:`server_processes` with one ``argv``."""
    async with server_processes(argv, ready_within=ready_within) as (server,):
        yield server


def ratio(ours: float | None, raw: float | None) -> float | None:
    """``ours / raw`` rounded, or None when either is missing or raw is zero."""
    if ours is None or raw is None or raw == 0 or math.isnan(ours) or math.isnan(raw):
        return None
    return round(ours / raw, 3)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table on stdout: text left-aligned, numbers right-aligned."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    text = [[cell(v) for v in r] for r in rows]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in text:
        print(line(r))


def emit_json(obj: dict[str, Any]) -> None:
    """The one JSON object of ``--json``, on one line of stdout."""
    print(json.dumps(obj, sort_keys=True, allow_nan=False), flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--rate`` only where a benchmark has a rate)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="a short smoke run (~10 s)")
    p.add_argument("--duration", type=float, help="seconds per measured phase")
    p.add_argument("--rate", type=float, help="open-loop arrival rate, calls per second")
    return p
