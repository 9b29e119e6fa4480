"""``foodmesh sim run``: a living city against the running platform, in real time.

Customers (HTTP, through the gateway) arrive as a Poisson process on the daily
demand curve; kitchens (HTTP) confirm and cook; drivers (gRPC streams) work
their shifts. It runs in real time because the platform does (offers lapse
after 20 real seconds): scale is set by rates and counts, never by a faster
clock. A progress line shows live counts and rates; ``record`` writes the
generated day as a ``foodmesh-trace/1`` file for ``foodmesh replay``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from foodmesh.core.tasks import stop_tasks
from foodmesh.sim.agents import Gateway, SimConfig, Stats, Tokens
from foodmesh.sim.city import CENTER, City, build_city
from foodmesh.sim.customers import Customers
from foodmesh.sim.demand import Arrivals
from foodmesh.sim.drivers import Fleet, Router
from foodmesh.sim.kitchens import Kitchens
from foodmesh.sim.trace import TraceRecorder, write_trace

__all__ = [
    "SimConfig",
    "SimConfigError",
    "SimResult",
    "format_progress",
    "run_sim",
    "upsert_drivers",
    "wait_for_gateway",
]

_log = logging.getLogger("foodmesh.sim")


class SimConfigError(ValueError):
    """Settings out of range; ``violations`` names each field and why."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {why}" for f, why in violations))
        self.violations = violations


@dataclass(frozen=True, slots=True)
class SimResult:
    stats: Stats
    orders_recorded: int
    trace_path: Path | None
    roads: str


_STAGES = ("placed", "confirmed", "ready", "picked", "delivered")


def format_progress(stats: Stats, *, last: dict[str, float] | None = None, dt_s: float = 0) -> str:
    """One line of live figures; rates over the last ``dt_s`` seconds when ``last`` is given."""
    c = stats.counts
    elapsed = max(stats.elapsed(), 1e-9)

    def rate(name: str) -> float:
        if last is not None and dt_s > 0:
            return (c[name] - last.get(name, 0.0)) / dt_s
        return c[name] / elapsed

    stages = " ".join(f"{k} {c[k]:,}" for k in _STAGES)
    extra = []
    for k in ("cancelled", "declined", "adopted", "stream_reconnects", "auto_confirmed",
              "confirm_timeout", "no_driver", "driver_lost"):  # fmt: skip
        if c[k]:
            extra.append(f"{k} {c[k]:,}")
    errors = ", ".join(f"{k} {v:,}" for k, v in stats.errors.most_common(4))
    bad = sum(stats.defended.values()), sum(stats.breached.values())
    return (
        f"sim {elapsed:,.0f}s | {stages}{' ' + ' '.join(extra) if extra else ''}"
        f" ({rate('placed') * 60:,.1f} orders/min)"
        f" | offers {c['offers']:,} ({c['offers_accepted']:,} taken)"
        f" | drivers {stats.drivers_online:,} on, {stats.drivers_busy:,} busy"
        f" | fixes {c['fixes_sent']:,} ({rate('fixes_sent'):,.0f}/s)"
        f" | errors {sum(stats.errors.values()):,}{' (' + errors + ')' if errors else ''}"
        f" | bad actors {bad[0]:,} refused, {bad[1]:,} breached"
    )


async def _report(stats: Stats, every_s: float) -> None:
    tty = sys.stderr.isatty()
    every = min(every_s, 1.0) if tty else every_s
    last: dict[str, float] = {}
    t_last = time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        line = format_progress(stats, last=last, dt_s=now - t_last)
        last, t_last = dict(stats.counts), now
        if tty:
            sys.stderr.write("\r\x1b[K" + line[:400])
            sys.stderr.flush()
        else:
            print(line, file=sys.stderr, flush=True)


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> bool:
    """Sleeps ``seconds``; True if ``stop`` was set meanwhile."""
    if stop.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def wait_for_gateway(
    url: str, *, within_s: float = 120.0, stop: asyncio.Event | None = None
) -> bool:
    """Waits until the gateway's ``/readyz`` answers 200 (the platform is up); False on time out.

    ``foodmesh up`` may start the simulator beside the services it is starting.
    """
    import aiohttp

    t0 = time.monotonic()
    next_log = t0 + 5.0
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url.rstrip("/") + "/readyz",
                                    timeout=aiohttp.ClientTimeout(total=2.0)) as resp:  # fmt: skip
                    if resp.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            now = time.monotonic()
            if now - t0 > within_s or (stop is not None and stop.is_set()):
                return False
            if now >= next_log:
                next_log = now + 5.0
                _log.info("waiting for the gateway at %s to be ready (%.0fs)", url, now - t0)
            await asyncio.sleep(0.5)


