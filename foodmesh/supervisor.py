"""`foodmesh up`: every service its own process, supervised; `foodmesh status` reads it back.

The supervisor starts each process, restarts one that dies (with backoff, and
gives up on one that keeps dying), writes what runs where to
``<state>/processes.json`` for ``foodmesh status``, and on Ctrl-C or SIGTERM
stops them all: SIGTERM first so each drains, SIGKILL after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ProcessSpec", "ProcessStatus", "Supervisor", "probe_health", "read_status"]

_log = logging.getLogger("foodmesh.up")
_STATE_FILE = "processes.json"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One supervised process: a name, its command, and where its health answers."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    #: gRPC port with the standard health service, or None for non-gRPC processes.
    grpc_port: int | None = None
    http_url: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    name: str
    pid: int | None
    alive: bool
    restarts: int
    grpc_port: int | None
    http_url: str | None
    health: str


async def probe_health(port: int, *, host: str = "127.0.0.1", within_s: float = 1.0) -> str:
    """The standard health status of the server on ``port``: SERVING, NOT_SERVING or DOWN."""
    try:
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=within_s
            )
    except grpc.aio.AioRpcError:
        return "DOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def read_status(state_dir: Path) -> list[ProcessStatus]:
    """What ``foodmesh up`` in ``state_dir`` is running, each with live health."""
    path = state_dir / _STATE_FILE
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    out: list[ProcessStatus] = []
    for p in saved.get("processes", []):
        alive = _alive(p.get("pid"))
        health = "DOWN"
        if alive and p.get("grpc_port"):
            health = await probe_health(int(p["grpc_port"]))
        elif alive:
            health = "RUNNING"
        out.append(
            ProcessStatus(
                name=p["name"],
                pid=p.get("pid"),
                alive=alive,
                restarts=int(p.get("restarts", 0)),
                grpc_port=p.get("grpc_port"),
                http_url=p.get("http_url"),
                health=health,
            )
        )
    return out


@dataclass(slots=True)
class _Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    recent_deaths: list[float] = field(default_factory=list)
    gave_up: bool = False


class Supervisor:
    """Runs processes until told to stop; restarts the ones that die."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        state_dir: Path,
        grace_s: float = 10.0,
        max_deaths_per_minute: int = 5,
        log_dir: Path | None = None,
    ) -> None:
        self.children = [_Child(s) for s in specs]
        self.state_dir = state_dir
        #: Each child's output appended to ``<log_dir>/<name>.log`` (None: inherited).
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.max_deaths = max_deaths_per_minute
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "supervisor_pid": os.getpid(),
            "processes": [
                {
                    "name": c.spec.name,
                    "pid": c.proc.pid if c.proc and c.proc.returncode is None else None,
                    "restarts": c.restarts,
                    "grpc_port": c.spec.grpc_port,
                    "http_url": c.spec.http_url,
                    "argv": list(c.spec.argv),
                }
                for c in self.children
            ],
        }
        tmp = self.state_dir / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_dir / _STATE_FILE)

    async def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env}
        if self.log_dir is None:
            child.proc = await asyncio.create_subprocess_exec(
                *child.spec.argv, env=env, start_new_session=True
            )
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = await asyncio.to_thread(open, self.log_dir / f"{child.spec.name}.log", "ab")
            with log:
                child.proc = await asyncio.create_subprocess_exec(
                    *child.spec.argv, env=env, start_new_session=True, stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
        _log.info("started %s (pid %d)", child.spec.name, child.proc.pid)
        self._write_state()

    async def _watch(self, child: _Child) -> None:
        while not self._stop.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stop.is_set():
                return
            now = time.monotonic()
            child.recent_deaths = [t for t in child.recent_deaths if now - t < 60] + [now]
            if len(child.recent_deaths) > self.max_deaths:
                child.gave_up = True
                _log.error(
                    "%s exited %d times in a minute (last code %d); not restarting it",
                    child.spec.name,
                    len(child.recent_deaths),
                    code,
                )
                self._write_state()
                return
            backoff = min(10.0, 0.5 * 2 ** (len(child.recent_deaths) - 1))
            _log.warning(
                "%s exited with code %d; restarting in %.1fs", child.spec.name, code, backoff
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            child.restarts += 1
            await self._spawn(child)

    async def wait_healthy(self, within_s: float = 30.0) -> list[str]:
        """Waits until every gRPC child is SERVING; returns the names that are not."""
        end = time.monotonic() + within_s
        pending = [c for c in self.children if c.spec.grpc_port]
        while pending and time.monotonic() < end and not self._stop.is_set():
            results = await asyncio.gather(*(probe_health(c.spec.grpc_port or 0) for c in pending))
            pending = [c for c, r in zip(pending, results, strict=True) if r != "SERVING"]
            if pending:
                await asyncio.sleep(0.2)
        return [c.spec.name for c in pending]

    async def run(self, *, on_ready: asyncio.Event | None = None) -> None:
        """Starts everything, supervises until a stop is requested, then stops everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        watchers: list[asyncio.Task[None]] = []
        try:
            for child in self.children:
                await self._spawn(child)
                watchers.append(asyncio.create_task(self._watch(child)))
            not_ready = await self.wait_healthy()
            if not_ready:
                _log.warning("not serving yet: %s", ", ".join(not_ready))
            if on_ready is not None:
                on_ready.set()
            await self._stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._stop_all()
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / _STATE_FILE).unlink()

    async def _stop_all(self) -> None:
        self._stop.set()
        running = [c for c in self.children if c.proc and c.proc.returncode is None]
        # Reverse start order: callers stop before the services they call.
        for child in reversed(running):
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)

        async def reap(child: _Child) -> None:
            assert child.proc is not None
            try:
                async with asyncio.timeout(self.grace_s + 2):
                    await child.proc.wait()
            except TimeoutError:
                _log.warning("%s did not stop in time; killing it", child.spec.name)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()

        await asyncio.gather(*(reap(c) for c in running))
        if running:
            _log.info("stopped %s", ", ".join(c.spec.name for c in running))


def status_table(rows: Sequence[ProcessStatus]) -> str:
    """A plain table for the terminal."""
    if not rows:
        return "no foodmesh processes (start them with `foodmesh up`)"
    lines = [f"{'process':<10} {'pid':>7} {'port':>6} {'restarts':>8}  health"]
    for r in rows:
        lines.append(
            f"{r.name:<10} {r.pid or '-':>7} {r.grpc_port or '-':>6} {r.restarts:>8}  {r.health}"
        )
    return "\n".join(lines)


def as_json(rows: Sequence[ProcessStatus]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def python_argv(*args: str) -> tuple[str, ...]:
    """Runs ``foodmesh <args>`` with this interpreter (works inside any venv)."""
    return (sys.executable, "-m", "foodmesh", *args)
