"""Headless Chromium for end-to-end tests: Debian's browser, driven by Playwright.

Playwright's own browser download cannot work here (no internet beyond package
registries), so the tests use Debian's ``chromium`` package, installing it with
apt-get when running as root and it is missing (once, under a lock), and skip
with a message saying how to get it otherwise. Screenshots go to
``.foodmesh/test-artifacts/`` (kept after the run, for people and CI logs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

__all__ = ["ARTIFACTS", "browser_page", "chromium_path"]

ARTIFACTS = Path(__file__).resolve().parents[2] / ".foodmesh" / "test-artifacts"
_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip


def _installed() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def chromium_path() -> str:
    """Debian's Chromium, installed now if we are root and have apt-get; else the test skips."""
    found = _installed()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed: `apt-get install chromium` (as root)")
    lock = Path("/tmp/foodmesh-chromium-install.lock")
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one install at a time, whoever asks
        if not _installed():
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (["apt-get", "update", "-qq"],
                         ["apt-get", "install", "-y", "-qq", "chromium"]):  # fmt: skip
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    pytest.skip(f"could not install Chromium ({' '.join(argv)}): "
                                f"{done.stderr.strip()[-300:]}")  # fmt: skip
    found = _installed()
    if not found:
        pytest.skip("Chromium was installed but is not on PATH")
    return found


@contextlib.asynccontextmanager
async def browser_page(*, width: int = 1400, height: int = 900) -> AsyncIterator[object]:
    """A fresh page in a fresh headless Chromium (a Playwright ``Page``)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    executable = chromium_path()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            await browser.close()
