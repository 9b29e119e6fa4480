"""The cost of the shared runtime: our server vs a raw grpc.aio server, same tiny RPCs.

The RPCs are generic handlers on raw bytes (no protobuf on either side, so the
runtime's own cost is what differs): ``bench.Echo/Echo`` returns its 32-byte
request; ``bench.Echo/Stream`` sends N 32-byte messages.

Servers:

* **raw** — ``grpc.aio.server()`` with the two handlers and nothing else.
* **ours** — the same handlers in a ``ServiceSpec`` started by
  ``servers.runtime.serve.run_service`` with production defaults
  (``Settings.from_env`` defaults; shutdown grace 2 s): the interceptor (request
  id, OpenTelemetry span with exporter ``none`` (so not recorded: no caller
  trace), deadline, Prometheus metrics, access log line (at DEBUG for a call
  that succeeded, so off at the default INFO), error mapping), health,
  reflection, the metrics endpoint. Its log goes to a file, as a container's
  stderr goes to a pipe.
* **ours, access log off** — the same with ``FOODMESH_LOG_LEVEL=WARNING``
  (closed loop only): now that a successful call logs nothing at INFO, it should
  match **ours**; kept so a regression in the access log's cost shows.

Each server runs in its own process and the load generator in this one, so on
a 2-core machine the client and the server under test each get a core. The
Python client is about as expensive per call as the server, so a closed loop
can be client-bound; the server's CPU time per call (from ``/proc``) is the
figure that does not depend on that, and its CPU % shows which side was the
bottleneck. Phases alternate servers (raw, ours, then ours, raw) so a noisy
neighbour hurts both alike.

Phases, each ``--duration`` seconds per server (default 5, ``--quick`` 0.8):

1. closed loop: ``--concurrency`` callers back to back, calls/s;
2. open loop at 60% and at 30% of raw's closed-loop calls/s (or only at
   ``--rate``), latency from the intended send time, p50/p99. At 60% of raw's
   ceiling a server that costs more per call runs closer to its own ceiling,
   so queueing, not only per-call cost, shows in its latency; 30% shows the
   per-call cost alone;
3. server streaming: ``--streams`` concurrent streams of 200 messages, messages/s.

    python benchmarks/runtime.py                 # ~55 s
    python benchmarks/runtime.py --quick --json  # ~10 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    ServerProcess,
    closed_loop,
    emit_json,
    machine,
    now_iso,
    open_loop,
    parser,
    print_table,
    ratio,
    server_processes,
)

SERVICE = "bench.Echo"
UNARY = f"/{SERVICE}/Echo"
STREAM = f"/{SERVICE}/Stream"
PAYLOAD = b"x" * 32
STREAM_LEN = 200
CALL_TIMEOUT_S = 5.0

KINDS = {
    "raw": "raw grpc.aio",
    "ours": "foodmesh runtime",
    "ours-nolog": "  ... access log off",
}


# --- the server side (runs in a child process) -------------------------------------------


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield PAYLOAD


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def _serve(kind: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "raw":
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"READY {port}", flush=True)
        await stop.wait()
        await server.stop(2)
        return

    from servers.runtime.config import Settings
    from servers.runtime.serve import Resources, ServiceSpec, configure_logging, run_service

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        server.add_generic_rpc_handlers((_handlers(),))

    env = {"FOODMESH_SHUTDOWN_GRACE_S": "2", "FOODMESH_DEV": "1"}
    if kind == "ours-nolog":
        env["FOODMESH_LOG_LEVEL"] = "WARNING"
    settings = Settings.from_env("bench", env)
    configure_logging(settings.log_level)
    spec = ServiceSpec(name="bench", grpc_services=(SERVICE,), register=register)
    async with run_service(spec, settings) as running:
        print(f"READY {running.port}", flush=True)
        await stop.wait()


# --- the client side ---------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    """One phase on one server, possibly over several rounds, with the server's CPU time."""

    parts: list[LatencyResult]
    cpu_s: float | None = 0.0

    def add(self, result: LatencyResult, cpu_s: float | None) -> None:
        self.parts.append(result)
        self.cpu_s = None if cpu_s is None or self.cpu_s is None else self.cpu_s + cpu_s

    def figures(self, per_call: int = 1) -> dict[str, Any]:
        r = LatencyResult.combine(self.parts)
        out = r.as_dict()
        if per_call > 1:
            out["msgs_per_s"] = round(r.rate * per_call, 1)
        if self.cpu_s is not None and r.ok:
            out["server_cpu_us_per_call"] = round(self.cpu_s / (r.ok * per_call) * 1e6, 2)
            out["server_cpu_pct"] = round(100 * self.cpu_s / r.seconds, 1)
        return out


