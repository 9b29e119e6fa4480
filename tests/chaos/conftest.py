"""Fixtures of the chaos tests: a NATS and a Redis of each test's own, to kill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos._servers import OwnNats, OwnRedis


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    server = OwnNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()
