"""Location ingest: simulated drivers on bidi streams against one Location process.

Phases, each against the same Location process (a child process) on real Redis,
NATS and PostgreSQL (started here, or given by ``FOODMESH_*_URL``):

- ``raw GEOADD``: the baseline — pipelined GEOADDs (1,000 per pipeline) from one
  Python process against the same Redis, fixes per second;
- ``1k @1/s`` and ``10k @1/s``: N drivers, each on its own StreamLocations stream,
  one fix per second each, open loop (every driver's send times are fixed in
  advance; the ack latency is measured from the *intended* send time, so a server
  that falls behind shows its queueing);
- ``Nk @1/s xB`` (with ``--batch`` B > 1): the open-loop schedule, each message
  carrying B fixes; ``--batch-drivers`` sets N (``--batch 10 --batch-drivers 2000``
  offers 20,000 fixes/s);
- ``max rate``: the same streams sending back to back (each waits only for its
  ack), ``--batch`` fixes per message (1 = live reporting; more = an app
  flushing what it buffered offline). The per-driver throttle is raised for this
  benchmark (``FOODMESH_LOCATION_MAX_FIXES_PER_S``) so it measures the pipeline;
- ``raw gRPC echo``: the max-rate load against a bare grpc.aio server that acks each
  message at once: what the transport alone costs per message on this machine.

Reported: accepted fixes/s, ack p50/p99 (ms), fix-to-subscriber p99 through NATS
(device time of the fix to a NATS subscriber's receipt, sampled on 1% of drivers),
Redis commands per accepted fix (from the server's INFO), Location RSS, CPU, and
ours / raw GEOADD rate. Drivers run in ``--workers`` child processes, which share
the machine with the server: their CPU and how late they sent (p99 of how far
behind its intended time each message went out, open loop) are reported too. A
stream that gRPC cancels while every driver connects at once is opened again
before the first fix, and each phase starts once the phase before has left
nothing behind (its drivers taken offline, the server idle).
``--phases`` picks the phases after raw GEOADD (``live,batch,max,echo``).

    python benchmarks/location.py                 # 1k and 10k drivers, 30 s each
    python benchmarks/location.py --quick --json  # ~1 min smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    ServerProcess,
    emit_json,
    env_url,
    machine,
    now_iso,
    parser,
    print_table,
    ratio,
    server_process,
)

SF = (37.7749, -122.4194)
NS = "bench"


# --- the Location process ------------------------------------------------------------------


async def _serve() -> None:
    from servers import location
    from servers.runtime.config import Settings
    from servers.runtime.serve import configure_logging, run_service

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings.from_env("location")
    configure_logging(settings.log_level)
    async with run_service(location.SPEC, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


async def _serve_raw() -> None:
    """The gRPC baseline: a bare grpc.aio server that acks every message at once, no work."""
    from foodmesh.v1 import location_pb2

    async def echo(requests: Any, context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            req = location_pb2.StreamLocationsRequest.FromString(raw)
            ack = location_pb2.StreamLocationsResponse(accepted=len(req.fixes))
            ack.acked_seq = req.fixes[-1].seq if req.fixes else 0
            ack.next_interval.seconds = 5
            yield ack.SerializeToString()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "foodmesh.v1.LocationService",
        {"StreamLocations": grpc.stream_stream_rpc_method_handler(echo)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await stop.wait()
    await server.stop(2)


# --- the drivers (child processes) ---------------------------------------------------------


class _Message:
    """One driver's request, built once and refilled for every send.

    The load generator shares the 2 cores with the server: building ``batch`` new
    fixes per message cost it ~3x what refilling them costs (grpc serialises the
    request inside ``write``, so refilling after it returns is safe).
    """

    def __init__(self, batch: int) -> None:
        from foodmesh.v1 import location_pb2

        self.request = location_pb2.StreamLocationsRequest()
        for _ in range(batch):
            self.request.fixes.add(accuracy=5.0, heading=90.0, speed=20.0)
        self._fixes = [(f, f.timestamp) for f in self.request.fixes]

    def fill(self, lat: float, lon: float, ts: float, first_seq: int) -> Any:
        """Fixes ``ts, ts + 1 ms, ...`` at one position, seqs from ``first_seq``."""
        for j, (f, stamp) in enumerate(self._fixes):
            t = ts + j * 1e-3
            f.lat, f.lon, f.seq = lat, lon, first_seq + j
            stamp.seconds, stamp.nanos = int(t), int((t % 1) * 1e9)
        return self.request


async def _drive(args: argparse.Namespace) -> None:
    """Runs drivers ``offset .. offset+count`` and writes their results to ``args.out``."""
    from foodmesh.core.auth import DEV_SECRET, bearer, mint_token
    from foodmesh.v1 import location_pb2, location_pb2_grpc

    rng = random.Random(args.offset)
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    stubs = [location_pb2_grpc.LocationServiceStub(c) for c in channels]
    latencies: list[float] = []
    lags: list[float] = []  # how late this process sent each message (its own CPU share)
    statuses: list[str] = []
    accepted = 0
    errors = 0
    reopened = 0
    ready = asyncio.Event()
    opened = 0
    t0_holder: list[float] = []

    async def driver(i: int) -> None:
        nonlocal accepted, errors, opened, reopened
        driver_id = f"drv_{args.offset + i:06d}"
        meta = bearer(mint_token(DEV_SECRET, subject=driver_id, role="driver"))
        lat = SF[0] + rng.uniform(-0.1, 0.1)
        lon = SF[1] + rng.uniform(-0.1, 0.1)

        def open_stream() -> Any:
            return stubs[i % len(stubs)].StreamLocations(metadata=meta, timeout=args.duration + 120)

        call = open_stream()
        opened += 1
        if opened == args.count:
            ready.set()
        await ready.wait()
        # Every driver connecting in the same second is a reconnect storm, not the
        # steady state measured here: gRPC cancels the calls that wait beyond
        # grpc.server.max_pending_requests (1,000) for the server to take them. Like an
        # app, a driver whose stream ended before its first fix opens it again.
        while time.time() < t0_holder[0] - 1.0:
            await asyncio.sleep(0.5 + 0.5 * rng.random())
            if call.done():
                reopened += 1
                call = open_stream()
        t0 = t0_holder[0]
        phase = rng.random()  # spread the drivers over each second
        seq = 0
        message = _Message(args.batch)
        try:
            while True:
                if args.mode == "open":
                    intended = t0 + (phase + seq) / args.per_driver_rate
                    if intended - t0 > args.warmup + args.duration:
                        break
                    delay = intended - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    intended = time.time()
                    if intended - t0 > args.warmup + args.duration:
                        break
                lat += rng.uniform(-1e-4, 1e-4)
                lon += rng.uniform(-1e-4, 1e-4)
                if intended >= t0 + args.warmup:
                    lags.append(time.time() - intended)
                await call.write(message.fill(lat, lon, intended, seq * args.batch))
                ack = await call.read()
                if not isinstance(ack, location_pb2.StreamLocationsResponse):  # EOF
                    errors += 1
                    return
                if intended >= t0 + args.warmup:  # opening streams is not the steady state
                    latencies.append(time.time() - intended)
                    accepted += ack.accepted
                seq += 1
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            errors += 1
            if not statuses:
                statuses.append(f"{await call.code()}: {await call.details()}")

    async def cpu_window() -> float:
        """This process's CPU share (%) over the measured window."""
        await asyncio.sleep(max(0.0, args.start_at + args.warmup - time.time()))
        c0, w0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.duration)
        return 100 * (time.process_time() - c0) / (time.monotonic() - w0)

    async def freeze() -> None:
        """Once every stream is open: out of the collector's sight, as the servers do it."""
        await asyncio.sleep(max(0.0, args.start_at - 0.5 - time.time()))
        gc.collect()
        gc.freeze()

    t0_holder.append(args.start_at)
    cpu = asyncio.create_task(cpu_window())
    frozen = asyncio.create_task(freeze())
    await asyncio.gather(*(driver(i) for i in range(args.count)))
    cpu_percent = await cpu
    await frozen
    for c in channels:
        await c.close()
    if statuses:
        print(f"driver streams failed ({errors}); first: {statuses[0]}", file=sys.stderr)
    if reopened:
        print(f"{reopened} driver streams cancelled while connecting, reopened", file=sys.stderr)
    _write_results(args.out, latencies, lags, accepted, errors, cpu_percent)


