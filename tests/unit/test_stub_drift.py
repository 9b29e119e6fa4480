"""The committed stubs in foodmesh/v1 are exactly what proto/ generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foodmesh import gen


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of proto/ and of the committed stubs, to change without touching the repo."""
    protos = tmp_path / "proto"
    shutil.copytree(gen.PROTO_ROOT, protos)
    out = tmp_path / "out"
    shutil.copytree(gen.OUT_ROOT / gen.PACKAGE, out / gen.PACKAGE)
    return protos, out


def test_committed_stubs_match_the_protos(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["--check"]) == 0
    assert "matches proto/" in capsys.readouterr().out


def test_the_copy_starts_without_drift(tree: tuple[Path, Path]) -> None:
    protos, out = tree
    assert gen.check(proto_root=protos, out_root=out) == []


def test_a_changed_proto_is_reported_as_drift(tree: tuple[Path, Path]) -> None:
    protos, out = tree
    eta = protos / gen.PACKAGE / "eta.proto"
    eta.write_text(
        eta.read_text() + "\n// Added.\nmessage Extra {\n  // A field.\n  int32 n = 1;\n}\n"
    )
    assert gen.check(proto_root=protos, out_root=out) == ["eta_pb2.py", "eta_pb2.pyi"]


def test_a_tampered_missing_or_extra_stub_is_reported(tree: tuple[Path, Path]) -> None:
    protos, out = tree
    pkg = out / gen.PACKAGE
    order = pkg / "order_pb2.py"
    order.write_text(order.read_text() + "# edited by hand\n")
    (pkg / "common_pb2_grpc.pyi").unlink()
    (pkg / "legacy_pb2.py").write_text("")
    assert sorted(gen.check(proto_root=protos, out_root=out)) == [
        "common_pb2_grpc.pyi (missing)",
        "legacy_pb2.py (no longer generated)",
        "order_pb2.py",
    ]


def test_generate_repairs_the_drift_and_keeps_init(tree: tuple[Path, Path]) -> None:
    protos, out = tree
    pkg = out / gen.PACKAGE
    (pkg / "order_pb2.py").write_text("broken\n")
    (pkg / "legacy_pb2.py").write_text("")
    init = (pkg / "__init__.py").read_text()
    written = gen.generate(proto_root=protos, out_root=out)
    assert pkg / "order_pb2.py" in written and not (pkg / "legacy_pb2.py").exists()
    assert (pkg / "__init__.py").read_text() == init
    assert gen.check(proto_root=protos, out_root=out) == []


def test_a_broken_proto_fails_in_one_line_and_leaves_the_stubs_alone(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    protos, out = tree
    before = {p.name: p.read_bytes() for p in (out / gen.PACKAGE).iterdir()}
    (protos / gen.PACKAGE / "eta.proto").write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(gen.GenError, match="protoc failed"):
        gen.generate(proto_root=protos, out_root=out)
    assert {p.name: p.read_bytes() for p in (out / gen.PACKAGE).iterdir()} == before


def test_gen_check_exits_non_zero_and_names_the_files_on_drift(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gen, "check", lambda **_: ["order_pb2.py"])
    assert gen.main(["--check"]) == 1
    assert "foodmesh/v1/order_pb2.py" in capsys.readouterr().err


def test_a_protoc_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(**_: object) -> list[str]:
        raise gen.GenError("protoc failed on proto/foodmesh/v1")

    monkeypatch.setattr(gen, "check", fail)
    assert gen.main(["--check"]) == 1
    assert capsys.readouterr().err == "foodmesh gen: protoc failed on proto/foodmesh/v1\n"
