"""A city's demand prior: weeks of synthetic orders per cell, written into Pricing at launch.

A city that has just launched has no order history, so the demand forecast would
serve its fallback for hours. Real platforms launch a city with a model trained on
comparable cities; ours draws the weeks before launch from the simulator's own model
of the city's demand (:func:`foodmesh.sim.demand_week.simulate`: the curve the live
simulator draws from, each cell's share of the restaurants' popularity), without rain
or events, whose days are not known. Pricing keeps it apart from the real counts
(``ImportDemandPrior``) and uses a prior bucket only before the first real one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from clients import ClientOptions, PricingClient
from foodmesh.core.progress import Progress
from foodmesh.sim.city import City
from foodmesh.sim.demand import TIME_ZONE
from foodmesh.sim.demand_week import simulate
from foodmesh.v1 import pricing_pb2

__all__ = [
    "BUCKET_S",
    "DemandPrior",
    "demand_prior",
    "save_template",
    "seed_demand_prior",
    "week_template",
]

_log = logging.getLogger("foodmesh.sim.demand_prior")

#: Pricing's demand bucket.
BUCKET_S = 300


@dataclass(frozen=True, slots=True)
class DemandPrior:
    """Orders per cell per five-minute bucket from ``start`` (aware, a bucket's start)."""

    start: dt.datetime
    cells: tuple[str, ...]
    counts: npt.NDArray[np.int64]  # (cells, buckets)


def demand_prior(
    city: City,
    *,
    now: dt.datetime,
    days: int = 14,
    orders_per_hour: float = 200.0,
    seed: int = 7,
    time_zone: str = TIME_ZONE,
) -> DemandPrior:
    """The ``days`` before ``now``'s bucket, drawn from the city's demand model. Pure."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError("days must be at least 1")
    end = int(now.timestamp() // BUCKET_S) * BUCKET_S
    start = dt.datetime.fromtimestamp(end - days * 86400, dt.UTC)
    rs = city.restaurants
    week = simulate([r.location for r in rs], [r.popularity for r in rs], start=start,
                    days=days, orders_per_hour=orders_per_hour, seed=seed,
                    time_zone=time_zone, conditions=False)  # fmt: skip
    per = BUCKET_S // 60
    counts = week.counts.reshape(len(week.cells), -1, per).sum(axis=2)
    return DemandPrior(start=start, cells=week.cells, counts=counts.astype(np.int64))


async def seed_demand_prior(
    prior: DemandPrior, *, pricing_target: str, options: ClientOptions
) -> int:
    """Writes ``prior`` into Pricing, one cell a call; the buckets stored."""
    pricing = PricingClient(pricing_target, options=options)
    progress = Progress("demand prior", total=len(prior.cells))
    stored = 0
    try:
        for cell, row in zip(prior.cells, prior.counts, strict=True):
            req = pricing_pb2.ImportDemandPriorRequest(cell=cell, orders=row.tolist())
            req.start_time.FromDatetime(prior.start)
            stored += (await pricing.import_demand_prior(req)).buckets
            progress.add()
    finally:
        progress.finish()
        await pricing.close()
    _log.info("demand prior: %d cells, %d orders over %d buckets", len(prior.cells),
              int(prior.counts.sum()), prior.counts.shape[1])  # fmt: skip
    return stored


def week_template(
    city: City,
    *,
    weeks: int = 2,
    orders_per_hour: float = 200.0,
    seed: int = 7,
    time_zone: str = TIME_ZONE,
) -> DemandPrior:
    """``weeks`` of the city's demand from a Monday midnight in ``time_zone``: what an image
    ships so Pricing can lay a prior over the weeks before any day it starts on. Pure."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    monday = dt.datetime(2026, 11, 2, tzinfo=ZoneInfo(time_zone))  # a Monday without DST
    rs = city.restaurants
    week = simulate([r.location for r in rs], [r.popularity for r in rs], start=monday,
                    days=7 * weeks, orders_per_hour=orders_per_hour, seed=seed,
                    time_zone=time_zone, conditions=False)  # fmt: skip
    per = BUCKET_S // 60
    counts = week.counts.reshape(len(week.cells), -1, per).sum(axis=2)
    return DemandPrior(start=monday, cells=week.cells, counts=counts.astype(np.int64))


def save_template(prior: DemandPrior, path: Path, *, time_zone: str = TIME_ZONE) -> None:
    """Writes a week template as Pricing reads it (``servers/pricing/prior.py``)."""
    np.savez_compressed(path, cells=np.array(prior.cells), counts=prior.counts.astype(np.uint16),
                        time_zone=np.array(time_zone))  # fmt: skip
