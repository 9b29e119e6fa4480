"""`foodmesh up`'s supervisor with real child processes: start, report, restart, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from foodmesh.supervisor import ProcessSpec, Supervisor, read_status

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec(name: str, port: int) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=(sys.executable, str(HERE / "_health_process.py"), str(port)),
        grpc_port=port,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_supervisor_restarts_a_killed_process_and_stops_all_cleanly(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    sup = Supervisor(
        [spec("alpha", ports[0]), spec("beta", ports[1])], state_dir=tmp_path, grace_s=3
    )
    ready = asyncio.Event()
    runner = asyncio.create_task(sup.run(on_ready=ready))
    try:
        async with asyncio.timeout(20):
            await ready.wait()
        rows = {r.name: r for r in await read_status(tmp_path)}
        assert {n: r.health for n, r in rows.items()} == {"alpha": "SERVING", "beta": "SERVING"}
        first_pid = rows["alpha"].pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        async with asyncio.timeout(20):
            while True:
                rows = {r.name: r for r in await read_status(tmp_path)}
                if rows["alpha"].restarts == 1 and rows["alpha"].health == "SERVING":
                    break
                await asyncio.sleep(0.2)
        assert rows["alpha"].pid != first_pid
        pids = [r.pid for r in rows.values() if r.pid]
    finally:
        sup.request_stop()
        async with asyncio.timeout(15):
            await runner
    assert pids and not any(alive(p) for p in pids)
    assert await read_status(tmp_path) == []