def _write_results(
    out: str,
    latencies: list[float],
    lags: list[float],
    accepted: int,
    errors: int,
    cpu_percent: float,
) -> None:
    np.save(out, np.asarray(latencies, dtype=np.float64))
    np.save(out + ".lag.npy", np.asarray(lags, dtype=np.float64))
    totals = {"accepted": accepted, "errors": errors, "cpu_percent": cpu_percent}
    Path(out + ".json").write_text(json.dumps(totals))


@dataclass(slots=True)
class _Load:
    """What the driver processes measured: ack latencies, send lags, totals."""

    latencies: Any
    lags: Any
    accepted: int
    errors: int
    cpu_percent: float


def _read_results(outs: Sequence[str]) -> _Load:
    """Latency samples, send lags, accepted fixes, errors and CPU of every driver process."""
    samples, lags, accepted, errors, cpu = [], [], 0, 0, 0.0
    for out in outs:
        if not Path(out).exists() or not Path(out + ".json").exists():
            errors += 1  # the process died before writing: count it, never hide it
            continue
        samples.append(np.load(out))
        lags.append(np.load(out + ".lag.npy"))
        totals = json.loads(Path(out + ".json").read_text())
        accepted += int(totals["accepted"])
        errors += int(totals["errors"])
        cpu += float(totals["cpu_percent"])
    return _Load(
        np.concatenate(samples) if samples else np.zeros(0),
        np.concatenate(lags) if lags else np.zeros(0),
        accepted,
        errors,
        cpu,
    )


