"""Names every process that a CI run started and that is still running.

A process is the run's when its environment carries the run's token (every descendant
inherits it, unless a test clears its child's environment) or, if it started after the run
did (``--since``), its command line names one of the given paths (the checkout, the state
dir: the servers' binaries and data live there) — so a `foodmesh up` started from the same
checkout before the run is not counted. This script and its parents are not counted. Exit
code 1 when any is found after the grace period, with one line per process.

    python3 .ci/leftovers.py --token TOKEN --since EPOCH --grace 15 PATH [PATH ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _started_at(pid: int) -> float:
    """When ``pid`` started (seconds since the epoch), from /proc (0 when unknown)."""
    try:
        ticks = int(_read(pid, "stat").rsplit(b")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (ValueError, IndexError, StopIteration, OSError):
        return 0.0
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def leftovers(token: str, paths: list[str], since: float = 0.0) -> list[str]:
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        pid = int(entry.name)
        state = _read(pid, "stat").rsplit(b")", 1)[-1].split()[:1]
        if state == [b"Z"]:
            continue
        cmdline = _read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        if not cmdline:
            continue  # a kernel thread
        environ = _read(pid, "environ").split(b"\0")
        by_token = f"CI_FOODMESH_RUN={token}".encode() in environ
        by_path = any(p in cmdline for p in paths) and _started_at(pid) >= since
        if by_token or by_path:
            found.append(f"pid {pid}: {cmdline[:300]}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--grace", type=float, default=15.0)
    ap.add_argument("--since", type=float, default=0.0, help="when the run started (epoch s)")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    paths = [str(Path(p).resolve()) for p in args.paths]
    deadline = time.monotonic() + args.grace
    while (found := leftovers(args.token, paths, args.since)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for line in found:
        print(f"ci: still running after the run: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
