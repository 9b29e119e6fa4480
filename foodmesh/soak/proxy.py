"""A small TCP proxy for faults: added latency, or every connection cut at once.

Run as its own process (``python -m foodmesh.soak.proxy``) so its copying does not
share an event loop with the load it is measured by::

    python -m foodmesh.soak.proxy --control ctl.json postgres=5432 location=7053 ...

Each ``name=port`` listens on a free port and forwards to ``127.0.0.1:port``; the
first line of output is a JSON object ``{name: listening port}``. The control file
(JSON, re-read when it changes) says ``{"delay_ms": {name: ms}, "cut": {name: n}}``:
each chunk towards the server waits ``delay_ms``, and when ``cut`` grows, every
open connection of that name is reset (as a load balancer's restart would).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Route", "main", "serve"]

_CHUNK = 65536


@dataclass(slots=True)
class Route:
    """One listening name, its upstream and its live settings."""

    name: str
    upstream_port: int
    upstream_host: str = "127.0.0.1"
    delay_s: float = 0.0
    cuts: int = 0
    open: set[asyncio.StreamWriter] = field(default_factory=set)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route, *, upstream: bool
) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            if upstream and route.delay_s > 0:
                await asyncio.sleep(route.delay_s)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with RST (SO_LINGER 0), as a dropped connection looks to both ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()


async def _handle(
    route: Route, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(route.upstream_host, route.upstream_port)
    except OSError:
        _reset(client_w)
        return
    for s in (client_w, up_w):
        sock = s.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    route.open.update((client_w, up_w))
    try:
        await asyncio.gather(
            _pump(client_r, up_w, route, upstream=True),
            _pump(up_r, client_w, route, upstream=False),
        )
    finally:
        route.open.discard(client_w)
        route.open.discard(up_w)
        for w in (client_w, up_w):
            with contextlib.suppress(Exception):
                w.close()


def _apply(routes: dict[str, Route], control: dict[str, Any]) -> None:
    delays = control.get("delay_ms") or {}
    cuts = control.get("cut") or {}
    for name, route in routes.items():
        route.delay_s = max(0.0, float(delays.get(name, 0))) / 1000.0
        n = int(cuts.get(name, 0))
        if n > route.cuts:
            route.cuts = n
            for w in list(route.open):
                _reset(w)
            route.open.clear()


def _reload(routes: dict[str, Route], control: Path, seen: float) -> float:
    """Applies the control file if it changed since ``seen`` (its mtime); returns the mtime."""
    mtime = control.stat().st_mtime
    if mtime != seen:
        _apply(routes, json.loads(control.read_text() or "{}"))
    return mtime


async def serve(routes: dict[str, Route], control: Path, *, stop: asyncio.Event) -> None:
    """Listens for every route, applies the control file as it changes, until ``stop``."""
    servers = []
    ports: dict[str, int] = {}
    handlers: set[asyncio.Task[Any]] = set()
    for name, route in routes.items():

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                          route: Route = route) -> None:  # fmt: skip
            task = asyncio.current_task()
            if task is not None:
                handlers.add(task)
                task.add_done_callback(handlers.discard)
            # Python 3.11's stream server reads a finished handler's exception(), which for a
            # cancelled one raises: "Exception in callback" in the log (the soak scans for it).
            with contextlib.suppress(asyncio.CancelledError):
                await _handle(route, r, w)

        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    seen = 0.0
    try:
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                seen = _reload(routes, control, seen)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await stop.wait()
    finally:
        for server in servers:
            server.close()
        for route in routes.values():
            for w in list(route.open):
                _reset(w)
        # Connections still open when the proxy stops (the platform outlives a soak of a
        # running `foodmesh up`) end here, not cancelled at the loop's close: asyncio logs
        # a cancelled connection handler as an exception in a callback.
        if handlers:
            await asyncio.wait(list(handlers), timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foodmesh.soak.proxy")
    p.add_argument("--control", required=True, type=Path)
    p.add_argument("routes", nargs="+", help="name=upstream_port")
    args = p.parse_args(argv)
    routes = {}
    for spec in args.routes:
        name, _, port = spec.partition("=")
        routes[name] = Route(name=name, upstream_port=int(port))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # The parent's death ends the proxy too (its stdin is a pipe from the parent).
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 1) else None)
        await serve(routes, args.control, stop=stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
