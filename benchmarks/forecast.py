"""Demand forecast: per-cell error of the 30-minute forecast on a simulated week.

Three weeks of orders per geohash-5 cell are drawn from the simulator's own demand
model (``foodmesh.sim.demand_week``: the daily and weekly curve, the city's
restaurants and their popularity, rain spells and announced events). Pricing's
forecaster (``servers/pricing/forecast.py``) learns from the first two weeks and
forecasts every five minutes of the third, each forecast from the counts before its
own time only. Figures, over the third week:

- **WAPE** (Σ|actual − forecast| / Σ actual over every cell and forecast time) of
  the 30- and 60-minute forecasts, against the baseline "same half hour last week"
  on the same rows. Target: the 30-minute WAPE at least 20 % below the baseline's
  (ratio ≤ 0.8);
- the median over cells of each cell's own WAPE ratio (no busy cell hides the rest);
- the 80 % interval's coverage (the share of actual counts inside it);
- the training time.

    python benchmarks/forecast.py                 # ~1 min on 2 cores
    python benchmarks/forecast.py --quick --json  # fewer restaurants, same weeks
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    Progress,
    emit_json,
    machine,
    now_iso,
    parser,
    print_table,
    ratio,
)
from foodmesh.sim.city import build_city  # noqa: E402
from foodmesh.sim.demand import TIME_ZONE  # noqa: E402
from foodmesh.sim.demand_week import CellDemand, simulate  # noqa: E402
from servers.pricing import surge as surge_math  # noqa: E402
from servers.pricing.forecast import (  # noqa: E402
    BUCKET_S,
    FEATURES,
    HORIZONS,
    CountSeries,
    KnownConditions,
    feature_matrix,
    train,
    wape,
)

_DAY = 86400 // BUCKET_S


def _buckets(a: Any) -> Any:
    per = BUCKET_S // 60
    n = a.shape[1] // per
    return a[:, : n * per].reshape(a.shape[0], n, per).sum(axis=2)


def series_of(week: CellDemand) -> CountSeries:
    """The simulated minutes summed into the forecaster's five-minute buckets."""
    return CountSeries(int(week.start_ts // BUCKET_S), week.cells, _buckets(week.counts))


def true_means(week: CellDemand, i: int, ks: Any, horizon: int) -> Any:
    """The expected count of each target half hour (the rate the draws came from)."""
    cum = np.concatenate([[0.0], np.cumsum(_buckets(week.rates)[i])])
    lo = ks + (horizon - 30) // 5
    return cum[lo + 6] - cum[lo]


def conditions_of(week: CellDemand) -> Any:
    """What Pricing would know at each instant: every event (announced), the weather now."""
    events = tuple(
        surge_math.Event(e.event_id, e.lat, e.lon, e.attendance, e.start_ts, e.end_ts)
        for e in week.conditions.events
    )

    def at(ts: float) -> KnownConditions:
        weather = tuple(surge_math.Weather(w.area, w.kind) for w in week.conditions.weather_at(ts))
        return KnownConditions(events=events, weather=weather)

    return at


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--orders-per-hour", type=float, default=400.0,
                    help="the city's mean orders an hour (the week's mean)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=28, help="days simulated; the last 7 are tested")
    args = ap.parse_args(argv)
    restaurants = 150 if args.quick else 500
    t0 = time.perf_counter()
    city = build_city(seed=args.seed, restaurants=restaurants, drivers=0, customers=1)
    # A Monday, midnight in the city: the weeks line up with the curve's weekdays.
    start = dt.datetime(2026, 11, 2, tzinfo=ZoneInfo(TIME_ZONE))
    rs = city.restaurants
    week = simulate(
        [r.location for r in rs],
        [r.popularity for r in rs],
        start=start,
        days=args.days,
        orders_per_hour=args.orders_per_hour,
        seed=args.seed,
    )
    series = series_of(week)
    at = conditions_of(week)
    gen_s = time.perf_counter() - t0
    c = week.conditions
    print(f"  simulated {args.days} days: {int(week.counts.sum()):,} orders in "
          f"{len(week.cells)} cells, {len(c.events)} events, {len(c.weather)} rain spells "
          f"({gen_s:.1f}s)", file=sys.stderr)  # fmt: skip

    test_from = series.buckets - 7 * _DAY
    t1 = time.perf_counter()
    model = train(series, until=test_from, conditions_at=at, tz=TIME_ZONE)
    train_s = time.perf_counter() - t1
    print(f"  trained on {model.rows:,} rows in {train_s:.1f}s ({model.kind}; held-out WAPE "
          f"{model.validation_wape:.3f} vs last week {model.baseline_wape:.3f})",
          file=sys.stderr)  # fmt: skip

    results: dict[int, dict[str, Any]] = {}
    ks = np.arange(test_from, series.buckets - 2 * 6 + 1, dtype=np.int64)
    progress = Progress("forecasting the test week", total=len(HORIZONS) * len(series.cells))
    base_col = FEATURES.index("last_week_target")
    for h in HORIZONS:
        ys, ours, base, lows, highs, per_cell, truth = [], [], [], [], [], [], []
        for i in range(len(series.cells)):
            y = series.target(i, ks, h)
            x = feature_matrix(series, i, ks, h, conditions_at=at, tz=TIME_ZONE)
            mu = model.mean(x)
            lo, hi = model.interval(mu)
            ys.append(y)
            truth.append(true_means(week, i, ks, h))
            ours.append(mu)
            base.append(x[:, base_col])
            lows.append(lo)
            highs.append(hi)
            b = wape(y, x[:, base_col])
            per_cell.append(wape(y, mu) / b if b > 0 else np.nan)
            progress.add()
        # The first hour of each rain spell (every cell) and event (its cell) of the test
        # week: the forecast over the true rate of the target half hours starting in it.
        starts = (series.start + ks + (h - 30) // 5) * BUCKET_S
        first_hour: dict[str, list[tuple[float, float]]] = {"rain": [], "event": []}
        for kind, spans in (("rain", [(None, sp.start_ts) for sp in c.weather]),
                            ("event", [(e.cell, e.start_ts) for e in c.events])):  # fmt: skip
            for cell, t0 in spans:
                sel = (starts >= t0) & (starts < t0 + 3600)
                for i in range(len(series.cells)) if cell is None else [week.cells.index(cell)]:
                    first_hour[kind].append((ours[i][sel].sum(), truth[i][sel].sum()))
        onset = {kind: round(float(sum(a for a, _ in v) / sum(b for _, b in v)), 3)
                 if v and sum(b for _, b in v) > 0 else None
                 for kind, v in first_hour.items()}  # fmt: skip
        y_all, mu_all, b_all = np.concatenate(ys), np.concatenate(ours), np.concatenate(base)
        lo_all, hi_all = np.concatenate(lows), np.concatenate(highs)
        results[h] = {
            "wape": round(wape(y_all, mu_all), 4),
            "baseline_wape": round(wape(y_all, b_all), 4),
            # The floor: the true expected counts forecast (Poisson noise is all that is left).
            "true_rate_wape": round(wape(y_all, np.concatenate(truth)), 4),
            "cell_ratio_median": round(float(np.nanmedian(per_cell)), 3),
            "coverage_80": round(float(((y_all >= lo_all) & (y_all <= hi_all)).mean()), 3),
            "mean_orders": round(float(y_all.mean()), 2),
            "rows": len(y_all),
            "rain_onset_ratio": onset["rain"],
            "event_onset_ratio": onset["event"],
        }
    progress.finish()
    r30, r60 = results[30], results[60]
    target_ok = (ratio(r30["wape"], r30["baseline_wape"]) or 1.0) <= 0.8
    if args.json:
        emit_json({
            "benchmark": "forecast",
            "date": now_iso(),
            "machine": machine(),
            "config": {"orders_per_hour": args.orders_per_hour, "days": args.days,
                       "seed": args.seed, "restaurants": restaurants, "cells": len(series.cells),
                       "quick": args.quick},
            "model": {"kind": model.kind, "rows": model.rows, "train_s": round(train_s, 2),
                      "dispersion": round(model.dispersion, 4),
                      "heldout_wape": round(model.validation_wape, 4)},
            "raw": {"wape_30": r30["baseline_wape"], "wape_60": r60["baseline_wape"]},
            "ours": {"wape_30": r30["wape"], "wape_60": r60["wape"],
                     "coverage_80_30": r30["coverage_80"], "coverage_80_60": r60["coverage_80"],
                     "cell_ratio_median_30": r30["cell_ratio_median"],
                     "true_rate_wape_30": r30["true_rate_wape"],
                     "rain_onset_ratio_30": r30["rain_onset_ratio"],
                     "event_onset_ratio_30": r30["event_onset_ratio"]},
            "ratio": {"wape_30": ratio(r30["wape"], r30["baseline_wape"]),
                      "wape_60": ratio(r60["wape"], r60["baseline_wape"])},
            "targets": {"wape_30_at_least_20pct_below_last_week": target_ok},
        })  # fmt: skip
    else:
        print_table(
            f"Demand forecast, test week ({len(series.cells)} cells, "
            f"{args.orders_per_hour:g} orders/h)",
            ["horizon", "WAPE ours", "WAPE last week", "ratio", "WAPE true rate",
             "median cell ratio", "80% coverage", "mean orders / 30 min"],
            [[f"{h} min", results[h]["wape"], results[h]["baseline_wape"],
              ratio(results[h]["wape"], results[h]["baseline_wape"]),
              results[h]["true_rate_wape"], results[h]["cell_ratio_median"],
              results[h]["coverage_80"], results[h]["mean_orders"]]
             for h in HORIZONS],
        )  # fmt: skip
        print(f"\n30-minute WAPE {'≥' if target_ok else '<'} 20 % below same-time-last-week: "
              f"{'met' if target_ok else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
