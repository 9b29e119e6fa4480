"""The HTTP gateway's cost: the same call direct over gRPC and through the gateway, one run.

Servers, each in its own process: an OrderService (``GetOrder`` answers a fixed order,
``WatchOrder`` sends the order then holds the stream) built by the runtime with its
auth interceptor, and the gateway in front of it with production settings (no rate
limits: this measures transcoding, not Redis).

Phases (this process is the client; a bearer token on every call):

1. closed loop, ``--callers`` (default 32) back to back for ``--duration`` s, direct
   gRPC then through the gateway (aiohttp client, keep-alive): the throughput ceiling
   of each and the ratio (target: the gateway keeps >= 50 % of direct);
2. open loop at ``--rate`` (default 200/s) for ``--duration`` s each: p50/p99 from the
   intended send time, and what the gateway adds at p50 (target: < 2 ms);
3. ``--streams`` (default 1,000) concurrent SSE ``WatchOrder`` streams opened and held,
   each having received its first event; the gateway's RSS then (target: < 200 MB).

    python -m benchmarks.gateway            # ~1 min
    python -m benchmarks.gateway --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (  # noqa: E402
    LatencyResult,
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
from foodmesh.core.auth import DEV_SECRET, mint_token
from foodmesh.v1 import common_pb2, order_pb2, order_pb2_grpc

TOKEN = mint_token(DEV_SECRET, subject="cus_1", role="customer", ttl_s=86400)
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _order() -> order_pb2.Order:
    entry = order_pb2.TimelineEntry(seq=1, status=common_pb2.ORDER_STATUS_PLACED)
    entry.timestamp.GetCurrentTime()
    order = order_pb2.Order(
        order_id="ord_1", customer_id="cus_1", restaurant_id="rest_1",
        status=common_pb2.ORDER_STATUS_PLACED, timeline=[entry],
    )  # fmt: skip
    order.created_at.GetCurrentTime()
    return order


class _Orders(order_pb2_grpc.OrderServiceServicer):
    def __init__(self) -> None:
        self.reply = order_pb2.GetOrderResponse(order=_order())

    async def GetOrder(self, request: Any, context: Any) -> order_pb2.GetOrderResponse:  # noqa: N802
        return self.reply

    async def WatchOrder(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        yield order_pb2.WatchOrderResponse(order=self.reply.order)
        await asyncio.Event().wait()  # held until the client goes


async def _serve_upstream() -> None:
    from servers.runtime.config import Settings
    from servers.runtime.serve import Resources, ServiceSpec, run_service

    servicer = _Orders()  # type: ignore[abstract]

    async def register(server: grpc.aio.Server, _: Resources) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(name="order", grpc_services=("foodmesh.v1.OrderService",),
                       register=register)  # fmt: skip
    # One token holds every stream here: the per-caller stream limits are off (0).
    off = {f"FOODMESH_ORDER_MAX_STREAMS_PER_{k}": "0" for k in ("CALLER", "ORDER")}
    settings = Settings(service="order", metrics_enabled=False, log_level="WARNING", extra=off)
    async with run_service(spec, settings) as svc:
        print(f"READY {svc.target.rsplit(':', 1)[1]}", flush=True)
        await asyncio.Event().wait()


async def _serve_gateway(target: str) -> None:
    from gateway import GatewayConfig, serve

    config = GatewayConfig(
        port=0, targets={"order": target}, services=frozenset({"order"}),
        ip_rate=0, token_rate=0, heartbeat_s=15.0,
        max_streams_per_caller=0, max_streams_per_order=0,  # one token holds every stream
    )  # fmt: skip
    async with serve(config) as (_, port):
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _streams(base: str, n: int, pid: int) -> dict[str, Any]:
    """Opens ``n`` SSE streams, waits for each one's first event, measures the gateway."""
    rss_before = _rss_bytes(pid)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    opened = 0
    async with aiohttp.ClientSession(base, connector=connector) as session:
        responses: list[aiohttp.ClientResponse] = []
        started = time.monotonic()

        async def one() -> None:
            nonlocal opened
            resp = await session.get("/api/v1/orders/ord_1/watch", headers=headers)
            responses.append(resp)
            while not (await resp.content.readline()).startswith(b"data:"):
                pass
            opened += 1
            if opened % 250 == 0:
                print(f"  streams open: {opened}/{n} ({time.monotonic() - started:.1f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip

        try:
            for chunk in range(0, n, 100):  # 100 at a time: a burst of connects, not a storm
                async with asyncio.timeout(60):
                    await asyncio.gather(*(one() for _ in range(min(100, n - chunk))))
            await asyncio.sleep(1.0)
            rss = _rss_bytes(pid)
        finally:
            for r in responses:
                r.close()
    return {
        "streams": opened,
        "open_seconds": round(time.monotonic() - started, 2),
        "gateway_rss_mb_idle": round(rss_before / 2**20, 1),
        "gateway_rss_mb_held": round(rss / 2**20, 1),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    duration = args.duration or (3.0 if args.quick else 10.0)
    rate = args.rate or 200.0
    streams = args.streams if not args.quick else min(args.streams, 200)
    me = [sys.executable, "-m", "benchmarks.gateway"]
    async with server_processes([*me, "--serve-upstream"]) as (upstream,):
        async with server_processes([*me, "--serve-gateway", upstream.target]) as (gw,):
            base = f"http://127.0.0.1:{gw.port}"
            channel = grpc.aio.insecure_channel(upstream.target)
            stub = order_pb2_grpc.OrderServiceStub(channel)
            request = order_pb2.GetOrderRequest(order_id="ord_1")
            connector = aiohttp.TCPConnector(limit=0)
            session = aiohttp.ClientSession(base, connector=connector)
            http_headers = {"Authorization": f"Bearer {TOKEN}"}

            async def direct() -> None:
                await stub.GetOrder(request, timeout=5.0, metadata=AUTH)

            async def via_gateway() -> None:
                async with session.get("/api/v1/orders/ord_1", headers=http_headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")

            try:
                for send in (direct, via_gateway):  # warm up: channels, connections, caches
                    await closed_loop(send, concurrency=8, duration=1.0)
                results: dict[str, LatencyResult] = {}
                for name, send in (("direct", direct), ("gateway", via_gateway)):
                    print(f"closed loop, {name}: {args.callers} callers for {duration:g} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    results[f"closed_{name}"] = await closed_loop(
                        send, concurrency=args.callers, duration=duration
                    )
                    print(f"  {results[f'closed_{name}'].rate:,.0f} calls/s",
                          file=sys.stderr, flush=True)  # fmt: skip
                for name, send in (("direct", direct), ("gateway", via_gateway)):
                    print(f"open loop, {name}: {rate:g}/s for {duration:g} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    results[f"open_{name}"] = await open_loop(send, rate=rate, duration=duration)
                    r = results[f"open_{name}"]
                    print(f"  p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors}",
                          file=sys.stderr, flush=True)  # fmt: skip
            finally:
                await session.close()
                await channel.close()
            print(f"SSE: opening {streams} streams", file=sys.stderr, flush=True)
            held = await _streams(base, streams, gw.pid)
    cd, cg = results["closed_direct"], results["closed_gateway"]
    od, og = results["open_direct"], results["open_gateway"]
    return {
        "benchmark": "gateway",
        "when": now_iso(),
        "machine": machine(),
        "settings": {
            "duration_s": duration,
            "rate": rate,
            "callers": args.callers,
            "streams": streams,
        },  # fmt: skip
        "baseline": {"closed": cd.as_dict(), "open": od.as_dict()},
        "ours": {"closed": cg.as_dict(), "open": og.as_dict(), "sse": held},
        "ratio": {
            "throughput_gateway_over_direct": ratio(cg.rate, cd.rate),
            "p50_gateway_over_direct": ratio(og.p50_ms, od.p50_ms),
            "p99_gateway_over_direct": ratio(og.p99_ms, od.p99_ms),
        },
        "added_p50_ms": round(og.p50_ms - od.p50_ms, 3),
        "targets": {
            "added_p50_below_2ms": og.p50_ms - od.p50_ms < 2.0,
            "throughput_at_least_half": cg.rate >= 0.5 * cd.rate,
            "sse_rss_below_200mb": held["gateway_rss_mb_held"] < 200 and held["streams"] == streams,
        },
    }


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--callers", type=int, default=32)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-gateway", metavar="TARGET", help=argparse.SUPPRESS)
    args = p.parse_args()
    _raise_fd_limit()
    if args.serve_upstream:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_upstream())
        return 0
    if args.serve_gateway:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_gateway(args.serve_gateway))
        return 0
    out = asyncio.run(_run(args))
    if args.json:
        emit_json(out)
        return 0
    o, b = out["ours"], out["baseline"]
    print_table(
        "GetOrder: direct gRPC against the HTTP gateway",
        ["phase", "path", "calls/s", "p50 ms", "p99 ms", "errors"],
        [
            ["closed", "direct gRPC", b["closed"]["rate"], b["closed"]["p50_ms"],
             b["closed"]["p99_ms"], b["closed"]["errors"]],
            ["closed", "gateway", o["closed"]["rate"], o["closed"]["p50_ms"],
             o["closed"]["p99_ms"], o["closed"]["errors"]],
            ["open", "direct gRPC", b["open"]["rate"], b["open"]["p50_ms"],
             b["open"]["p99_ms"], b["open"]["errors"]],
            ["open", "gateway", o["open"]["rate"], o["open"]["p50_ms"], o["open"]["p99_ms"],
             o["open"]["errors"]],
        ],
    )  # fmt: skip
    sse = o["sse"]
    print_table(
        "SSE WatchOrder streams held",
        ["streams", "open s", "RSS idle MB", "RSS held MB"],
        [[sse["streams"], sse["open_seconds"], sse["gateway_rss_mb_idle"],
          sse["gateway_rss_mb_held"]]],
    )  # fmt: skip
    print(f"\nratio (gateway/direct): {out['ratio']}; added p50 {out['added_p50_ms']} ms")
    print(f"targets: {out['targets']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
