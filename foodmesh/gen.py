"""Generates ``foodmesh/v1`` from ``proto/foodmesh/v1``: messages, gRPC stubs, typing stubs.

``foodmesh gen`` writes them; ``foodmesh gen --check`` generates into a temporary
directory and fails when the committed files differ (CI's drift check).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["check", "generate", "main"]

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
OUT_ROOT = REPO
PACKAGE = Path("foodmesh") / "v1"
_GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class GenError(Exception):
    """protoc failed or a tool is missing; the message says what."""


def _include_dirs() -> list[str]:
    import google.api
    import grpc_tools

    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    return [str(Path(next(iter(grpc_tools.__path__))) / "_proto"), str(googleapis)]


def _plugin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise GenError(f"{name} not found: install the dev extras (`pip install -e '.[dev]'`)")
    return found


def generate(*, proto_root: Path = PROTO_ROOT, out_root: Path = OUT_ROOT) -> list[Path]:
    """Runs protoc over every ``.proto`` under ``proto_root/foodmesh/v1`` into ``out_root``."""
    from grpc_tools import protoc

    protos = sorted((proto_root / PACKAGE).glob("*.proto"))
    if not protos:
        raise GenError(f"no .proto files under {proto_root / PACKAGE}")
    out = out_root / PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.name.endswith(_GENERATED):
            old.unlink()
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        *(f"-I{d}" for d in _include_dirs()),
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *(str(p.relative_to(proto_root)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise GenError("protoc failed (its message is above)")
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from proto/foodmesh/v1 by `foodmesh gen`; do not edit."""\n')
    return sorted(p for p in out.iterdir() if p.name.endswith(_GENERATED))


def check(*, proto_root: Path = PROTO_ROOT, out_root: Path = OUT_ROOT) -> list[str]:
    """The generated files that differ from what ``proto_root`` generates (empty: no drift)."""
    with tempfile.TemporaryDirectory(prefix="foodmesh-gen-") as tmp:
        fresh = generate(proto_root=proto_root, out_root=Path(tmp))
        committed_dir = out_root / PACKAGE
        want = {p.name for p in fresh}
        have = {p.name for p in committed_dir.iterdir() if p.name.endswith(_GENERATED)}
        drift = [f"{n} (missing)" for n in sorted(want - have)]
        drift += [f"{n} (no longer generated)" for n in sorted(have - want)]
        drift += [
            n
            for n in sorted(want & have)
            if not filecmp.cmp(Path(tmp) / PACKAGE / n, committed_dir / n, shallow=False)
        ]
        return drift


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="foodmesh gen", description=__doc__)
    p.add_argument("--check", action="store_true", help="fail if committed stubs drift")
    args = p.parse_args(argv)
    try:
        if args.check:
            drift = check()
            if drift:
                print("generated stubs differ from proto/ (run `foodmesh gen`):", file=sys.stderr)
                for name in drift:
                    print(f"  foodmesh/v1/{name}", file=sys.stderr)
                return 1
            print("foodmesh/v1 matches proto/")
            return 0
        written = generate()
        print(f"wrote {len(written)} files to {OUT_ROOT / PACKAGE}")
        return 0
    except GenError as exc:
        print(f"foodmesh gen: {exc}", file=sys.stderr)
        return 1
