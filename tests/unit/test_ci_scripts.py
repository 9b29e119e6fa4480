"""CI's own checks: the survivor finder of ``.ci/leftovers.py`` and the newcomer's script."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _leftovers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_leftovers", ROOT / ".ci" / "leftovers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A detached process that carries a CI token and names ``tmp_path`` on its command line."""
    env = dict(os.environ, CI_FOODMESH_RUN="token-of-this-test")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)],
        env=env, start_new_session=True,
    )  # fmt: skip
    # Until the child has exec'd, /proc shows the parent's command line and environment
    # (a loaded CI run looked in that moment and found no token).
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 30
    while b"time.sleep(60)" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_a_process_of_the_run_is_found_by_its_token_or_its_path(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    find = _leftovers().leftovers
    by_token = find("token-of-this-test", ["/no/such/path"])
    assert any(line.startswith(f"pid {sleeper.pid}:") for line in by_token)
    by_path = find("another-token", [str(tmp_path)])
    assert any(line.startswith(f"pid {sleeper.pid}:") for line in by_path)
    assert not any(f"pid {sleeper.pid}:" in ln for ln in find("another-token", ["/no/such"]))
    # A process started before the run (a `foodmesh up` beside it) is not the run's own.
    later = time.time() + 3600
    assert not any(f"pid {sleeper.pid}:" in ln for ln in find("another", [str(tmp_path)], later))


def test_the_check_fails_naming_a_survivor_and_passes_once_it_is_gone(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    argv = [sys.executable, str(ROOT / ".ci" / "leftovers.py"), "--token", "token-of-this-test",
            "--grace", "0.2", str(tmp_path / "nothing-here")]  # fmt: skip
    found = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert found.returncode == 1 and f"pid {sleeper.pid}:" in found.stderr
    sleeper.kill()
    sleeper.wait()
    gone = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert gone.returncode == 0, gone.stderr


def test_ci_runs_the_newcomer_path_and_the_survivor_check() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert ".ci/newcomer" in run and ".ci/leftovers.py" in run
    newcomer = (ROOT / ".ci" / "newcomer").read_text()
    assert "chmod 700" in newcomer and "infra up" in newcomer and "infra down" in newcomer
