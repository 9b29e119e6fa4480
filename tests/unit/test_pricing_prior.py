"""The shipped demand prior: laid over the days before now by local time of the week."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from foodmesh.sim.city import build_city
from foodmesh.sim.demand_prior import demand_prior, save_template, week_template
from servers.pricing.prior import BUILTIN, WEEK, WeekTemplate, lay, load_template

TZ = "America/Los_Angeles"


def test_each_bucket_takes_the_templates_bucket_of_the_same_local_time_of_week() -> None:
    # Bucket j of week w holds w * WEEK + j: what was taken is readable off the value.
    t = WeekTemplate(("9q8yy",), np.arange(2 * WEEK, dtype=np.int64)[None, :], TZ)
    now = dt.datetime(2026, 12, 9, 18, 7, tzinfo=ZoneInfo(TZ))  # a Wednesday, 18:05's bucket
    end = int(now.timestamp() // 300)
    s = lay(t, end_bucket=end, days=9)
    assert (s.start, s.buckets) == (end - 9 * 288, 9 * 288)
    phase = s.counts[0] % WEEK
    # the last bucket laid is Wednesday 18:00 local (the one before now's)
    assert phase[-1] == (2 * 1440 + 18 * 60) // 5
    assert np.all(np.diff(phase) % WEEK == 1)  # consecutive local times, no gap
    assert set((s.counts[0] // WEEK).tolist()) == {0, 1}  # both weeks used
    with pytest.raises(ValueError):
        WeekTemplate(("9q8yy",), np.zeros((1, WEEK + 1), dtype=np.int64), TZ)


def test_the_shipped_template_is_the_generated_citys_demand(tmp_path: object) -> None:
    shipped = load_template(BUILTIN)
    city = build_city(seed=7, restaurants=500, drivers=0, customers=1)
    made = week_template(city, orders_per_hour=1200, seed=7)
    assert shipped.cells == made.cells and shipped.time_zone == TZ
    assert np.array_equal(shipped.counts, made.counts)
    # the seed's prior of a live city: the days before now's bucket, same cells
    now = dt.datetime(2026, 12, 9, 18, 7, tzinfo=dt.UTC)
    p = demand_prior(city, now=now, days=1, orders_per_hour=1200)
    assert p.cells == made.cells and p.counts.shape == (len(p.cells), 288)
    assert p.start.timestamp() + 288 * 300 == now.timestamp() - 2 * 60  # 18:05
    assert abs(p.counts.sum() / (1200 * 24) - 1) < 0.5


def test_a_saved_template_reads_back(tmp_path: object) -> None:
    from pathlib import Path

    city = build_city(seed=3, restaurants=20, drivers=0, customers=1)
    t = week_template(city, weeks=1, orders_per_hour=100, seed=3)
    path = Path(str(tmp_path)) / "prior.npz"
    save_template(t, path)
    back = load_template(path)
    assert back.cells == t.cells and np.array_equal(back.counts, t.counts)


def test_the_forecasters_history_grid_holds_the_window_as_time_moves() -> None:
    from servers.pricing.forecaster import _Grid

    rng = np.random.default_rng(3)
    g = _Grid(100, slack=10)
    truth: dict[tuple[str, int], int] = {}
    end = 1000
    for step in range(40):  # refreshes: a few rows each, recent buckets, new cells at times
        end += int(rng.integers(0, 7))
        rows = []
        for _ in range(5):
            cell = f"c{int(rng.integers(0, 3 + step // 10))}"
            b = end - int(rng.integers(0, 4))
            n = int(rng.integers(0, 9))
            rows.append((cell, float(b * 300), n))
            truth[(cell, b)] = n
        g.put(rows, end=end)
        got = g.window(end - 100, end + 1)
        for i, c in enumerate(g.cells):
            want = [truth.get((c, b), 0) for b in range(end - 100, end + 1)]
            assert got[i].tolist() == want
    assert g.first == min(b for _, b in truth)
    assert g.window(end - 500, end - 400).sum() == 0  # before the window: nothing held
