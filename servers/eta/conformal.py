"""Split-conformal 80 % intervals per stage: residual quantiles of recent deliveries.

The quantile models' own 10-90 spreads are as good as the world they were trained
on; the live city drifts from it. So the interval served at each stage of an order
is the estimate plus the 10th and 90th percentile of what that stage's estimates
missed by (actual - estimated, minutes) on deliveries the trees never saw: the
training's calibration slice, then each retrain's held-out deliveries. With ``n``
residuals the bounds are the ``floor(0.1 (n + 1))``-th and ``ceil(0.9 (n + 1))``-th
smallest (split conformal's finite-sample rank), so a new delivery from the same
world lands inside with probability of at least 80 %, and not much more.

At placement the band is *scaled* (normalised split conformal): each miss is divided by
the estimate's own 80 % spread (the quantile parts' width: wide for a kitchen at its rush
with few drivers free, narrow in a calm, well-staffed city), and the interval served is
the estimate plus those quantiles times the order's own spread. One absolute band for
every order covered 96 % of a well-staffed live city's orders: its width came from the
history's rush hours with few drivers. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_RESIDUALS",
    "MIN_SPREAD_MIN",
    "STAGES",
    "Residuals",
    "bands_from_doc",
    "residuals",
    "stage_of",
    "widen",
]

#: The stages an interval is calibrated for: before a driver is known (placement and
#: confirmation), with a driver on the way to the kitchen, with the food on board.
STAGES = ("placement", "assignment", "pickup")
#: Fewer residuals than this calibrate nothing (the model's own spread stays).
MIN_RESIDUALS = 20
COVERAGE = 0.8
#: A scaled band's spreads are taken as at least this, minutes (a near-certain estimate
#: would otherwise get a zero-width interval).
MIN_SPREAD_MIN = 1.0


@dataclass(frozen=True, slots=True)
class Residuals:
    """The 80 % band of a stage's misses (actual - estimated), and how many made it: in
    minutes, or with ``scaled`` in units of each estimate's own spread."""

    low: float
    high: float
    n: int
    scaled: bool = False

    def as_list(self) -> list[float]:
        return [self.low, self.high, float(self.n), *([1.0] if self.scaled else [])]

    @staticmethod
    def from_list(v: Sequence[float]) -> Residuals:
        if len(v) not in (3, 4) or (len(v) == 4 and v[3] not in (0.0, 1.0)):
            raise ValueError(f"residual band {v!r} is not [low, high, n] or [low, high, n, 1]")
        out = Residuals(float(v[0]), float(v[1]), int(v[2]), len(v) == 4 and v[3] == 1.0)
        if not (math.isfinite(out.low) and math.isfinite(out.high) and out.low <= out.high):
            raise ValueError(f"residual band {v!r} is not a finite low <= high")
        return out


def residuals(
    actual: npt.ArrayLike,
    estimated: npt.ArrayLike,
    *,
    spread: npt.ArrayLike | None = None,
    coverage: float = COVERAGE,
) -> Residuals | None:
    """The conformal band of ``actual - estimated`` (NaNs dropped); None when too few.

    With ``spread`` (each estimate's own 80 % width, minutes) the band is scaled: of the
    misses divided by their spreads.
    """
    r = np.asarray(actual, dtype=np.float64) - np.asarray(estimated, dtype=np.float64)
    if spread is not None:
        r = r / np.maximum(np.asarray(spread, dtype=np.float64), MIN_SPREAD_MIN)
    r = np.sort(r[np.isfinite(r)])
    n = len(r)
    if n < MIN_RESIDUALS:
        return None
    tail = (1.0 - coverage) / 2.0
    k_lo = max(1, math.floor(tail * (n + 1)))
    k_hi = min(n, math.ceil((1.0 - tail) * (n + 1)))
    return Residuals(round(float(r[k_lo - 1]), 4), round(float(r[k_hi - 1]), 4), n,
                     spread is not None)  # fmt: skip


def stage_of(*, picked_up: bool, driver_on_the_way: bool) -> str:
    """The calibrated stage an estimate is made at."""
    if picked_up:
        return "pickup"
    return "assignment" if driver_on_the_way else "placement"


def widen(
    total: npt.ArrayLike, band: Residuals, *, spread: npt.ArrayLike = 0.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The 80 % interval around ``total`` (minutes from now) from a stage's band; never below 0.

    A scaled band multiplies by ``spread``, the estimate's own 80 % width in minutes.
    """
    t = np.asarray(total, dtype=np.float64)
    k = np.maximum(np.asarray(spread, dtype=np.float64), MIN_SPREAD_MIN) if band.scaled else 1.0
    return np.maximum(0.0, t + band.low * k), np.maximum(0.0, t + band.high * k)


def bands_from_doc(doc: Mapping[str, Sequence[float]]) -> dict[str, Residuals]:
    """A model file's ``stage_residuals`` (unknown stages refused)."""
    out = {}
    for stage, v in doc.items():
        if stage not in STAGES:
            raise ValueError(f"stage_residuals names an unknown stage {stage!r}")
        out[stage] = Residuals.from_list(v)
    return out
