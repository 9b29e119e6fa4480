"""The live demand forecast: Pricing's order history in memory, a model retrained on it.

The history is ``pricing.demand_counts`` (orders per cell per five-minute bucket,
counted from the placed events) and ``pricing.condition_history`` (what events and
weather were known when). Every ``refresh_s`` the buckets of the last quarter hour
are read again (a bucket fills while it is current; events may come late) and the
series is rebuilt; at start and every ``retrain_s`` a model is trained on it in a
worker thread and swapped in if it trained (a history too small to train on keeps
the fallback). The pure model lives in
``forecast.py``; this module is its I/O edge.

All replicas read the same tables, so all forecast alike.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import math
import time
from collections.abc import Callable

import numpy as np

from foodmesh.core.tasks import stop_tasks
from servers.pricing import forecast as fc
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
    ) -> None:
        self.store = store
        self.tz = tz
        self.days = days
        self.refresh_s = refresh_s
        self.retrain_s = retrain_s
        self.clock = clock
        self.model = fc.ForecastModel.fallback(tz=tz)
        self._counts: dict[tuple[str, int], int] = {}
        self._timeline: list[tuple[float, fc.KnownConditions]] = []
        self._series = fc.CountSeries(0, (), np.zeros((0, 0), dtype=np.int64))
        self._cache: dict[tuple[str, int], list[fc.Forecast]] = {}
        self._loaded_to: float | None = None
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
        for cell, ts, n in rows:
            self._counts[(cell, int(ts // fc.BUCKET_S))] = n
        timeline = await self.store.condition_timeline(
            dt.datetime.fromtimestamp(now - self.days * 86400, dt.UTC)
        )
        self._timeline = [(at, fc.KnownConditions(tuple(ev), tuple(we)))
                          for at, ev, we in timeline]  # fmt: skip
        self._loaded_to = now
        self._rebuild(now)

    def _rebuild(self, now: float) -> None:
        end = int(now // fc.BUCKET_S)  # the current bucket is not complete: left out
        start = end - int(self.days * 86400 // fc.BUCKET_S)
        self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
        cells = tuple(sorted({c for c, _ in self._counts}))
        index = {c: i for i, c in enumerate(cells)}
        counts = np.zeros((len(cells), end - start), dtype=np.int64)
        for (c, b), n in self._counts.items():
            if b < end:
                counts[index[c], b - start] = n
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
            self.model = model
            self._cache.clear()
            _log.info("forecast model trained on %d rows of %d cells: held-out WAPE %.3f "
                      "(same time last week %.3f), 80%% interval coverage %.2f", model.rows,
                      model.cells, model.validation_wape, model.baseline_wape,
                      model.coverage)  # fmt: skip
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
                if self.clock() - last_train >= self.retrain_s:
                    last_train = self.clock()
                    await self.retrain()
            except Exception as exc:  # PostgreSQL away (or not migrated yet): next pass
                _log.debug("forecast refresh failed: %s", exc)
            await asyncio.sleep(self.refresh_s)
