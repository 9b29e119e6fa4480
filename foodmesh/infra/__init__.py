"""Real PostgreSQL, Redis and NATS for a laptop or CI, started from pip-installed wheels.

``up`` starts whatever is not already running under a state directory (on free
ports, data kept between restarts) and returns the URLs; ``down`` stops every
server under it, including those left by killed test runs; ``status`` says
what runs. A server whose ``FOODMESH_<NAME>_URL`` is set is never started:
that URL is used as it is. With ``smtp=True`` (``foodmesh infra up``, ``foodmesh up``) a
development SMTP server that keeps every message joins them (``FOODMESH_SMTP_URL``).
``start_infra`` is the same code as an async context manager, for the test fixtures and
the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from foodmesh.infra._procs import alive, free_port
from foodmesh.infra._servers import NatsServer, PostgresServer, RedisServer, Server, SmtpServer
from foodmesh.infra.errors import InfraError

__all__ = [
    "ENV_VARS",
    "SMTP_URL_VAR",
    "InfraError",
    "InfraStatus",
    "InfraURLs",
    "RunningInfra",
    "ServerStatus",
    "down",
    "format_status",
    "free_port",
    "smtp_inbox_url",
    "stop_smtp",
    "fresh_run_dir",
    "start_infra",
    "status",
    "up",
]

ENV_VARS = {
    "postgres": "FOODMESH_POSTGRES_URL",
    "redis": "FOODMESH_REDIS_URL",
    "nats": "FOODMESH_NATS_URL",
}
#: The development SMTP server's override (a relay of one's own; never started then).
SMTP_URL_VAR = "FOODMESH_SMTP_URL"
_TEST_RUNS = "test-runs"


@dataclass(frozen=True, slots=True)
class InfraURLs:
    """Where the three servers answer."""

    postgres_url: str
    redis_url: str
    nats_url: str
    #: The SMTP server, when one was asked for ("" otherwise).
    smtp_url: str = ""

    def as_env(self) -> dict[str, str]:
        """The ``FOODMESH_*_URL`` variables that point a service at these servers."""
        env = {
            ENV_VARS["postgres"]: self.postgres_url,
            ENV_VARS["redis"]: self.redis_url,
            ENV_VARS["nats"]: self.nats_url,
        }
        if self.smtp_url:
            env[SMTP_URL_VAR] = self.smtp_url
        return env


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One server as ``status`` sees it."""

    name: str
    running: bool
    source: str  # "embedded" (started by us) or "env" (named by FOODMESH_*_URL)
    url: str | None = None
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class InfraStatus:
    """Every server under a state directory."""

    state_dir: Path
    servers: tuple[ServerStatus, ...]

    @property
    def all_running(self) -> bool:
        return all(s.running for s in self.servers if s.name in ENV_VARS)

    @property
    def urls(self) -> InfraURLs | None:
        by = {s.name: s.url for s in self.servers if s.running}
        if None in (by.get("postgres"), by.get("redis"), by.get("nats")):
            return None
        return InfraURLs(by["postgres"] or "", by["redis"] or "", by["nats"] or "")


@dataclass(frozen=True, slots=True)
class RunningInfra:
    """What ``start_infra`` yields."""

    urls: InfraURLs
    state_dir: Path
    started: tuple[str, ...]
    seconds_to_ready: float


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _all_servers(state_dir: Path, *, durable: bool = True) -> list[Server]:
    return [
        PostgresServer(state_dir, durable=durable),
        RedisServer(state_dir, durable=durable),
        NatsServer(state_dir, durable=durable),
    ]


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per state directory, across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "infra.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


async def up(
    state_dir: Path,
    *,
    durable: bool = True,
    env: Mapping[str, str] | None = None,
    ready_within: float = 30.0,
    smtp: bool = False,
) -> InfraURLs:
    """Starts what is not running (all at once) and returns the URLs once all answer.

    ``smtp`` adds the development SMTP server (unless ``FOODMESH_SMTP_URL`` names one).
    """
    env = os.environ if env is None else env
    state_dir = _absolute(state_dir)
    servers = [s for s in _all_servers(state_dir, durable=durable) if not env.get(ENV_VARS[s.name])]
    if smtp and not env.get(SMTP_URL_VAR):
        servers.append(SmtpServer(state_dir, durable=durable))
    lock = _locked(state_dir)
    await asyncio.to_thread(lock.__enter__)
    try:
        results = await asyncio.gather(
            *(s.ensure(ready_within=ready_within) for s in servers), return_exceptions=True
        )
    finally:
        lock.__exit__(None, None, None)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.to_thread(_stop_all, servers)
        first = failures[0]
        if isinstance(first, InfraError):
            raise first
        raise InfraError(f"starting the servers failed: {first!r}") from first
    urls = {
        s.name: r.url
        for s, r in zip(servers, results, strict=True)
        if not isinstance(r, BaseException)
    }
    return InfraURLs(
        postgres_url=env.get(ENV_VARS["postgres"]) or urls["postgres"],
        redis_url=env.get(ENV_VARS["redis"]) or urls["redis"],
        nats_url=env.get(ENV_VARS["nats"]) or urls["nats"],
        smtp_url=(env.get(SMTP_URL_VAR) or urls.get("smtp", "")) if smtp else "",
    )