class Target:
    """A running server and the client stubs that call it."""

    def __init__(self, kind: str, server: ServerProcess, channel: grpc.aio.Channel) -> None:
        self.kind = kind
        self.server = server
        self._unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UNARY)
        self._stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(STREAM)
        self._stream_req = str(STREAM_LEN).encode()

    async def call(self) -> None:
        await self._unary(PAYLOAD, timeout=CALL_TIMEOUT_S)

    async def stream(self) -> None:
        got = 0
        async for _ in self._stream(self._stream_req, timeout=CALL_TIMEOUT_S):
            got += 1
        if got != STREAM_LEN:
            raise RuntimeError(f"stream ended after {got} of {STREAM_LEN} messages")

    async def measure(self, phase: Phase, run: Awaitable[LatencyResult]) -> None:
        before = self.server.cpu_seconds()
        result = await run
        after = self.server.cpu_seconds()
        phase.add(result, None if before is None or after is None else after - before)


@contextlib.asynccontextmanager
async def _targets(kinds: list[str]) -> AsyncIterator[dict[str, Target]]:
    argvs = [(sys.executable, __file__, "--serve", kind) for kind in kinds]
    async with server_processes(*argvs) as servers, contextlib.AsyncExitStack() as stack:
        found: dict[str, Target] = {}
        for kind, server in zip(kinds, servers, strict=True):
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.target))
            found[kind] = Target(kind, server, channel)
        for target in found.values():  # warm up connections and code paths
            for _ in range(10):
                await asyncio.gather(*(target.call() for _ in range(30)))
            await asyncio.gather(*(target.stream() for _ in range(4)))
        yield found


def _order(kinds: list[str], round_no: int) -> list[str]:
    return kinds if round_no % 2 == 0 else kinds[::-1]


async def run(
    *, duration: float, rounds: int, concurrency: int, streams: int, rate: float | None
) -> dict[str, Any]:
    kinds = list(KINDS)
    pair = ["raw", "ours"]
    slice_s = duration / rounds
    closed = {k: Phase([]) for k in kinds}
    opened: dict[str, dict[str, Phase]] = {}
    streamed = {k: Phase([]) for k in pair}
    async with _targets(kinds) as targets:
        for n in range(rounds):
            for k in _order(kinds, n):
                t = targets[k]
                label = f"closed x{concurrency} {k} [{n + 1}/{rounds}]"
                load = closed_loop(
                    t.call, concurrency=concurrency, duration=slice_s, progress=Progress(label)
                )
                await t.measure(closed[k], load)
        raw_ceiling = LatencyResult.combine(closed["raw"].parts).rate
        rates = (
            {"open": rate}
            if rate
            else {"open": round(0.6 * raw_ceiling), "open_light": round(0.3 * raw_ceiling)}
        )
        for section, at in rates.items():
            opened[section] = {k: Phase([]) for k in pair}
            for n in range(rounds):
                for k in _order(pair, n):
                    t = targets[k]
                    label = f"open @{at:,.0f}/s {k} [{n + 1}/{rounds}]"
                    load = open_loop(
                        t.call,
                        rate=at,
                        duration=slice_s,
                        concurrency_cap=2_000,
                        progress=Progress(label, total=round(at * slice_s)),
                    )
                    await t.measure(opened[section][k], load)
        for n in range(rounds):
            for k in _order(pair, n):
                t = targets[k]
                label = f"stream x{streams} {k} (streams of {STREAM_LEN}) [{n + 1}/{rounds}]"
                load = closed_loop(
                    t.stream, concurrency=streams, duration=slice_s, progress=Progress(label)
                )
                await t.measure(streamed[k], load)

    def side(k: str) -> dict[str, Any]:
        out = {"closed": closed[k].figures()}
        if k in pair:
            out.update({section: phases[k].figures() for section, phases in opened.items()})
            out["stream"] = streamed[k].figures(per_call=STREAM_LEN)
        return out

    raw, ours, nolog = side("raw"), side("ours"), side("ours-nolog")

    def r(section: str, key: str, mine: dict[str, Any] = ours) -> float | None:
        return ratio(mine[section].get(key), raw[section].get(key))

    def overhead(mine: dict[str, Any]) -> float | None:
        ours_us, raw_us = (side["closed"].get("server_cpu_us_per_call") for side in (mine, raw))
        return None if ours_us is None or raw_us is None else round(ours_us - raw_us, 1)

    ratios = {
        "closed_throughput": r("closed", "rate"),
        "closed_server_cpu_per_call": r("closed", "server_cpu_us_per_call"),
        "closed_server_cpu_per_call_access_log_off": r("closed", "server_cpu_us_per_call", nolog),
    }
    for section in rates:
        ratios[f"{section}_p50"] = r(section, "p50_ms")
        ratios[f"{section}_p99"] = r(section, "p99_ms")
    ratios["stream_msgs_per_s"] = r("stream", "msgs_per_s")
    ratios["stream_server_cpu_per_msg"] = r("stream", "server_cpu_us_per_call")
    return {
        "benchmark": "runtime",
        "machine": machine(),
        "date": now_iso(),
        "settings": {
            "duration_s_per_phase_per_server": duration,
            "rounds": rounds,
            "concurrency": concurrency,
            "open_loop_rates": rates,
            "streams": streams,
            "stream_len": STREAM_LEN,
            "payload_bytes": len(PAYLOAD),
            "servers": "one subprocess each, client in this process",
        },
        "raw": raw,
        "ours": ours,
        "ours_access_log_off": nolog,
        "ratio": ratios,
        "overhead_us_per_call": {"ours": overhead(ours), "ours_access_log_off": overhead(nolog)},
    }


