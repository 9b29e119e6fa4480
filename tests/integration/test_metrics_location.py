"""Location's fix-age histogram, fed by fixes sent through the real gRPC stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.integration._location import DriverApp, fix, location_service

pytestmark = pytest.mark.timeout(60)
SF = (37.7749, -122.4194)


def _age(sample: str, le: str | None = None) -> float:
    labels = {"le": le} if le is not None else {}
    return REGISTRY.get_sample_value(f"foodmesh_location_fix_age_seconds_{sample}", labels) or 0.0


async def test_each_stored_fix_is_observed_at_its_age_and_a_rejected_one_is_not(
    pg_url: str, redis_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async with location_service(
        pg_url=pg_url,
        redis_url=redis_url,
        nats_url=nats_url,
        namespace=namespace,
        state_dir=tmp_path,
    ) as svc:
        count0, sum0 = _age("count"), _age("sum")
        fresh0, stale0 = _age("bucket", "5.0"), _age("bucket", "30.0")
        async with DriverApp(svc.target, "drv_age_a") as a, DriverApp(svc.target, "drv_age_b") as b:
            now = time.time()
            ack = await a.send(fix(*SF, ts=now - 1.0, seq=1), fix(*SF, ts=now - 0.5, seq=2))
            assert ack.accepted == 2
            ack = await b.send(fix(SF[0] + 0.001, SF[1], ts=now - 20.0, seq=1))
            assert ack.accepted == 1
            ack = await b.send(fix(91.0, 0.0, seq=2))  # bad coordinates: never stored
            assert ack.accepted == 0
        assert _age("count") == count0 + 3
        # 1 s and 0.5 s old plus the time in transit; 20 s old: in the 30 s bucket only.
        assert _age("bucket", "5.0") == fresh0 + 2
        assert _age("bucket", "30.0") == stale0 + 3
        assert 21.5 <= _age("sum") - sum0 < 21.5 + 3 * 5.0
