"""Processes of the embedded servers: spawn detached, find by pid file, stop for sure."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "alive",
    "free_port",
    "port_free",
    "spawn",
    "stop_pid",
]


#: Where free ports are looked for: above the well-known services, below the kernel's
#: ephemeral range (read from /proc when it can be).
_LOW_PORT = 20000


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


#: The next port :func:`free_port` tries: from a random start, one after another, so one
#: process never hands out a port twice (a batch chosen before any binds stays distinct)
#: and two processes walk apart.
_cursor: int | None = None
_cursor_lock = threading.Lock()


def free_port(preferred: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nobody listens on; ``preferred`` when it is free.

    Chosen below the kernel's ephemeral range: a port from that range (what binding
    port 0 gives) can be taken by any outgoing connection's local end in the moment
    between choosing it and the server binding it. A Redis Cluster node's bus port was
    lost that way in a CI run ("Address already in use"). Taken in turn, not at random:
    random picks collided within the soak's batch of ports, chosen before any was bound.
    """
    global _cursor
    if preferred and port_free(preferred):
        return preferred
    low, high = _LOW_PORT, _ephemeral_low()
    if high - low >= 1000:
        with _cursor_lock:
            if _cursor is None:
                _cursor = random.randrange(low, high)
            for _ in range(high - low):
                port = _cursor
                _cursor = low + (_cursor + 1 - low) % (high - low)
                if port_free(port):
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers do: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def spawn(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> int:
    """Starts ``argv`` in its own session, output appended to ``log``; returns its pid.

    ``posix_spawn`` rather than ``subprocess.Popen``: the server must outlive the
    command that started it, and a Popen object dropped while its child runs warns.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawnp(
        argv[0], list(argv), env if env is not None else dict(os.environ),
        file_actions=actions, setsid=True,
    )  # fmt: skip


def _reap(pid: int) -> None:
    """Collects ``pid``'s exit status when it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int | None, *, expect: str = "") -> bool:
    """True when ``pid`` runs (not a zombie) and its command line contains ``expect``.

    ``expect`` guards against a recycled pid: after a reboot the number may name
    another program, which must never be signalled.
    """
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    cmdline = _cmdline(pid)
    for _ in range(50):
        if cmdline:
            break
        # A process caught in the middle of execve shows an empty command line.
        time.sleep(0.002)
        cmdline = _cmdline(pid)
    else:
        return True
    if expect in cmdline:
        return True
    # Servers that rewrite their process title (valkey) can be read mid-rewrite:
    # the executable's path is stable.
    try:
        return expect in os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False


def stop_pid(pid: int, *, expect: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Sends ``sig``, waits up to ``timeout`` s, then SIGKILLs; True when it was running."""
    if not alive(pid, expect=expect):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, expect=expect):
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(250):
        if not alive(pid, expect=expect):
            break
        time.sleep(0.02)
    return True