def _report(result: dict[str, Any], took: float) -> None:
    s = result["settings"]
    sides = {
        "raw": result["raw"],
        "ours": result["ours"],
        "ours-nolog": result["ours_access_log_off"],
    }
    phases = [("closed", f"closed x{s['concurrency']}", "rate")]
    phases += [(k, f"open @{v:,.0f}/s", "rate") for k, v in s["open_loop_rates"].items()]
    phases += [("stream", f"stream x{s['streams']}", "msgs_per_s")]
    rows: list[list[Any]] = []
    for section, name, per_s in phases:
        for k, fig_side in sides.items():
            fig = fig_side.get(section)
            if fig is not None:
                rows.append([
                    name, KINDS[k], fig[per_s], fig["p50_ms"], fig["p99_ms"], fig["p999_ms"],
                    fig["errors"] + fig["dropped"], fig.get("server_cpu_us_per_call"),
                    fig.get("server_cpu_pct"),
                ])  # fmt: skip
    print_table(
        f"runtime overhead: {result['machine']['cpus']} cpus, {took:.0f}s "
        f"(per s: calls, or messages for streams; stream latency is per {s['stream_len']} msgs)",
        ["phase", "server", "per s", "p50 ms", "p99 ms", "p99.9 ms", "failed",
         "srv CPU us/call", "srv CPU %"],
        rows,
    )  # fmt: skip
    print_table("ours / raw", ["figure", "ratio"], [[k, v] for k, v in result["ratio"].items()])
    print_table(
        "runtime overhead: server CPU per call, ours minus raw (closed loop)",
        ["server", "us/call"],
        [[KINDS[k].strip(" ."), v] for k, v in zip(("ours", "ours-nolog"),
                                                  result["overhead_us_per_call"].values(),
                                                  strict=True)],
    )  # fmt: skip
    late = sum(
        result[k][section]["late"] for k in ("raw", "ours") for section in s["open_loop_rates"]
    )
    if late:
        print(f"\nnote: {late:,} open-loop calls were sent >5 ms late: the client fell behind")


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop callers")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams")
    p.add_argument("--rounds", type=int, help="alternations raw/ours per phase")
    p.add_argument("--serve", choices=list(KINDS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    logging.basicConfig(level=logging.WARNING)
    duration = args.duration or (0.8 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    t0 = time.perf_counter()
    result = asyncio.run(
        run(
            duration=duration,
            rounds=rounds,
            concurrency=args.concurrency,
            streams=args.streams,
            rate=args.rate,
        )
    )
    if args.json:
        emit_json(result)
    else:
        _report(result, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
