"""Location's fix-age histogram: the batch observation equals prometheus_client's own."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from servers.location.metrics import FIX_AGE, observe_fix_ages


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    buckets = FIX_AGE._upper_bounds[:-1]
    a, b = CollectorRegistry(), CollectorRegistry()
    ha = Histogram("age_seconds", "x", buckets=buckets, registry=a)
    hb = Histogram("age_seconds", "x", buckets=buckets, registry=b)
    return a, ha, b, hb


def _exposition(registry: CollectorRegistry) -> list[str]:
    """Every line but the timestamp of creation and the sum (a float, added in another order)."""
    lines = generate_latest(registry).decode().splitlines()
    return [ln for ln in lines if not ln.startswith(("age_seconds_created", "age_seconds_sum"))]


def _sum(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("age_seconds_sum") or 0.0


def test_batch_observation_matches_observe_value_by_value() -> None:
    rng = random.Random(7)
    ages = [rng.choice([0.0, 0.1, 0.25, 10.0, 300.0, 1e6]) for _ in range(50)]
    ages += [rng.expovariate(0.3) for _ in range(2000)]
    a, ha, b, hb = _pair()
    for x in ages:
        ha.observe(x)
    observe_fix_ages(ages[:1000], hb)
    observe_fix_ages(iter(ages[1000:]), hb)  # any iterable, in several batches
    observe_fix_ages([], hb)
    assert _exposition(a) == _exposition(b)
    assert _sum(b) == pytest.approx(_sum(a), rel=1e-12)
    assert b.get_sample_value("age_seconds_count") == len(ages)
    assert b.get_sample_value("age_seconds_bucket", {"le": "10.0"}) == sum(x <= 10 for x in ages)


def test_a_device_clock_ahead_counts_as_age_zero() -> None:
    a, ha, b, hb = _pair()
    observe_fix_ages([-3.0, -0.01, 0.5], hb)
    for x in (0.0, 0.0, 0.5):
        ha.observe(x)
    assert _exposition(a) == _exposition(b)
    assert _sum(b) == 0.5


def test_the_buckets_bound_the_freshness_alert_threshold() -> None:
    # The alert pages when p95 > 10 s: 10 must be a bucket edge, with room on both sides.
    bounds = FIX_AGE._upper_bounds
    assert 10.0 in bounds and 5.0 in bounds and 30.0 in bounds
