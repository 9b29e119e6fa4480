"""Names every process that a CI run started and that is still running.

A process is the run's when its environment carries the run's token (every descendant
inherits it, unless a test clears its child's environment) or its command line names one of
the given paths (the checkout, the state dir: the servers' binaries and data live there).
This script, its parents and its own children are not counted. Exit code 1 when any is
found after the grace period, with one line per process.

    python3 .ci/leftovers.py --token TOKEN --grace 15 PATH [PATH ...]
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


def leftovers(token: str, paths: list[str]) -> list[str]:
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
        if f"CI_FOODMESH_RUN={token}".encode() in environ or any(p in cmdline for p in paths):
            found.append(f"pid {pid}: {cmdline[:300]}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--grace", type=float, default=15.0)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    paths = [str(Path(p).resolve()) for p in args.paths]
    deadline = time.monotonic() + args.grace
    while (found := leftovers(args.token, paths)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for line in found:
        print(f"ci: still running after the run: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