# --- the orchestrator ----------------------------------------------------------------------


@dataclass(slots=True)
class PhaseResult:
    name: str
    drivers: int
    ack: LatencyResult
    accepted_per_s: float
    fanout_p99_ms: float | None
    redis_ops_per_fix: float | None
    rss_mb: float | None
    cpu_percent: float | None
    #: The driver processes: how late they sent (p99, ms) and their CPU (%, all of them).
    send_lag_p99_ms: float | None = None
    load_cpu_percent: float | None = None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _redis_commands(redis_url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        info = await client.info("stats")
        return int(info["total_commands_processed"])
    finally:
        await client.aclose()


async def raw_geoadd(redis_url: str, *, total: int, pipeline: int = 1000) -> float:
    """Fixes/s of pipelined GEOADDs from this process: the ceiling for one Python writer."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    rng = random.Random(1)
    try:
        points = [
            (SF[1] + rng.uniform(-0.1, 0.1), SF[0] + rng.uniform(-0.1, 0.1))
            for _ in range(pipeline)
        ]
        start = time.perf_counter()
        done = 0
        while done < total:
            pipe = client.pipeline(transaction=False)
            for j, (lon, lat) in enumerate(points):
                pipe.geoadd(f"{NS}:raw:{{9q8y}}:geo", (lon, lat, f"drv_{(done + j) % 10_000}"))
            await pipe.execute()
            done += pipeline
        elapsed = time.perf_counter() - start
        await client.delete(f"{NS}:raw:{{9q8y}}:geo")
        return done / elapsed
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _subscriber(
    nats_url: str, driver_ids: Sequence[str], *, since: float
) -> AsyncIterator[list[float]]:
    """Fix-to-subscriber latency: device time of each fix to its receipt here."""
    import nats

    from foodmesh.core.events import DRIVER_LOCATIONS
    from foodmesh.core.nats import Subjects

    samples: list[float] = []
    nc = await nats.connect(nats_url)

    async def on_msg(msg: Any) -> None:
        ev = DRIVER_LOCATIONS.decode(msg.data)
        sent = ev.position.last_updated.ToNanoseconds() / 1e9
        if sent >= since:
            samples.append(time.time() - sent)

    for d in driver_ids:
        await nc.subscribe(Subjects(NS).subject(DRIVER_LOCATIONS.subject(d)), cb=on_msg)
    await nc.flush()
    try:
        yield samples
    finally:
        await nc.close()


async def _online_drivers(redis_url: str) -> int:
    """Drivers the live store holds online (in its presence sets)."""
    import redis.asyncio as aioredis

    from foodmesh.core.redis import Keys
    from servers.location.store import LiveStore

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = LiveStore(client, Keys(NS)).presence_keys()
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        return sum(await pipe.execute())
    finally:
        await client.aclose()


async def _settle(
    server: ServerProcess, redis_url: str | None, *, idle: float = 0.1, within: float = 120.0
) -> None:
    """Waits until the phase before has left nothing behind, so that a phase measures its
    own load only: every driver it ran taken offline by the presence sweep (the presence
    timeout after its last fix: 10,000 drivers going offline cost the server seconds),
    and the server idle (an overloaded phase leaves a backlog)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if redis_url is not None and await _online_drivers(redis_url):
            await asyncio.sleep(1.0)
            continue
        c0 = server.cpu_seconds()
        await asyncio.sleep(1.0)
        c1 = server.cpu_seconds()
        if c0 is None or c1 is None or c1 - c0 < idle:
            return
    print(f"the phase before still shows after {within:g} s; measuring anyway", file=sys.stderr)


async def run_phase(
    name: str,
    server: ServerProcess,
    urls: dict[str, str],
    *,
    drivers: int,
    duration: float,
    mode: str,
    batch: int,
    workers: int,
    offset: int,
    warmup: float,
    presence: bool = True,
) -> PhaseResult:
    await _settle(server, urls["redis"] if presence else None)
    per_worker = [drivers // workers + (1 if i < drivers % workers else 0) for i in range(workers)]
    sampled = [f"drv_{offset + i:06d}" for i in range(0, drivers, 100)]
    # Counted from the fan-out sample (one driver in 100): fixes accepted, roughly.
    progress = Progress(f"{name}: {drivers:,} drivers, fixes accepted (sampled)", every=5.0)
    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-loc-") as tmp:
        start_at = time.time() + 5.0 + drivers / 2000  # time to start and open every stream
        procs = []
        first = offset
        for w, count in enumerate(per_worker):
            out = str(Path(tmp) / f"w{w}.npy")
            argv = [
                sys.executable, __file__, "--drive", "--target", server.target,
                "--offset", str(first), "--count", str(count), "--duration", str(duration),
                "--warmup", str(warmup),
                "--mode", mode, "--batch", str(batch), "--start-at", str(start_at),
                "--per-driver-rate", "1.0", "--channels", str(max(1, count // 100)), "--out", out,
            ]  # fmt: skip
            procs.append((await asyncio.create_subprocess_exec(*argv), out))
            first += count
        async with _subscriber(urls["nats"], sampled, since=start_at + warmup) as fanout:
            await asyncio.sleep(max(0.0, start_at + warmup - time.time()))
            cmd0 = await _redis_commands(urls["redis"])
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            counted = 0
            while any(p.returncode is None for p, _ in procs) and time.monotonic() - t0 < duration:
                await asyncio.sleep(1.0)
                seen = len(fanout) * drivers // max(1, len(sampled))  # scaled to every driver
                progress.add(seen - counted)
                counted = seen
                progress.tick()
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
            cmd1 = await _redis_commands(urls["redis"])
            rss = _rss_mb(server.pid)
            for p, _ in procs:
                await p.wait()
            fan = list(fanout)
        progress.finish()
        load = _read_results([out for _, out in procs])
    accepted = load.accepted
    ack = LatencyResult.of(
        load.latencies,
        errors=load.errors,
        seconds=duration,
        offered_rate=drivers * 1.0 if mode == "open" else None,
    )
    cpu = None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / (t1 - t0)
    return PhaseResult(
        name=name,
        drivers=drivers,
        ack=ack,
        accepted_per_s=accepted / duration,
        fanout_p99_ms=float(np.percentile(np.asarray(fan) * 1000, 99)) if fan else None,
        redis_ops_per_fix=(cmd1 - cmd0) / (accepted * (t1 - t0) / duration) if accepted else None,
        rss_mb=rss,
        cpu_percent=cpu,
        send_lag_p99_ms=(
            float(np.percentile(load.lags * 1000, 99))
            if mode == "open" and load.lags.size
            else None
        ),
        load_cpu_percent=load.cpu_percent,
    )


def _us_per_fix(r: PhaseResult) -> float | None:
    """Server CPU per accepted fix, the figure that the load generator's share cannot blur."""
    if r.cpu_percent is None or not r.accepted_per_s:
        return None
    return r.cpu_percent / 100 / r.accepted_per_s * 1e6


@contextlib.asynccontextmanager
async def _infra() -> AsyncIterator[dict[str, str]]:
    given = {k: env_url(f"FOODMESH_{k.upper()}_URL") for k in ("postgres", "redis", "nats")}
    if all(given.values()):
        yield {k: v for k, v in given.items() if v}
        return
    from foodmesh.infra import fresh_run_dir, start_infra

    with tempfile.TemporaryDirectory(prefix="foodmesh-bench-infra-") as tmp:
        async with start_infra(fresh_run_dir(Path(tmp)), durable=False, remove=True) as running:
            u = running.urls
            yield {"postgres": u.postgres_url, "redis": u.redis_url, "nats": u.nats_url}


async def main_async(args: argparse.Namespace) -> int:
    from servers import location
    from servers.runtime.migrate import load_migrations, migrate

    duration = args.duration or (10.0 if args.quick else 30.0)
    sizes = [int(s) for s in args.drivers.split(",")]
    async with _infra() as urls:
        assert location.SPEC.migrations is not None
        await migrate(
            urls["postgres"],
            service="location",
            migrations=load_migrations(location.SPEC.migrations),
        )
        print("raw baseline: pipelined GEOADD from one process", file=sys.stderr)
        raw = await raw_geoadd(urls["redis"], total=100_000 if args.quick else 300_000)
        env = {
            **os.environ,
            "FOODMESH_POSTGRES_URL": urls["postgres"],
            "FOODMESH_REDIS_URL": urls["redis"],
            "FOODMESH_NATS_URL": urls["nats"],
            "FOODMESH_NAMESPACE": NS,
            "FOODMESH_LOCATION_PORT": "0",
            "FOODMESH_METRICS": "0",
            "FOODMESH_LOG_LEVEL": "WARNING",
            "FOODMESH_LOCATION_MAX_FIXES_PER_S": "1000",
            "FOODMESH_LOCATION_BURST": "1000",
        }
        os.environ.update(env)
        results: list[PhaseResult] = []
        phases = set(args.phases.split(","))
        async with server_process(sys.executable, __file__, "--serve") as server:
            offset = 0
            for n in sizes if "live" in phases else []:
                results.append(
                    await run_phase(
                        f"{n // 1000}k @1/s", server, urls, drivers=n, duration=duration,
                        mode="open", batch=1, workers=args.workers, offset=offset,
                        warmup=args.warmup,
                    )
                )  # fmt: skip
                offset += n
            if args.batch > 1 and "batch" in phases:  # the open-loop schedule, in batches
                n = args.batch_drivers or sizes[0]
                results.append(
                    await run_phase(
                        f"{n // 1000}k @1/s x{args.batch}", server, urls, drivers=n,
                        duration=duration, mode="open", batch=args.batch, workers=args.workers,
                        offset=offset, warmup=args.warmup,
                    )
                )  # fmt: skip
                offset += n
            if "max" in phases:
                results.append(
                    await run_phase(
                        f"max rate x{args.batch}", server, urls, drivers=args.max_drivers,
                        duration=duration, mode="closed", batch=args.batch,
                        workers=args.workers, offset=offset, warmup=args.warmup,
                    )
                )  # fmt: skip
        # The same max-rate load against a bare gRPC server that does no work: what the
        # transport alone costs on this machine, per message.
        if "echo" in phases:
            async with server_process(sys.executable, __file__, "--serve-raw") as raw_server:
                results.append(
                    await run_phase(
                        f"raw gRPC echo x{args.batch}", raw_server, urls,
                        drivers=args.max_drivers, duration=duration, mode="closed",
                        batch=args.batch, workers=args.workers, offset=offset,
                        warmup=args.warmup, presence=False,
                    )
                )  # fmt: skip
    rows = [
        ["raw GEOADD (1 process)", None, raw, None, None, None, 1.0, *[None] * 6],
        *[
            [
                r.name,
                r.drivers,
                r.accepted_per_s,
                r.ack.p50_ms,
                r.ack.p99_ms,
                r.fanout_p99_ms,
                ratio(r.accepted_per_s, raw),
                r.redis_ops_per_fix,
                r.rss_mb,
                r.cpu_percent,
                _us_per_fix(r),
                r.send_lag_p99_ms,
                r.load_cpu_percent,
            ]  # fmt: skip
            for r in results
        ],
    ]
    print_table(
        f"Location ingest ({machine()['cpus']} CPUs, {now_iso()})",
        ["phase", "drivers", "fixes/s", "ack p50 ms", "ack p99 ms", "fan-out p99 ms",
         "vs raw", "redis ops/fix", "RSS MB", "server CPU %", "server µs/fix",
         "send lag p99 ms", "load CPU %"],
        rows,
    )  # fmt: skip
    best = max((r.accepted_per_s for r in results if not r.name.startswith("raw")), default=0)
    need = 400_000 / best if best else math.inf
    print(f"\nreplicas for the design's 400,000 fixes/s at this process's best rate: {need:,.0f}")
    if args.json:
        emit_json(
            {
                "benchmark": "location",
                "machine": machine(),
                "date": now_iso(),
                "raw_geoadd_per_s": round(raw, 1),
                "phases": [
                    {
                        "name": r.name,
                        "drivers": r.drivers,
                        "accepted_per_s": round(r.accepted_per_s, 1),
                        "ratio_vs_raw": ratio(r.accepted_per_s, raw),
                        "ack": r.ack.as_dict(),
                        "fanout_p99_ms": r.fanout_p99_ms,
                        "redis_ops_per_fix": r.redis_ops_per_fix,
                        "rss_mb": r.rss_mb,
                        "server_cpu_percent": r.cpu_percent,
                        "server_us_per_fix": _us_per_fix(r),
                        "send_lag_p99_ms": r.send_lag_p99_ms,
                        "load_cpu_percent": r.load_cpu_percent,
                    }
                    for r in results
                ],
                "replicas_for_400k_per_s": round(need, 1) if best else None,
            }
        )
    return 0


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--drivers", default="1000,10000", help="driver counts of the 1 fix/s phases")
    p.add_argument("--max-drivers", type=int, default=1000, help="drivers in the max-rate phase")
    p.add_argument("--batch", type=int, default=1, help="fixes per message in the max-rate phase")
    p.add_argument(
        "--batch-drivers",
        type=int,
        default=0,
        help="drivers of the 1 msg/s phase with --batch fixes a message (default: first --drivers)",
    )
    p.add_argument("--workers", type=int, default=2, help="driver processes")
    p.add_argument(
        "--phases",
        default="live,batch,max,echo",
        help="phases to run after raw GEOADD: live (--drivers), batch, max, echo",
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    for name in ("--target", "--out", "--mode"):
        p.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--offset", "--count", "--channels"):
        p.add_argument(name, type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    for name in ("--start-at", "--per-driver-rate"):
        p.add_argument(name, type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        if profile := os.environ.get("FOODMESH_BENCH_PROFILE"):  # where the server's time goes
            import cProfile

            cProfile.runctx("asyncio.run(_serve())", globals(), locals(), profile)
            return 0
        asyncio.run(_serve())
        return 0
    if args.serve_raw:
        asyncio.run(_serve_raw())
        return 0
    if args.drive:
        asyncio.run(_drive(args))
        return 0
    if args.quick and args.drivers == "1000,10000":
        args.drivers = "1000"
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
