"""ETA replicas sharing one model store take turns retraining: a PostgreSQL advisory lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from foodmesh.roads import RoadGraph
from servers.eta.lease import retrain_lease
from servers.eta.model import model_files
from servers.eta.retrain import Retrainer

pytestmark = pytest.mark.integration


async def test_one_holder_at_a_time_and_released_on_exit(pg_url: str, tmp_path: Path) -> None:
    key = 424242  # not the service's key: tests run beside each other
    async with retrain_lease(pg_url, key=key) as first:
        assert first
        async with retrain_lease(pg_url, key=key) as second:
            assert not second
    async with retrain_lease(pg_url, key=key) as again:
        assert again


async def test_a_replica_without_the_lease_skips_its_pass(pg_url: str, tmp_path: Path) -> None:
    retrainer = Retrainer(pg_url, tmp_path, graph=RoadGraph.default(), say=lambda _: None)
    async with retrain_lease(pg_url) as held:
        assert held
        out = await retrainer.check(force=True)
    assert out is not None and out.decision == "skipped" and "another" in out.reason
    assert model_files(tmp_path) == []
    out = await retrainer.check(force=True)  # the lease free: this replica's pass runs
    assert out is not None and "another" not in out.reason
