"""Helpers of the identity tests: hand-made tokens and processes started without a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from foodmesh.core.auth import DEV_SECRET

#: A secret good enough for production checks (>= 32 bytes, not the dev one).
REAL_SECRET = "k" * 40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(
    claims: Mapping[str, Any],
    *,
    secret: str = DEV_SECRET,
    raw: str | None = None,
    service: bool = False,
) -> str:
    """An HS256 token with any claims (``raw``: the claims' JSON text as is).

    ``service``: with the service tokens' header (``kid`` ``foodmesh-service``).
    """
    kid = ',"kid":"foodmesh-service"' if service else ""
    head = _b64(f'{{"alg":"HS256","typ":"JWT"{kid}}}'.encode())
    body = _b64((raw if raw is not None else json.dumps(claims)).encode())
    sig = _b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def base_env(**extra: str) -> dict[str, str]:
    """The environment of this test run without any auth setting or dev mode."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FOODMESH_AUTH", "FOODMESH_SERVICE_SECRET"))
           and k != "FOODMESH_DEV"}  # fmt: skip
    env.update(extra)
    return env


def start(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m foodmesh <args>`` with stdout and stderr merged."""
    return subprocess.Popen(  # noqa: S603 — our own command
        [sys.executable, "-m", "foodmesh", *args], env=dict(env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    """Lines of the process's output up to the one holding ``needle`` (or its end)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if needle in line:
            break
    return lines


def stop(proc: subprocess.Popen[str]) -> None:
    """Stops the process (SIGTERM, then SIGKILL) and closes its pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
