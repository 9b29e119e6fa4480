"""Fixtures of the chaos tests: a NATS and a Redis of each test's own, to kill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.chaos._servers import OwnNats, OwnRedis, OwnServer

S = TypeVar("S", bound=OwnServer)


def _running(server: S) -> Iterator[S]:
    """``server`` started, and killed afterwards unless the test already did."""
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    yield from _running(OwnNats(tmp_path / "nats"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    yield from _running(OwnRedis(tmp_path / "redis"))
