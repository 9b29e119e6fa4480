"""The committed stubs in foodmesh/v1 are exactly what proto/ generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foodmesh import gen


def test_committed_stubs_match_the_protos() -> None:
    assert gen.check() == []


def test_a_changed_proto_is_reported_as_drift(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(gen.PROTO_ROOT, protos)
    out = tmp_path / "out"
    shutil.copytree(gen.OUT_ROOT / gen.PACKAGE, out / gen.PACKAGE)
    assert gen.check(proto_root=protos, out_root=out) == []

    eta = protos / gen.PACKAGE / "eta.proto"
    eta.write_text(
        eta.read_text().replace("bool cached = 4;", "bool cached = 4;\n  int32 hops = 5;")
    )
    (out / gen.PACKAGE / "common_pb2_grpc.pyi").unlink()

    drift = gen.check(proto_root=protos, out_root=out)
    assert "eta_pb2.py" in drift and "eta_pb2.pyi" in drift
    assert "common_pb2_grpc.pyi (missing)" in drift


def test_gen_check_exits_non_zero_on_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "check", lambda **_: ["order_pb2.py"])
    assert gen.main(["--check"]) == 1
