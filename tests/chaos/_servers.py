"""Servers of a chaos test's own, to SIGKILL and start again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from foodmesh.infra import free_port
from foodmesh.infra._servers import _nats_binary, _redis_binary

__all__ = ["OwnNats", "OwnRedis", "OwnServer", "free_port"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class OwnServer(ABC):
    """A server process of this test's own, to SIGKILL and start again on the same port."""

    name = "server"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def argv(self) -> list[str]:
        """The server's command line."""

    def ready(self) -> bool:
        return _listening(self.port)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited: see {self.dir}"
            if self.ready():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


class OwnNats(OwnServer):
    """nats-server with JetStream storing under ``directory`` (kept across restarts)."""

    name = "nats"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.monitor = free_port()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [str(_nats_binary()), "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor), "-js", "-sd", str(self.dir / "jetstream"),
                "-n", f"chaos-{self.port}"]  # fmt: skip

    def ready(self) -> bool:
        """JetStream is up: the monitor's /healthz answers 200."""
        try:
            with socket.create_connection(("127.0.0.1", self.monitor), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return b" 200 " in s.recv(200)
        except OSError:
            return False


class OwnRedis(OwnServer):
    """A redis-server that keeps nothing: killed, it comes back empty."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [str(_redis_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--appendonly", "no"]  # fmt: skip
