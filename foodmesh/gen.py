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

from google.protobuf import descriptor_pb2

__all__ = ["GenError", "check", "descriptor_set", "generate", "include_dirs", "main"]

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
OUT_ROOT = REPO
PACKAGE = Path("foodmesh") / "v1"
_GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
_INIT = '"""Generated from proto/foodmesh/v1 by `foodmesh gen`; do not edit."""\n'


class GenError(Exception):
    """protoc failed or a tool is missing; the message says what."""


def include_dirs() -> list[str]:
    """Where protoc finds what our contracts import: grpcio-tools' and googleapis' protos."""
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


def _protos(proto_root: Path) -> list[str]:
    protos = sorted((proto_root / PACKAGE).glob("*.proto"))
    if not protos:
        raise GenError(f"no .proto files under {proto_root / PACKAGE}")
    return [p.relative_to(proto_root).as_posix() for p in protos]


def _protoc(proto_root: Path, outputs: Sequence[str]) -> None:
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        *(f"-I{d}" for d in include_dirs()),
        *outputs,
        *_protos(proto_root),
    ]
    if protoc.main(args) != 0:
        raise GenError(f"protoc failed on {proto_root / PACKAGE} (its message is above)")


def _generated(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {p.name: p for p in directory.iterdir() if p.name.endswith(_GENERATED)}


def _generate_into(proto_root: Path, out_root: Path) -> dict[str, Path]:
    _protoc(
        proto_root,
        [
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--mypy_out=quiet:{out_root}",
            f"--mypy_grpc_out=quiet:{out_root}",
        ],
    )
    return _generated(out_root / PACKAGE)


def generate(*, proto_root: Path = PROTO_ROOT, out_root: Path = OUT_ROOT) -> list[Path]:
    """Runs protoc over ``proto_root/foodmesh/v1/*.proto`` and writes ``out_root/foodmesh/v1``.

    Generates into a temporary directory first, so a failing protoc leaves the
    committed files as they were; then replaces the generated files (removing
    those no proto generates any more) and keeps ``__init__.py``.
    """
    out = out_root / PACKAGE
    with tempfile.TemporaryDirectory(prefix="foodmesh-gen-") as tmp:
        fresh = _generate_into(proto_root, Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        for name, old in _generated(out).items():
            if name not in fresh:
                old.unlink()
        for name, new in fresh.items():
            shutil.copyfile(new, out / name)
    init = out / "__init__.py"
    if not init.exists():
        init.write_text(_INIT)
    return sorted(out / name for name in fresh)


def check(*, proto_root: Path = PROTO_ROOT, out_root: Path = OUT_ROOT) -> list[str]:
    """The generated files that differ from what ``proto_root`` generates (empty: no drift).

    A file that should exist and does not is reported as ``NAME (missing)``, one that
    exists but is no longer generated as ``NAME (no longer generated)``.
    """
    with tempfile.TemporaryDirectory(prefix="foodmesh-gen-") as tmp:
        fresh = _generate_into(proto_root, Path(tmp))
        have = _generated(out_root / PACKAGE)
        drift = [f"{n} (missing)" for n in sorted(fresh.keys() - have.keys())]
        drift += [f"{n} (no longer generated)" for n in sorted(have.keys() - fresh.keys())]
        drift += [
            n
            for n in sorted(fresh.keys() & have.keys())
            if not filecmp.cmp(fresh[n], have[n], shallow=False)
        ]
        if not (out_root / PACKAGE / "__init__.py").exists():
            drift.append("__init__.py (missing)")
        return drift


def descriptor_set(*, proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Our protos' descriptors with their comments (source info), for the contract lint.

    The ``_pb2`` modules carry no comments, so rules about documentation need this.
    """
    with tempfile.TemporaryDirectory(prefix="foodmesh-gen-") as tmp:
        out = Path(tmp) / "contracts.binpb"
        _protoc(proto_root, [f"--descriptor_set_out={out}", "--include_source_info"])
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
        return fds


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``foodmesh gen [--check]``; 0 on success, 1 on drift or a protoc error."""
    p = argparse.ArgumentParser(prog="foodmesh gen", description=__doc__)
    p.add_argument("--check", action="store_true", help="fail if committed stubs drift")
    args = p.parse_args(argv)
    try:
        if args.check:
            drift = check()
            if drift:
                print("generated stubs differ from proto/ (run `foodmesh gen`):", file=sys.stderr)
                for name in drift:
                    print(f"  {PACKAGE.as_posix()}/{name}", file=sys.stderr)
                return 1
            print(f"{PACKAGE.as_posix()} matches proto/")
            return 0
        for path in generate():
            print(f"wrote {path.relative_to(OUT_ROOT).as_posix()}")
        return 0
    except GenError as exc:
        print(f"foodmesh gen: {exc}", file=sys.stderr)
        return 1
