"""``foodmesh lint-proto``: ``buf lint`` and ``buf breaking`` over ``proto/``, offline.

buf (the ``buf-bin`` wheel) reads its rules from ``proto/buf.yaml``. Its registry is
out of reach, so the files our contracts import are copied beside a copy of
``proto/`` in a temporary workspace, from where protoc finds them in ``foodmesh gen``:
``google/api`` and ``google/rpc`` from googleapis-common-protos, ``google/protobuf``
from grpcio-tools. ``buf breaking`` compares ``proto/`` with the same folder at a
baseline commit: the merge base with ``main`` on a branch, the previous commit on
``main`` (CI's fresh clone); without that history it is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from foodmesh.gen import PROTO_ROOT, REPO, include_dirs

__all__ = ["Baseline", "ProtoLintError", "baseline", "breaking", "lint", "main", "workspace"]

CONFIG = "buf.yaml"
_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)


class ProtoLintError(Exception):
    """buf or git could not run, or an import is missing; the message says what."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """The commit ``buf breaking`` compares with, and why that one."""

    ref: str
    why: str


def _buf() -> str:
    here = Path(sys.executable).parent / "buf"
    found = str(here) if here.exists() else shutil.which("buf")
    if found is None:
        raise ProtoLintError("buf not found: install the dev extras (`pip install -e '.[dev]'`)")
    return found


def workspace(proto_root: Path, into: Path, *, config: Path | None = None) -> Path:
    """Copies ``proto_root`` into ``into`` with every file it imports from outside it.

    ``config`` (default: ``proto_root``'s own ``buf.yaml``, else ``proto/buf.yaml``)
    becomes the workspace's ``buf.yaml``. Returns ``into``.
    """
    shutil.copytree(proto_root, into, dirs_exist_ok=True)
    cfg = config or (proto_root / CONFIG if (proto_root / CONFIG).exists() else PROTO_ROOT / CONFIG)
    shutil.copyfile(cfg, into / CONFIG)
    try:
        includes = [Path(d) for d in include_dirs()]
    except ImportError as exc:
        raise ProtoLintError(f"{exc.name} is missing: install the dev extras") from None
    todo = sorted(into.rglob("*.proto"))
    while todo:
        for name in _IMPORT.findall(todo.pop().read_text()):
            if (into / name).exists():
                continue
            source = next((d / name for d in includes if (d / name).is_file()), None)
            if source is None:
                raise ProtoLintError(f"{name} is imported but in none of {includes}")
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, into / name)
            todo.append(into / name)
    return into


def _line(raw: str) -> str:
    """One of buf's JSON findings as ``file:line:col: what (RULE)``; other lines as they are."""
    try:
        found = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(found, dict):
        return raw
    where = f"{found.get('path')}:{found.get('start_line')}:{found.get('start_column')}"
    return f"{where}: {found.get('message')} ({found.get('type')})"


def _run_buf(*args: str, cwd: Path) -> list[str]:
    """buf's complaints, one per line (empty when it passes)."""
    done = subprocess.run(
        [_buf(), *args, "--error-format", "json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode == 0:
        return []
    lines = [_line(line) for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines or [f"buf {args[0]} exited {done.returncode}"]


def lint(proto_root: Path = PROTO_ROOT) -> list[str]:
    """``buf lint`` over ``proto_root``: ``file:line:col: what (RULE)`` lines, empty if clean."""
    with tempfile.TemporaryDirectory(prefix="foodmesh-buf-") as tmp:
        return _run_buf("lint", cwd=workspace(proto_root, Path(tmp)))


def breaking(proto_root: Path, against: Path) -> list[str]:
    """``buf breaking`` of ``proto_root`` against ``against`` under the FILE rules."""
    with tempfile.TemporaryDirectory(prefix="foodmesh-buf-") as tmp:
        new = workspace(proto_root, Path(tmp) / "new")
        # The current rules judge both sides, whatever buf.yaml the baseline had.
        old = workspace(against, Path(tmp) / "old", config=new / CONFIG)
        return _run_buf("breaking", "--against", str(old), cwd=new)


def _git(*args: str, repo: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def baseline(repo: Path = REPO) -> Baseline | str:
    """The commit to compare with, or why there is none (no git, no history)."""
    head = _git("rev-parse", "--verify", "-q", "HEAD", repo=repo)
    if head is None:
        return "not a git checkout with commits"
    branch = _git("rev-parse", "--abbrev-ref", "HEAD", repo=repo)
    if branch != "main" and _git("rev-parse", "--verify", "-q", "main", repo=repo):
        base = _git("merge-base", "HEAD", "main", repo=repo)
        if base and base != head:  # else HEAD is on main's line: judge its last commit
            return Baseline(base, "the merge base with main")
    parent = _git("rev-parse", "--verify", "-q", "HEAD~1", repo=repo)
    if parent is None:
        return "HEAD has no parent commit here (a shallow clone or the first commit)"
    return Baseline(parent, "the previous commit")


def _checkout(ref: str, subdir: str, into: Path, *, repo: Path) -> bool:
    """Writes ``subdir`` as of ``ref`` into ``into``; False when it did not exist then."""
    names = _git("ls-tree", "-r", "--name-only", ref, "--", subdir, repo=repo)
    if not names:
        return False
    for name in names.splitlines():
        done = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=repo, capture_output=True, check=True
        )
        out = into / Path(name).relative_to(subdir)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(done.stdout)
    return True


def _breaking_against(base: Baseline, *, repo: Path, proto_root: Path) -> tuple[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="foodmesh-buf-base-") as tmp:
        subdir = proto_root.relative_to(repo).as_posix()
        if not _checkout(base.ref, subdir, Path(tmp), repo=repo):
            return f"skipped: {subdir}/ did not exist at {base.ref[:12]} ({base.why})", []
        problems = breaking(proto_root, Path(tmp))
        return f"against {base.ref[:12]} ({base.why})", problems


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``foodmesh lint-proto``; 0 when buf finds nothing, 1 otherwise."""
    p = argparse.ArgumentParser(prog="foodmesh lint-proto", description=__doc__)
    p.add_argument("--against", help="a git commit to compare with (default: see above)")
    p.add_argument("--no-breaking", action="store_true", help="only `buf lint`")
    args = p.parse_args(argv)
    failed = False
    try:
        problems = lint()
        print(f"buf lint: {len(problems)} problem(s) in proto/" if problems else "buf lint: clean")
        print("".join(f"  {line}\n" for line in problems), end="")
        failed = bool(problems)
        if not args.no_breaking:
            base = Baseline(args.against, "--against") if args.against else baseline()
            if isinstance(base, str):
                print(f"buf breaking: skipped: {base}")
            else:
                what, broken = _breaking_against(base, repo=REPO, proto_root=PROTO_ROOT)
                print(f"buf breaking: {what}: {len(broken) or 'no'} breaking change(s)")
                print("".join(f"  {line}\n" for line in broken), end="")
                failed = failed or bool(broken)
    except (ProtoLintError, subprocess.CalledProcessError) as exc:
        print(f"foodmesh lint-proto: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0
