"""The cost of the shared runtime: our server vs a raw grpc.aio server, same tiny RPC.

Each server runs in its own process (client and server get a core each on this
2-core machine); the RPC is an echo with a small protobuf message. "Ours" is
built by ``servers.runtime.serve.run_service`` with everything production has on:
request ids, deadline enforcement, OpenTelemetry spans (exporter none), Prometheus
metrics, access logging at WARNING, error mapping. "Raw" is ``grpc.aio.server()``
with the same handler and nothing else.

    python benchmarks/runtime.py            # ~60 s
    python benchmarks/runtime.py --quick --json
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
    Progress,
    closed_loop,
    emit_json,
    machine,
    open_loop,
    parser,
    print_table,
)

Req = health_pb2.HealthCheckRequest
Resp = health_pb2.HealthCheckResponse
METHOD = "/bench.Echo/Echo"


async def _echo(
    request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> health_pb2.HealthCheckResponse:
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def _handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                _echo,
                request_deserializer=Req.FromString,
                response_serializer=Resp.SerializeToString,
            )  # fmt: skip
        },
    )


async def _serve(kind: str, port_file: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "raw":
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await asyncio.to_thread(port_file.write_text, str(port))
        await stop.wait()
        await server.stop(1)
        return
    import logging

    from servers.runtime.config import Settings
    from servers.runtime.serve import Resources, ServiceSpec, run_service

    logging.basicConfig(level=logging.WARNING)

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        server.add_generic_rpc_handlers((_handler(),))

    spec = ServiceSpec(name="bench", grpc_services=("bench.Echo",), register=register)
    settings = Settings(service="bench", port=0, metrics_port=0, metrics_enabled=True)
    async with run_service(spec, settings) as svc:
        await asyncio.to_thread(port_file.write_text, str(svc.port))
        await stop.wait()


@contextlib.asynccontextmanager
async def _server(kind: str) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", kind, "--port-file", str(port_file)
        )
        try:
            for _ in range(300):
                if port_file.exists() and port_file.read_text():
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{kind} server did not start")
            yield f"127.0.0.1:{port_file.read_text()}"
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)


async def _measure(
    kind: str, *, duration: float, concurrency: int, rate: float | None
) -> dict[str, LatencyResult]:
    async with _server(kind) as target, grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(METHOD, request_serializer=Req.SerializeToString,
                              response_deserializer=Resp.FromString)  # fmt: skip

        async def send() -> None:
            await call(Req(service="x"), timeout=5)

        for _ in range(200):  # warm up connections and code paths
            await send()
        out = {"closed": await closed_loop(send, concurrency=concurrency, duration=duration,
                                           progress=Progress(f"{kind} closed-loop"))}  # fmt: skip
        if rate:
            label = f"{kind} open-loop @{rate:.0f}/s"
            out["open"] = await open_loop(
                send, rate=rate, duration=duration, progress=Progress(label)
            )
        return out


async def run(duration: float, concurrency: int, rate: float | None) -> dict[str, Any]:
    raw_ceiling = await _measure("raw", duration=duration, concurrency=concurrency, rate=None)
    # Open loop at half of raw's ceiling: a load both should carry, so latency is the figure.
    rate = rate or max(100.0, raw_ceiling["closed"].rate * 0.5)
    raw = await _measure("raw", duration=duration, concurrency=concurrency, rate=rate)
    ours = await _measure("ours", duration=duration, concurrency=concurrency, rate=rate)
    return {
        "benchmark": "runtime",
        "machine": machine(),
        "settings": {"duration_s": duration, "concurrency": concurrency, "open_loop_rate": rate},
        "raw": {k: v.as_dict() for k, v in raw.items()},
        "ours": {k: v.as_dict() for k, v in ours.items()},
        "ratio": {
            "throughput_ours_over_raw": round(ours["closed"].rate / raw["closed"].rate, 3),
            "open_p50_ours_over_raw": round(ours["open"].p50_ms / raw["open"].p50_ms, 3),
            "open_p99_ours_over_raw": round(ours["open"].p99_ms / raw["open"].p99_ms, 3),
        },
    }


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=float, help="open-loop rate (default: half of raw's ceiling)")
    p.add_argument("--serve", choices=("raw", "ours"), help=argparse_hidden())
    p.add_argument("--port-file", type=Path, help=argparse_hidden())
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.port_file))
        return 0
    duration = args.duration or (3.0 if args.quick else 15.0)
    t0 = time.perf_counter()
    result = asyncio.run(run(duration, args.concurrency, args.rate))
    if args.json:
        emit_json(result)
        return 0
    rows = []
    for phase in ("closed", "open"):
        r, o = result["raw"][phase], result["ours"][phase]
        for name, fig in (("raw grpc.aio", r), ("foodmesh runtime", o)):
            rows.append([phase, name, fig["rate"], fig["p50_ms"], fig["p99_ms"], fig["errors"]])
    print_table(
        f"runtime overhead ({os.cpu_count()} cpus, {time.perf_counter() - t0:.0f}s)",
        ["load", "server", "calls/s", "p50 ms", "p99 ms", "errors"], rows,
    )  # fmt: skip
    for k, v in result["ratio"].items():
        print(f"{k}: {v}")
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
