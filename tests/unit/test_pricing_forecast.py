"""The demand forecast's pure parts: features as of the forecast time, the model, surge."""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction

import numpy as np
import pytest

from foodmesh.sim.demand_week import simulate
from servers.pricing import forecast as fc
from servers.pricing import surge as surge_math

CELL = "9q8yy"
OTHER = "9q8yv"
DAY = 288
WEEK = 7 * DAY
#: A Monday 00:00 UTC, in buckets.
START = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()) // fc.BUCKET_S


def rush_series(days: int, *, seed: int = 1, rush_at_h: float = 18.0) -> fc.CountSeries:
    """Two cells: a quiet floor and a daily rush of an hour at ``rush_at_h`` (UTC)."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    hour = (np.arange(n) % DAY) / 12
    rate = 0.4 + 4.0 * ((hour >= rush_at_h) & (hour < rush_at_h + 1))
    counts = np.stack([rng.poisson(rate), rng.poisson(rate * 0.5)])
    return fc.CountSeries(START, (CELL, OTHER), counts.astype(np.int64))


def test_features_read_nothing_at_or_after_the_forecast_time() -> None:
    s = rush_series(16)
    ks = np.array([WEEK + 5, 2 * WEEK + 100, s.buckets - 20], dtype=np.int64)
    for h in fc.HORIZONS:
        before = fc.feature_matrix(s, 0, ks, h)
        for k in ks.tolist():
            future = s.counts.copy()
            future[:, k:] += 50  # the future changes wildly, in both cells (city features)
            changed = fc.CountSeries(s.start, s.cells, future)
            row = fc.feature_matrix(changed, 0, np.array([k]), h)
            row_before = before[ks.tolist().index(k)]
            assert np.array_equal(np.isnan(row), np.isnan(row_before[None, :]))
            assert np.allclose(np.nan_to_num(row), np.nan_to_num(row_before[None, :]))
            # ...while the target does move: the check above is not vacuous
            assert changed.target(0, np.array([k]), h)[0] > s.target(0, np.array([k]), h)[0]
    with pytest.raises(ValueError, match="at or after"):
        s.cell_sum(0, ks - 1, ks + 1, ks)


def test_features_and_target_count_the_right_buckets() -> None:
    s = rush_series(15)
    k = 2 * WEEK + 40
    c = s.counts[0]
    x30 = fc.feature_matrix(s, 0, np.array([k]), 30)[0]
    x60 = fc.feature_matrix(s, 0, np.array([k]), 60)[0]
    f = {n: i for i, n in enumerate(fc.FEATURES)}
    assert s.target(0, np.array([k]), 30)[0] == c[k : k + 6].sum()
    assert s.target(0, np.array([k]), 60)[0] == c[k + 6 : k + 12].sum()
    assert x30[f["recent_30"]] == c[k - 6 : k].sum() == x60[f["recent_30"]]
    assert x30[f["last_week_target"]] == c[k - WEEK : k - WEEK + 6].sum()
    assert x60[f["last_week_target"]] == c[k + 6 - WEEK : k + 12 - WEEK].sum()
    assert x30[f["yesterday_target"]] == c[k - DAY : k - DAY + 6].sum()
    assert x30[f["city_recent_30"]] == s.counts[:, k - 6 : k].sum()
    assert x30[f["hour"]] == pytest.approx(((k + 3) % DAY) / 12)  # the target's middle
    # before the series began: unknown, not zero
    early = fc.feature_matrix(s, 0, np.array([20]), 30)[0]
    assert math.isnan(early[f["last_week_target"]]) and not math.isnan(early[f["recent_30"]])


def test_events_and_weather_as_known_at_the_forecast_time() -> None:
    s = rush_series(1)
    t = (s.start + 100) * fc.BUCKET_S
    lat, lon = 37.7755, -122.4183  # inside 9q8yy
    big = surge_math.Event("e", lat, lon, 60_000, start_ts=t + 600, end_ts=t + 4200)
    rain = surge_math.Weather("9q8", 3)  # moderate rain: 1.3

    def known(ts: float) -> fc.KnownConditions:
        return fc.KnownConditions(events=(big,), weather=(rain,) if ts < t + 60 else ())

    f = {n: i for i, n in enumerate(fc.FEATURES)}
    x30 = fc.feature_matrix(s, 0, np.array([100]), 30, conditions_at=known)[0]
    x60 = fc.feature_matrix(s, 0, np.array([100]), 60, conditions_at=known)[0]
    # the event starts 10 min ahead: its factor is in both targets (their middles are in it)
    assert x30[f["event"]] == pytest.approx(1.8) and x60[f["event"]] == pytest.approx(1.8)
    assert x30[f["weather"]] == pytest.approx(1.3)  # the weather now, not later
    later = fc.feature_matrix(s, 0, np.array([101]), 30, conditions_at=known)[0]
    assert later[f["weather"]] == 1.0


def test_onsets_are_what_changed_in_the_last_half_hour_as_known_at_the_forecast_time() -> None:
    s = rush_series(1)
    k = 100
    t = (s.start + k) * fc.BUCKET_S
    lat, lon = 37.7755, -122.4183  # inside 9q8yy
    big = surge_math.Event("e", lat, lon, 60_000, start_ts=t + 600, end_ts=t + 4200)
    rain = surge_math.Weather("9q8", 3)  # moderate rain: 1.3
    f = {n: i for i, n in enumerate(fc.FEATURES)}

    def known(rain_from: float, announced: float = -math.inf) -> fc.ConditionsAt:
        return lambda ts: fc.KnownConditions(
            events=(big,) if ts >= announced else (), weather=(rain,) if ts >= rain_from else ()
        )

    # rain began ten minutes ago (one sixth of the last hour), the event starts in ten
    # (two thirds of the target half hour): what the last hour's counts do not show
    x = fc.feature_matrix(s, 0, np.array([k]), 30, conditions_at=known(t - 600))[0]
    assert x[f["weather_onset"]] == pytest.approx(1.3 / ((5 + 1.3) / 6))
    assert x[f["event_onset"]] == pytest.approx((1 + 2 * 1.8) / 3)
    # rain for two hours already, the event running for an hour: the last hour shows them
    x = fc.feature_matrix(s, 0, np.array([k + 18]), 30, conditions_at=known(t - 3600))[0]
    assert x[f["weather_onset"]] == 1.0 and x[f["event_onset"]] == 1.0
    # no leakage: rain beginning after t, an event announced after t, change nothing
    for h in fc.HORIZONS:
        quiet = fc.feature_matrix(s, 0, np.array([k]), h, conditions_at=known(math.inf, math.inf))
        for later in (t + 1, t + 300, t + 3600):
            for at in (known(later, math.inf), known(math.inf, later + 1)):
                x = fc.feature_matrix(s, 0, np.array([k]), h, conditions_at=at)
                assert np.array_equal(np.nan_to_num(x, nan=-1), np.nan_to_num(quiet, nan=-1))
        # ...while rain known at t does move them (the check above is not vacuous)
        moved = fc.feature_matrix(s, 0, np.array([k]), h, conditions_at=known(t - 1))
        assert moved[0, f["weather_onset"]] == pytest.approx(1.3)


def test_the_model_beats_last_week_and_its_interval_holds_80_percent() -> None:
    s = rush_series(28, seed=3)
    test_from = s.buckets - WEEK
    model = fc.train(s, until=test_from, rounds=60, nthread=1)
    assert model.kind == "xgboost" and model.rows > fc.MIN_TRAIN_ROWS
    ks = np.arange(test_from, s.buckets - 12, dtype=np.int64)
    ys, ours, base, inside = [], [], [], []
    col = fc.FEATURES.index("last_week_target")
    for i in range(len(s.cells)):
        y = s.target(i, ks, 30)
        x = fc.feature_matrix(s, i, ks, 30)
        mu = model.mean(x)
        lo, hi = model.interval(mu)
        ys.append(y)
        ours.append(mu)
        base.append(x[:, col])
        inside.append((y >= lo) & (y <= hi))
    y = np.concatenate(ys)
    assert fc.wape(y, np.concatenate(ours)) < 0.85 * fc.wape(y, np.concatenate(base))
    assert 0.7 <= float(np.concatenate(inside).mean()) <= 0.95


def test_forecasts_see_the_rush_coming_and_a_short_history_falls_back() -> None:
    s = rush_series(22, seed=5)
    model = fc.train(s, rounds=60, nthread=1)
    # the last day, 15 minutes before the rush: quiet now, busy in the half hour ahead
    now = (s.start + s.buckets - DAY + 18 * 12 - 3) * fc.BUCKET_S
    f30, f60 = model.forecast(s, CELL, now=now)
    assert (f30.horizon_min, f60.horizon_min) == (30, 60)
    assert f30.end_ts - f30.start_ts == 1800 and f60.start_ts == f30.end_ts
    assert f30.expected > 10  # 3 quiet buckets (0.4 each) and 3 in the rush (4.4 each)
    assert f30.low <= f30.expected <= f30.high
    unseen = model.forecast(s, "9q8zz", now=now)[0]
    assert unseen.expected < 2
    short = fc.train(fc.CountSeries(s.start, s.cells, s.counts[:, :200]))
    assert short.kind == "fallback"
    assert short.forecast(s, CELL, now=now)[0].expected >= 0


def test_surge_risk_thresholds() -> None:
    assert fc.surge_risk(3.0, 2) is fc.SurgeRisk.LOW
    assert fc.surge_risk(3.1, 2) is fc.SurgeRisk.MEDIUM
    assert fc.surge_risk(7.0, 2) is fc.SurgeRisk.HIGH
    assert fc.surge_risk(4.0, 0) is fc.SurgeRisk.HIGH  # no driver: as if one


def test_surge_moves_before_the_rush_and_a_low_forecast_never_lowers_it() -> None:
    calm = surge_math.compute(demand=2, supply=4, cell=CELL, now=0.0)
    early = surge_math.compute(demand=2, supply=4, cell=CELL, now=0.0, anticipated=9)
    assert calm.multiplier == 1 and calm.reason == "Normal demand"
    assert early.multiplier == Fraction("2.1")  # 9 / 4 = 2.25: 2 + 0.25 × 0.3 = 2.075 → 2.1
    assert early.reason == "High demand + rush expected" and early.anticipated == 9
    busy = surge_math.compute(demand=12, supply=4, cell=CELL, now=0.0)
    still = surge_math.compute(demand=12, supply=4, cell=CELL, now=0.0, anticipated=1)
    assert still.multiplier == busy.multiplier and "rush" not in still.reason


def test_a_trained_forecast_lifts_surge_before_the_rush_begins() -> None:
    s = rush_series(22, seed=9)
    model = fc.train(s, rounds=60, nthread=1)
    before_rush = s.start + s.buckets - DAY + 18 * 12 - 2  # 10 minutes before it
    now = before_rush * fc.BUCKET_S
    i = s.cells.index(CELL)
    demand = int(s.counts[i, before_rush - 2 : before_rush].sum())  # the last 10 minutes
    f30 = model.forecast(s, CELL, now=now)[0]
    anticipated = math.floor(f30.expected * 600 / 1800 + 0.5)
    plain = surge_math.compute(demand=demand, supply=2, cell=CELL, now=now)
    ahead = surge_math.compute(demand=demand, supply=2, cell=CELL, now=now, anticipated=anticipated)
    assert plain.multiplier == 1 and ahead.multiplier > 1


def test_the_simulated_weeks_follow_the_curve_events_and_rain() -> None:
    start = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)  # Monday 00:00 in the city
    locs = [(37.7755, -122.4183), (37.80, -122.41), (37.76, -122.45)]
    week = simulate(locs, [1.0, 1.0, 1.0], start=start, days=14, orders_per_hour=300, seed=4)
    again = simulate(locs, [1.0, 1.0, 1.0], start=start, days=14, orders_per_hour=300, seed=4)
    assert np.array_equal(week.counts, again.counts)
    assert week.counts.shape == (len(week.cells), 14 * 1440)
    assert abs(week.counts.sum() / (14 * 24) - 300) < 300 * 0.15  # the week's mean, rain adds
    assert week.conditions.events and week.conditions.weather
    assert len(week.cells) == 3  # one restaurant a cell, equally popular: equal shares
    for e in week.conditions.events:
        i = week.cells.index(e.cell)
        m = int((e.start_ts - week.start_ts) // 60) + 30
        calm = [j for j in range(3) if all(
            o.cell != week.cells[j] or not (o.start_ts <= week.start_ts + 60 * m <= o.end_ts + 3600)
            for o in week.conditions.events)]  # fmt: skip
        for j in calm:  # rain falls on every cell alike: only the event sets them apart
            assert week.rates[i, m] / week.rates[j, m] == pytest.approx(e.demand_factor)