def smtp_inbox_url(state_dir: Path) -> str | None:
    """The development SMTP server's inbox listing (HTTP), when it runs under ``state_dir``."""
    rec = SmtpServer(_absolute(state_dir), durable=True).running()
    http = rec.extra_ports.get("http") if rec else None
    return f"http://127.0.0.1:{http}/messages" if http else None


def stop_smtp(state_dir: Path) -> bool:
    """Stops the development SMTP server under ``state_dir``; True when it ran."""
    return SmtpServer(_absolute(state_dir), durable=True).stop()


def _stop_all(servers: list[Server]) -> list[str]:
    return [s.name for s in servers if s.stop()]


def _every_server(state_dir: Path) -> list[Server]:
    """The three servers and the nodes of any local cluster (``infra up --clusters``, the
    scale-out tests) under ``state_dir``."""
    from foodmesh.infra.cluster import cluster_nodes

    return [*_all_servers(state_dir), SmtpServer(state_dir, durable=True),
            *cluster_nodes(state_dir)]  # fmt: skip


def _test_runs(state_dir: Path) -> list[Path]:
    root = state_dir / _TEST_RUNS
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


async def down(state_dir: Path, *, include_test_runs: bool = True) -> list[str]:
    """Stops every server under ``state_dir`` (and its test runs); returns what it stopped."""
    state_dir = _absolute(state_dir)
    stopped: list[str] = []
    dirs = [state_dir, *(_test_runs(state_dir) if include_test_runs else [])]
    for d in dirs:
        with _locked(d):
            names = await asyncio.to_thread(_stop_all, _every_server(d))
        stopped += [n if d == state_dir else f"{n} ({d.name})" for n in names]
        if d != state_dir:
            await asyncio.to_thread(remove_state, d)
    return stopped


def remove_state(state_dir: Path) -> None:
    """Deletes a (stopped) state directory, including PostgreSQL data placed under /tmp."""
    pg = PostgresServer(state_dir, durable=False)
    if pg.data_dir != pg.dir / "data":
        shutil.rmtree(pg.data_dir.parent, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)


async def status(state_dir: Path, *, env: Mapping[str, str] | None = None) -> InfraStatus:
    """Which servers run under ``state_dir`` (or are named by the environment)."""
    env = os.environ if env is None else env
    state_dir = _absolute(state_dir)
    out: list[ServerStatus] = []
    for s in _all_servers(state_dir):
        if url := env.get(ENV_VARS[s.name]):
            out.append(ServerStatus(s.name, running=True, source="env", url=url))
            continue
        rec = s.running()
        ok = False
        if rec is not None:
            try:
                await s.probe(rec)
                ok = True
            except Exception:  # noqa: BLE001 — any failure means "not answering"
                ok = False
        out.append(
            ServerStatus(s.name, running=ok, source="embedded",
                         url=rec.url if rec else None, pid=rec.pid if rec else None)
        )  # fmt: skip
    if url := env.get(SMTP_URL_VAR):
        out.append(ServerStatus("smtp", running=True, source="env", url=url))
    elif (rec := SmtpServer(state_dir, durable=True).running()) is not None:
        # shown while it runs; not one of the three every service needs (all_running)
        out.append(ServerStatus("smtp", running=True, source="embedded", url=rec.url,
                                pid=rec.pid))  # fmt: skip
    return InfraStatus(state_dir=state_dir, servers=tuple(out))


def format_status(st: InfraStatus) -> str:
    """A small table of the servers, for people."""
    lines = [f"infrastructure under {st.state_dir}:"]
    for s in st.servers:
        state = "running" if s.running else "stopped"
        where = s.url or "-"
        pid = f"pid {s.pid}" if s.pid and s.running else ""
        lines.append(f"  {s.name:<9} {state:<8} {s.source:<9} {where:<45} {pid}".rstrip())
    return "\n".join(lines)


def fresh_run_dir(root: Path) -> Path:
    """A fresh state directory for one test run, under ``root/test-runs``.

    Runs whose pytest process is gone are stopped and removed first, so a killed
    run leaves nothing behind once the next one starts.
    """
    base = root.absolute() / _TEST_RUNS
    base.mkdir(parents=True, exist_ok=True)
    for old in _test_runs(root.absolute()):
        try:
            owner = int((old / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = 0
        if not alive(owner, expect="python"):
            _stop_all(_every_server(old))
            remove_state(old)
    d = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    d.mkdir()
    (d / "owner.pid").write_text(str(os.getpid()))
    return d


@contextlib.asynccontextmanager
async def start_infra(
    state_dir: Path,
    *,
    durable: bool = False,
    env: Mapping[str, str] | None = None,
    remove: bool = False,
) -> AsyncIterator[RunningInfra]:
    """Real servers for the duration of the block; stops what it started on the way out."""
    env = os.environ if env is None else env
    state_dir = _absolute(state_dir)
    before = await status(state_dir, env=env)
    t0 = time.monotonic()
    urls = await up(state_dir, durable=durable, env=env)
    took = time.monotonic() - t0
    started = tuple(s.name for s in before.servers if not s.running)
    try:
        yield RunningInfra(urls=urls, state_dir=state_dir, started=started, seconds_to_ready=took)
    finally:
        if remove:  # a throw-away run: whatever runs under it stops too (cluster nodes)
            await asyncio.to_thread(_stop_all, _every_server(state_dir))
            await asyncio.to_thread(remove_state, state_dir)
        else:
            await asyncio.to_thread(
                _stop_all, [s for s in _all_servers(state_dir) if s.name in started]
            )