async def upsert_drivers(config: SimConfig, dispatch_target: str, *, concurrency: int = 16) -> int:
    """Writes the simulated drivers' profiles into Dispatch (idempotent), so sessions know them.

    Returns how many were written; 0 when Dispatch does not answer (the drivers then
    only stream fixes, and the simulation says so in its error counts).
    """
    from clients import ClientOptions, DispatchClient
    from foodmesh.core.progress import Progress
    from foodmesh.sim.seed import service_credentials
    from foodmesh.v1 import dispatch_pb2

    city = build_city(seed=config.seed, restaurants=1, drivers=config.drivers, customers=1)
    if not city.drivers:
        return 0
    options = ClientOptions(
        credentials=service_credentials("sim").metadata, deadline_s=10.0, tracing=False
    )
    progress = Progress("drivers' profiles", total=len(city.drivers))
    queue = list(reversed(city.drivers))
    async with DispatchClient(dispatch_target, options=options) as dispatch:

        async def worker() -> None:
            while queue:
                spec = queue.pop()
                await dispatch.upsert_driver(dispatch_pb2.UpsertDriverRequest(driver=spec.driver))
                progress.add()

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        except grpc.aio.AioRpcError as exc:
            _log.warning("drivers' profiles not written: Dispatch answered %s (%s)",
                         exc.code().name, exc.details())  # fmt: skip
            return 0
    progress.finish()
    return len(city.drivers)


async def run_sim(
    config: SimConfig,
    *,
    record: str | Path | None = None,
    stop: asyncio.Event | None = None,
    city: City | None = None,
    stats: Stats | None = None,
) -> SimResult:
    """Runs the city for ``config.duration_s`` seconds (or until ``stop`` is set).

    ``stats`` lets the caller watch the live counters (and set ``stop`` on a figure).
    """
    problems = config.problems()
    if problems:
        raise SimConfigError(problems)
    stop = stop or asyncio.Event()
    city = city or build_city(seed=config.seed, restaurants=config.restaurants,
                              drivers=config.drivers, customers=config.customers)  # fmt: skip
    start = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    if stats is None:
        stats = Stats(started=t0)
    stats.started = t0
    tokens = Tokens(config.auth_secret)
    rng = random.Random(f"{config.seed}:sim")
    run_id = uuid.uuid4().hex[:8]
    recorder = (
        TraceRecorder(name=f"sim-{config.seed}-{start:%Y%m%dT%H%M}", origin=CENTER,
                      source=f"foodmesh sim run --seed {config.seed} at {start.isoformat()}")
        if record is not None else None
    )  # fmt: skip
    router = await Router.create(use_roads=config.roads, travel_scale=config.travel_scale)
    tasks: set[asyncio.Task[None]] = set()

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            stats.error(f"agent_crash_{type(exc).__name__}")
            _log.error("a simulated agent crashed: %r", exc, exc_info=exc)

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        tasks.add(t)
        t.add_done_callback(done)

    _log.info(
        "simulating %d restaurants, %d drivers, %d customers at %.0f orders/h%s for %s"
        " against %s (drivers: %s, %s)",
        len(city.restaurants), len(city.drivers), len(city.customers), config.orders_per_hour,
        " (flat)" if config.flat_demand else " (daily curve)",
        f"{config.duration_s:.0f}s" if config.duration_s else "ever", config.gateway,
        router.kind, "with Dispatch" if config.dispatch_target else "fixes only",
    )  # fmt: skip
    reporter = asyncio.create_task(_report(stats, config.progress_every_s))
    async with Gateway(config.gateway, tokens=tokens, stats=stats,
                       timeout_s=config.http_timeout_s) as gateway:  # fmt: skip
        kitchens = Kitchens(config=config, gateway=gateway, stats=stats, recorder=recorder,
                            clock=clock, rng=random.Random(f"{config.seed}:kitchens"))  # fmt: skip
        customers = Customers(city=city, config=config, gateway=gateway, stats=stats,
                              kitchens=kitchens, recorder=recorder, clock=clock,
                              rng=random.Random(f"{config.seed}:customers:{run_id}"),
                              spawn=spawn, run_id=run_id)  # fmt: skip
        fleet = Fleet(drivers=city.drivers, config=config, stats=stats, tokens=tokens,
                      router=router, recorder=recorder, clock=clock, start=start,
                      rng=rng)  # fmt: skip
        fleet.food_ready = kitchens.ready_event
        fleet.pin_of = customers.pin_of
        try:
            for agent in fleet.agents:
                spawn(agent.run())
            by_id = {r.restaurant_id: r for r in city.restaurants}
            spawn(kitchens.listen(by_id, spawn, stop))
            arrivals = Arrivals(config.orders_per_hour, start, random.Random(f"{config.seed}:arr"),
                                flat=config.flat_demand)  # fmt: skip
            horizon = config.duration_s if config.duration_s > 0 else float("inf")
            n = 0
            at = arrivals.next(0.0)
            while at < horizon:
                if await _sleep_or_stop(at - clock(), stop):
                    break
                spawn(customers.order(n))
                n += 1
                at = arrivals.next(at)
            if horizon != float("inf"):
                await _sleep_or_stop(horizon - clock(), stop)
            else:
                await stop.wait()
        finally:
            end_s = clock()
            await fleet.leave()
            await stop_tasks(list(tasks), timeout_s=10.0)
            await fleet.close()
            await stop_tasks([reporter], timeout_s=2.0)
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            print(format_progress(stats), file=sys.stderr, flush=True)
    path = None
    recorded = 0
    if recorder is not None and record is not None:
        trace = recorder.trace(end_s=end_s)
        path = write_trace(trace, record)
        recorded = len(trace.orders)
        _log.info("recorded %d orders and %d courier shifts in %s", recorded,
                  len(trace.couriers), path)  # fmt: skip
    if router.road_failures:
        _log.info("%d drives went straight (off the road graph)", router.road_failures)
    return SimResult(stats, recorded, path, router.kind)
