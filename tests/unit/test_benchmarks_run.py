"""Every benchmark runs as the README shows it, ``python benchmarks/<area>.py``, from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    p for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")
    if not p.name.startswith("_")
)  # fmt: skip


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 8


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_a_benchmark_starts_as_a_script_and_documents_itself(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json" in done.stdout and "--quick" in done.stdout, done.stdout


def test_the_city_benchmark_reads_the_drivers_on_a_trip_from_the_simulators_lines(
    tmp_path: Path,
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.city import drivers_busy_mean

    log = tmp_path / "sim.log"
    log.write_text(
        "sim 5s | placed 0 | offers 0 (0 taken) | drivers 0 on, 0 busy | fixes 0 (0/s)\n"
        "sim 10s | placed 3 | offers 2 (2 taken) | drivers 80 on, 12 busy | fixes 9 (1/s)\n"
        "2026-12-07 23:00:00,000 INFO  foodmesh.sim 1 drives went straight\n"
        "sim 15s | placed 4 | offers 3 (3 taken) | drivers 1,200 on, 1,030 busy | fixes 9\n"
        "sim 16s | placed 4 | offers 3 (3 taken) | drivers 0 on, 0 busy | fixes 9 (1/s)\n"
    )
    assert drivers_busy_mean(log) == 521.0  # (12 + 1,030) / 2: not the lines with none on
    log.write_text("no progress lines\n")
    assert drivers_busy_mean(log) is None
