"""The demand prior an image ships: weeks of a city's demand, laid over the days before now. Pure.

Where no seed writes a prior (``ImportDemandPrior``), as in Kubernetes, Pricing can
start from a **week template** shipped with it (``data/demand_prior.npz``, written by
``foodmesh seed --write-prior-template`` from the simulator's model of the generated
city): orders per cell per five-minute bucket over whole weeks from a Monday midnight
in the city's time zone. Laid over the ``days`` before now, each bucket takes the
template's bucket at the same local time of the week (its weeks in turn), so the
forecast has a history whose days and hours line up with the calendar.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from servers.pricing.forecast import BUCKET_S, CountSeries

__all__ = ["BUILTIN", "WEEK", "WeekTemplate", "lay", "load_template"]

#: Buckets in a week.
WEEK = 7 * 86400 // BUCKET_S
#: The template of the generated city (seed 7, 500 restaurants, 1,200 orders an hour).
BUILTIN = Path(__file__).parent / "data" / "demand_prior.npz"


@dataclass(frozen=True, slots=True)
class WeekTemplate:
    """Orders per cell per bucket over whole weeks from a Monday 00:00 in ``time_zone``."""

    cells: tuple[str, ...]
    counts: npt.NDArray[np.int64]  # (cells, weeks * WEEK)
    time_zone: str

    def __post_init__(self) -> None:
        if self.counts.ndim != 2 or self.counts.shape[0] != len(self.cells):
            raise ValueError("counts must be (cells, buckets)")
        if not self.counts.shape[1] or self.counts.shape[1] % WEEK:
            raise ValueError("counts must cover whole weeks")


def load_template(path: Path) -> WeekTemplate:
    """Reads a template written by ``foodmesh.sim.demand_prior.save_template``."""
    with np.load(path, allow_pickle=False) as z:
        return WeekTemplate(cells=tuple(str(c) for c in z["cells"]),
                            counts=z["counts"].astype(np.int64),
                            time_zone=str(z["time_zone"]))  # fmt: skip


def lay(template: WeekTemplate, *, end_bucket: int, days: int) -> CountSeries:
    """The ``days`` of buckets before ``end_bucket`` (absolute), from the template."""
    if days < 1:
        raise ValueError("days must be at least 1")
    n = days * 86400 // BUCKET_S
    start = end_bucket - n
    tz = ZoneInfo(template.time_zone)
    weeks = template.counts.shape[1] // WEEK
    idx = np.empty(n, dtype=np.int64)
    for j in range(n):
        b = start + j
        local = dt.datetime.fromtimestamp(b * BUCKET_S, tz)
        phase = (local.weekday() * 1440 + local.hour * 60 + local.minute) * 60 // BUCKET_S
        idx[j] = (b // WEEK) % weeks * WEEK + phase
    return CountSeries(start, template.cells, template.counts[:, idx])
