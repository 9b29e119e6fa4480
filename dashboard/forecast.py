"""The dashboard's demand panel: Pricing's forecast beside the demand that came. Pure.

Each poll of ``ForecastDemand`` gives, per busy cell, the orders of the last half hour
and the forecasts of the next two. The board remembers the 30-minute forecast made
for each half hour, so when that half hour is over the panel shows what was forecast
for it beside what came, and a short history of both per cell for a sparkline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from foodmesh.v1 import pricing_pb2

__all__ = ["ForecastBoard"]

_RISK = {pricing_pb2.SURGE_RISK_LOW: "low", pricing_pb2.SURGE_RISK_MEDIUM: "medium",
         pricing_pb2.SURGE_RISK_HIGH: "high"}  # fmt: skip
_WINDOW_S = 1800


@dataclass(slots=True)
class ForecastBoard:
    """Forecasts as polled, and per cell the forecast-vs-actual points of past half hours."""

    points: int = 24
    rows: list[list[Any]] = field(default_factory=list)
    model: str = ""
    #: (cell, window start) -> the 30-minute forecast made for that window.
    _made: dict[tuple[str, int], float] = field(default_factory=dict)
    _history: dict[str, deque[tuple[int, int, float | None]]] = field(default_factory=dict)

    def update(self, resp: pricing_pb2.ForecastDemandResponse) -> None:
        """Takes a poll's answer: new rows, and the actual of every half hour just ended."""
        now = resp.forecast_time.ToSeconds()
        rows = []
        for c in resp.cells:
            f30 = next((f for f in c.forecasts if f.horizon_minutes == 30), None)
            f60 = next((f for f in c.forecasts if f.horizon_minutes == 60), None)
            if f30 is not None:
                self._made.setdefault((c.cell, f30.start_time.ToSeconds()), f30.expected_orders)
            # the half hour that just ended: [now - 30 min, now), and what was forecast for it
            was = self._made.get((c.cell, now - _WINDOW_S))
            hist = self._history.setdefault(c.cell, deque(maxlen=self.points))
            if not hist or hist[-1][0] != now:
                hist.append((now, c.recent_orders, was))
            rows.append([
                c.cell, c.recent_orders, None if was is None else round(was, 1),
                *(_horizon(f30) if f30 is not None else [None, None, None]),
                round(f60.expected_orders, 1) if f60 is not None else None,
                c.expected_drivers,
                _RISK.get(f30.surge_risk, "") if f30 is not None else "",
                [[a, None if w is None else round(w, 1)] for _, a, w in hist],
            ])  # fmt: skip
        self.rows = rows
        self.model = resp.model.kind
        # forget forecasts of windows long gone
        self._made = {k: v for k, v in self._made.items() if k[1] >= now - 2 * _WINDOW_S}

    def picture(self) -> dict[str, Any]:
        """What the page draws: rows of ``[cell, actual, was forecast, next 30 (exp, lo, hi),
        next 60, drivers, risk, [[actual, was forecast], ...]]`` and the model's kind."""
        return {"model": self.model, "cells": self.rows}


def _horizon(f: pricing_pb2.DemandForecast) -> list[Any]:
    return [round(f.expected_orders, 1), f.low, f.high]
