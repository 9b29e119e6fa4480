"""The live demand forecast: Pricing's order history in memory, a model retrained on it.

The history is ``pricing.demand_counts`` (orders per cell per five-minute bucket,
counted from the placed events) and ``pricing.condition_history`` (what events and
weather were known when). Every ``refresh_s`` the buckets of the last quarter hour
are read again (a bucket fills while it is current; events may come late) into one
array over the window (written in place) and the series is rebuilt from it; at
start and every ``retrain_s`` a model is trained on it in a worker thread and swapped
in if it trained (a history too small to train on keeps the fallback). The pure model
lives in ``forecast.py``; this module is its I/O edge.

A city launches with no orders of its own: ``pricing.demand_prior`` holds a synthetic
history (the seed writes it from the simulator's model of the city's demand,
``ImportDemandPrior``). A prior bucket fills the series only before the first real
bucket, so the city's own counts replace it by time window as they arrive and it
ages out of the window like any history; a new import retrains at once, so a fresh
platform serves a trained model within a refresh of being seeded.

All replicas read the same tables, so all forecast alike.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from foodmesh.core.tasks import stop_tasks
from servers.pricing import forecast as fc
from servers.pricing import prior as pr
from servers.pricing.store import PricingStore

__all__ = ["DemandForecaster"]

_log = logging.getLogger("foodmesh.pricing.forecast")


class DemandForecaster:
    """Forecasts of any cell from the history in memory; a background refresh and retrain."""

    def __init__(
        self,
        store: PricingStore,
        *,
        tz: str = "UTC",
        days: float = 29.0,
        refresh_s: float = 30.0,
        retrain_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        prior_template: Path | None = None,
        prior_days: int = 14,
    ) -> None:
        self.store = store
        self.tz = tz
        self.days = days
        self.refresh_s = refresh_s
        self.retrain_s = retrain_s
        self.clock = clock
        self.prior_template = prior_template
        self.prior_days = prior_days
        self.model = fc.ForecastModel.fallback(tz=tz)
        self._grid = _Grid(int(days * 86400 // fc.BUCKET_S))
        self._timeline: list[tuple[float, fc.KnownConditions]] = []
        self._series = fc.CountSeries(0, (), np.zeros((0, 0), dtype=np.int64))
        self._cache: dict[tuple[str, int], list[fc.Forecast]] = {}
        self._loaded_to: float | None = None
        #: The prior as a dense block: first bucket, cells, counts (cells, buckets).
        self._prior = fc.CountSeries(0, (), np.zeros((0, 0), dtype=np.int64))
        self._prior_at: dt.datetime | None = None
        self._prior_new = False
        self.prior_share = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- history ---------------------------------------------------------------------

    def conditions_at(self, ts: float) -> fc.KnownConditions:
        """The conditions in force at ``ts`` (none before the first version)."""
        i = bisect.bisect_right(self._timeline, ts, key=lambda v: v[0]) - 1
        return self._timeline[i][1] if i >= 0 else fc.KnownConditions()

    async def refresh(self) -> None:
        """Reads new and recent buckets and the condition versions; rebuilds the series."""
        now = self.clock()
        since = now - self.days * 86400 if self._loaded_to is None else self._loaded_to - 900
        rows = await self.store.demand_counts(dt.datetime.fromtimestamp(since, dt.UTC))
        self._grid.put(rows, end=int(now // fc.BUCKET_S))
        timeline = await self.store.condition_timeline(
            dt.datetime.fromtimestamp(now - self.days * 86400, dt.UTC)
        )
        self._timeline = [(at, fc.KnownConditions(tuple(ev), tuple(we)))
                          for at, ev, we in timeline]  # fmt: skip
        prior, self._prior_at = await self.store.demand_prior(
            dt.datetime.fromtimestamp(now - self.days * 86400, dt.UTC), self._prior_at
        )
        if (
            not prior
            and self._prior_at is None
            and self._grid.first is None
            and self.prior_template
        ):
            # A platform starting with no history and nobody to seed one: the shipped weeks.
            await self._lay_template(self.prior_template, now)
            prior, self._prior_at = await self.store.demand_prior(
                dt.datetime.fromtimestamp(now - self.days * 86400, dt.UTC), None
            )
        if prior:
            self._prior = _dense(prior)
            self._prior_new = True
        self._loaded_to = now
        self._rebuild(now)

    async def _lay_template(self, path: Path, now: float) -> None:
        template = await asyncio.to_thread(pr.load_template, path)
        laid = await asyncio.to_thread(pr.lay, template, end_bucket=int(now // fc.BUCKET_S),
                                       days=self.prior_days)  # fmt: skip
        start = dt.datetime.fromtimestamp(laid.start * fc.BUCKET_S, dt.UTC)
        for cell, row in zip(laid.cells, laid.counts, strict=True):
            await self.store.import_prior(cell, start, row.tolist())
        _log.info("demand prior laid from %s: %d days of %d cells, %d orders", path.name,
                  self.prior_days, len(laid.cells), int(laid.counts.sum()))  # fmt: skip

    def _rebuild(self, now: float) -> None:
        end = int(now // fc.BUCKET_S)  # the current bucket is not complete: left out
        start = end - int(self.days * 86400 // fc.BUCKET_S)
        prior, grid = self._prior, self._grid
        # The prior fills what comes before the first real bucket (all of it before any).
        real_from = grid.first if grid.first is not None else end
        # The history begins with the first bucket known: before it nothing was counted
        # (NaN to the features), not zero orders.
        first = min(real_from, prior.start if prior.cells else end)
        start = min(max(start, first), end)
        cells = (*grid.cells, *(c for c in prior.cells if c not in grid.index))
        index = {c: i for i, c in enumerate(cells)}
        counts = np.zeros((len(cells), end - start), dtype=np.int64)
        lo, hi = max(start, prior.start), min(real_from, end, prior.start + prior.buckets)
        if hi > lo:
            rows = [index[c] for c in prior.cells]
            part = prior.counts[:, lo - prior.start : hi - prior.start]
            counts[rows, lo - start : hi - start] = part
        synthetic = int(counts.sum())
        counts[: len(grid.cells)] += grid.window(start, end)
        total = int(counts.sum())
        self.prior_share = synthetic / total if total else 0.0
        self._series = fc.CountSeries(start, cells, counts)
        self._cache.clear()

    @property
    def series(self) -> fc.CountSeries:
        return self._series

    # -- model ------------------------------------------------------------------------

    async def retrain(self) -> fc.ForecastModel:
        """Trains on the history now in memory (in a thread); keeps the fallback if too little."""
        series, at = self._series, self.conditions_at
        model = await asyncio.to_thread(fc.train, series, conditions_at=at, tz=self.tz,
                                        nthread=1, clock=self.clock)  # fmt: skip
        if model.booster is not None:
            model = dataclasses.replace(model, prior_share=self.prior_share)
            self.model = model
            self._cache.clear()
            _log.info("forecast model trained on %d rows of %d cells: held-out WAPE %.3f "
                      "(same time last week %.3f), 80%% interval coverage %.2f", model.rows,
                      model.cells, model.validation_wape, model.baseline_wape,
                      model.coverage)  # fmt: skip
            if model.prior_share:
                _log.info("forecast model: %.0f%% of its history's orders from the synthetic "
                          "prior", 100 * model.prior_share)  # fmt: skip
        return model

    def forecast(self, cell: str, *, now: float | None = None) -> list[fc.Forecast]:
        """The 30- and 60-minute forecasts of ``cell`` (cached per five-minute bucket)."""
        now = self.clock() if now is None else now
        # The series ends at the last complete bucket it was built with: forecast from there.
        end_ts = (self._series.start + self._series.buckets) * fc.BUCKET_S
        at = min(now, end_ts) if self._series.buckets else now
        key = (cell, int(at // fc.BUCKET_S))
        hit = self._cache.get(key)
        if hit is None:
            if not self._series.buckets:
                empty = fc.CountSeries(key[1], (), np.zeros((0, 0), dtype=np.int64))
                hit = self.model.forecast(empty, cell, now=at)
            else:
                hit = self.model.forecast(self._series, cell, now=at,
                                          conditions_at=self.conditions_at)  # fmt: skip
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def anticipated(self, cell: str, *, window_s: float, now: float | None = None) -> int:
        """Orders the next half hour's forecast expects in a demand window of ``window_s``.

        0 until a model is trained: the fallback only repeats the recent past, which as a
        rush ends would hold surge up instead of moving it early.
        """
        if self.model.booster is None:
            return 0
        f30 = self.forecast(cell, now=now)[0]
        return max(0, math.floor(f30.expected * window_s / 1800.0 + 0.5))

    def recent(self, cell: str, *, buckets: int = fc.WINDOW) -> int:
        """Orders of the cell in the last ``buckets`` complete buckets."""
        i = self._series.index(cell)
        if i is None:
            return 0
        return int(self._series.counts[i, -buckets:].sum())

    def busiest(self, n: int) -> list[str]:
        """The ``n`` cells with the most orders in the last hour (then the last day)."""
        s = self._series
        if not s.buckets:
            return []
        hour = s.counts[:, -12:].sum(axis=1)
        day = s.counts[:, -288:].sum(axis=1)
        order = sorted(range(len(s.cells)), key=lambda i: (-hour[i], -day[i], s.cells[i]))
        return [s.cells[i] for i in order[:n] if day[i] > 0]

    # -- background --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pricing-forecast")

    async def stop(self) -> None:
        await stop_tasks([self._task])

    async def _run(self) -> None:
        last_train = -math.inf
        while True:
            try:
                await self.refresh()
                if self._prior_new or self.clock() - last_train >= self.retrain_s:
                    last_train = self.clock()
                    self._prior_new = False
                    await self.retrain()
            except Exception as exc:  # PostgreSQL away (or not migrated yet): next pass
                _log.debug("forecast refresh failed: %s", exc)
            await asyncio.sleep(self.refresh_s)


def _dense(rows: list[tuple[str, float, int]]) -> fc.CountSeries:
    """``(cell, bucket start ts, orders)`` rows as one block from the earliest bucket."""
    cells = tuple(sorted({c for c, _, _ in rows}))
    index = {c: i for i, c in enumerate(cells)}
    b = np.array([int(ts // fc.BUCKET_S) for _, ts, _ in rows], dtype=np.int64)
    start = int(b.min())
    counts = np.zeros((len(cells), int(b.max()) - start + 1), dtype=np.int64)
    counts[[index[c] for c, _, _ in rows], b - start] = [n for _, _, n in rows]
    return fc.CountSeries(start, cells, counts)


class _Grid:
    """Real counts per cell (rows, in the order first seen) per bucket, over a moving window.

    One array written in place: a refresh costs the rows it reads, not the history.
    """

    def __init__(self, width: int, *, slack: int = 288) -> None:
        self.width = width
        self.slack = slack
        self.cells: list[str] = []
        self.index: dict[str, int] = {}
        self.start = 0
        self.counts = np.zeros((0, 0), dtype=np.int64)
        #: The earliest bucket ever counted (None before the first).
        self.first: int | None = None

    def put(self, rows: list[tuple[str, float, int]], *, end: int) -> None:
        """Writes ``(cell, bucket start ts, orders)`` rows; the window ends at bucket ``end``."""
        self._slide(end)
        if not rows:
            return
        names = [r[0] for r in rows]
        for c in dict.fromkeys(names):
            if c not in self.index:
                self.index[c] = len(self.cells)
                self.cells.append(c)
        if len(self.cells) > self.counts.shape[0]:
            grown = np.zeros((len(self.cells), self.counts.shape[1]), dtype=np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown
        i = np.fromiter((self.index[c] for c in names), dtype=np.int64, count=len(rows))
        b = np.fromiter((int(r[1] // fc.BUCKET_S) for r in rows), dtype=np.int64, count=len(rows))
        n = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        low = int(b.min())
        self.first = low if self.first is None else min(self.first, low)
        ok = (b >= self.start) & (b < self.start + self.counts.shape[1])
        self.counts[i[ok], b[ok] - self.start] = n[ok]

    def _slide(self, end: int) -> None:
        lo = end - self.width
        cols = self.counts.shape[1]
        if cols and self.start <= lo and end < self.start + cols:
            return
        moved = np.zeros((len(self.cells), self.width + self.slack), dtype=np.int64)
        a, b = max(lo, self.start), min(self.start + cols, lo + moved.shape[1])
        if b > a:
            moved[:, a - lo : b - lo] = self.counts[:, a - self.start : b - self.start]
        self.start, self.counts = lo, moved

    def window(self, lo: int, hi: int) -> npt.NDArray[np.int64]:
        """The counts of buckets ``[lo, hi)`` (zero outside what is held)."""
        out = np.zeros((len(self.cells), hi - lo), dtype=np.int64)
        a, b = max(lo, self.start), min(hi, self.start + self.counts.shape[1])
        if b > a:
            out[:, a - lo : b - lo] = self.counts[:, a - self.start : b - self.start]
        return out
