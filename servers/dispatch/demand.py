"""Demand around the drop-offs, for the opportunity term of the score.

The Pricing service's ``ForecastDemand`` gives the orders expected per geohash-5
cell over the next half hour; ``Forecasts`` asks it for the cells of the pool's
drop-offs, keeps each answer ``ttl_s`` (60 s: the forecast moves per five-minute
bucket), and never makes matching wait: one short call per batch at most, and
after a failure none for ``backoff_s``. An order whose cell has no forecast (Pricing
absent, down, or the cell not answered) falls back to the pool itself: the other
pending orders around its drop-off.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from foodmesh.core.geo import geohash_encode
from foodmesh.v1 import pricing_pb2
from servers.dispatch.matching import PendingOrder

__all__ = ["ForecastPort", "Forecasts", "ForecastsConfig", "pool_demand"]

_log = logging.getLogger("foodmesh.dispatch")
#: ForecastDemand takes at most this many cells a call (its ``(max_items)``).
_MAX_CELLS = 200


class ForecastPort(Protocol):
    async def forecast_demand(
        self, request: pricing_pb2.ForecastDemandRequest, *, deadline_s: float | None = ...
    ) -> pricing_pb2.ForecastDemandResponse: ...


@dataclass(frozen=True, slots=True)
class ForecastsConfig:
    ttl_s: float = 60.0
    deadline_s: float = 1.0
    backoff_s: float = 15.0
    #: Which forecast stands for the cell: the next half hour.
    horizon_minutes: int = 30


def pool_demand(pending: Sequence[PendingOrder]) -> dict[str, float]:
    """The other pending orders around each drop-off (geohash-6): the fallback."""
    cells = Counter(geohash_encode(o.dropoff_lat, o.dropoff_lon, 6) for o in pending)
    return {
        o.order_id: float(cells[geohash_encode(o.dropoff_lat, o.dropoff_lon, 6)] - 1)
        for o in pending
    }


class Forecasts:
    """Expected orders per drop-off cell from Pricing, cached; the pool when it is away."""

    def __init__(
        self,
        port: ForecastPort | None,
        *,
        config: ForecastsConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.config = config or ForecastsConfig()
        self.clock = clock
        #: cell -> (expected orders in the next half hour, when fetched).
        self._cells: dict[str, tuple[float, float]] = {}
        self._quiet_until = 0.0
        self.calls = 0
        self.failures = 0

    async def demand(self, pending: Sequence[PendingOrder]) -> dict[str, float]:
        """Order id -> demand around its drop-off (forecast where known, else the pool)."""
        cell_of = {o.order_id: geohash_encode(o.dropoff_lat, o.dropoff_lon, 5) for o in pending}
        await self._refresh(sorted(set(cell_of.values())))
        fallback = pool_demand(pending)
        out: dict[str, float] = {}
        for o in pending:
            known = self._cells.get(cell_of[o.order_id])
            out[o.order_id] = known[0] if known is not None else fallback[o.order_id]
        return out

    async def _refresh(self, cells: Sequence[str]) -> None:
        now = self.clock()
        if self.port is None or now < self._quiet_until:
            return
        ttl = self.config.ttl_s
        stale = [c for c in cells if (k := self._cells.get(c)) is None or now - k[1] > ttl]
        if not stale:
            return
        want = self.config.horizon_minutes
        try:
            for i in range(0, len(stale), _MAX_CELLS):
                self.calls += 1
                resp = await self.port.forecast_demand(
                    pricing_pb2.ForecastDemandRequest(cells=stale[i : i + _MAX_CELLS]),
                    deadline_s=self.config.deadline_s,
                )
                for c in resp.cells:
                    f = next((f for f in c.forecasts if f.horizon_minutes == want), None)
                    if f is not None:
                        self._cells[c.cell] = (max(0.0, f.expected_orders), now)
        except Exception as exc:  # Pricing away: the pool stands in, matching goes on
            self.failures += 1
            self._quiet_until = now + self.config.backoff_s
            if self.failures in (1, 10) or self.failures % 100 == 0:
                _log.warning(
                    "ForecastDemand failed (%d): %s; the pool stands in", self.failures, exc
                )
        # Forget cells long unused so the cache stays the size of the city's busy part.
        if len(self._cells) > 4 * _MAX_CELLS:
            old = now - 10 * self.config.ttl_s
            self._cells = {c: v for c, v in self._cells.items() if v[1] >= old}
