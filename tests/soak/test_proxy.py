"""The soak's fault proxy: it forwards both ways, and a cut resets every open connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from foodmesh.soak.proxy import Route, serve


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
    w.close()


async def test_the_proxy_forwards_and_a_cut_resets_its_connections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    control = tmp_path / "control.json"
    control.write_text("{}")
    stop = asyncio.Event()
    routes = {"echo": Route(name="echo", upstream_port=port)}
    task = asyncio.create_task(serve(routes, control, stop=stop))
    try:
        while True:  # serve prints its ports, then listens
            out = capsys.readouterr().out
            if out:
                listening = json.loads(out.splitlines()[0])["echo"]
                break
            await asyncio.sleep(0.01)
        r, w = await asyncio.open_connection("127.0.0.1", listening)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        control.write_text(json.dumps({"cut": {"echo": 1}}))
        # The connection is reset by the proxy: the read ends (EOF or a reset), never hangs.
        try:
            rest = await asyncio.wait_for(r.read(1), timeout=10)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        assert routes["echo"].cuts == 1 and not routes["echo"].open
        w.close()
        # New connections go through again.
        r2, w2 = await asyncio.open_connection("127.0.0.1", listening)
        w2.write(b"again")
        assert await r2.readexactly(5) == b"again"
        w2.close()
    finally:
        stop.set()
        await task
        upstream.close()
        await upstream.wait_closed()
