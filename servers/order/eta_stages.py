"""The promise at each stage of an order: estimated again at confirmation, at driver
assignment and at pickup, kept per stage, and its error measured on delivery.

:class:`StageEstimates` records each estimate (``orders.eta_estimates``, one row per
order and stage, the first kept) and moves the order's ``estimated_delivery_time``
on, so GetOrder, WatchOrder and tracking show the latest. :func:`report` reads the
delivered orders' estimates back: MAE and p90 of the absolute error per stage and
the 80 % interval's coverage (``foodmesh sim run --report eta``). The error per
stage also feeds ``foodmesh_eta_stage_error_seconds`` on delivery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Histogram
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.events import EVENT_DELAYED
from foodmesh.v1 import catalog_pb2, dispatch_pb2
from servers.order._pg import autocommit
from servers.order.eta import Estimate, EtaInput, EtaPort
from servers.order.model import Order
from servers.order.notices import NoticeOf, delay_minutes, slipped
from servers.order.store import NOTIFY_CHANNEL
from servers.order.transitions import Status
from servers.runtime.outbox import enqueue_event

__all__ = ["STAGES", "STAGE_ERROR", "StageEstimates", "StageReport", "report"]

_log = logging.getLogger("foodmesh.order.eta")

STAGES = ("placement", "confirmation", "assignment", "pickup")
STAGE_ERROR = Histogram(
    "foodmesh_eta_stage_error_seconds",
    "|actual - estimated| delivery time of a delivered order, by the stage the estimate was made.",
    ("stage",),
    buckets=(30, 60, 90, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600),
)

_INSERT = """
INSERT INTO orders.eta_estimates (order_id, stage, at, estimated_delivery_time, lower_time,
                                  upper_time, model_version)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (order_id, stage) DO NOTHING
"""
_BEFORE = """
SELECT promised_delivery_time, estimated_delivery_time, status FROM orders.orders
 WHERE order_id = %s FOR UPDATE
"""
_MOVE = """
UPDATE orders.orders SET estimated_delivery_time = %s
 WHERE order_id = %s AND status NOT IN ('delivered', 'cancelled')
"""


def _stage_of(before: Order, after: Order) -> str | None:
    if after.status is Status.CONFIRMED and before.status is not Status.CONFIRMED:
        return "confirmation"
    if after.driver_id and after.driver_id != before.driver_id:
        return "assignment"
    if after.status is Status.PICKED_UP and before.status is not Status.PICKED_UP:
        return "pickup"
    return None


class _Drivers(Protocol):
    async def get_driver(
        self, request: dispatch_pb2.GetDriverRequest, *, deadline_s: float | None = ...
    ) -> dispatch_pb2.GetDriverResponse: ...


class _Catalog(Protocol):
    async def get_restaurant(
        self, request: catalog_pb2.GetRestaurantRequest, *, deadline_s: float | None = ...
    ) -> catalog_pb2.GetRestaurantResponse: ...


class StageEstimates:
    """Estimates an order again as it moves on, and records every stage's estimate."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        eta: EtaPort,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        drivers: _Drivers | None = None,
        catalog: _Catalog | None = None,
        timeout_s: float = 2.0,
        notice: NoticeOf | None = None,
    ) -> None:
        self.pool = pool
        #: Builds ``orders.v1.delayed`` (``notices.py``), committed with a late estimate.
        self.notice = notice
        self.eta = eta
        self.spawn = spawn
        self.drivers = drivers
        self.catalog = catalog
        self.timeout_s = timeout_s
        self._vehicles: dict[str, int] = {}

    async def _listed_prep(self, restaurant_id: str) -> int:
        """The restaurant's listed prep time (the Catalog's, cached there); 0 when unknown.

        The same feature the placement's estimate was made with, so each stage's
        estimate sees what the model was trained on.
        """
        if self.catalog is None:
            return 0
        try:
            r = await self.catalog.get_restaurant(
                catalog_pb2.GetRestaurantRequest(restaurant_id=restaurant_id), deadline_s=1.0
            )
        except Exception as exc:  # the model's own knowledge of the kitchen stands in
            _log.debug("listed prep of %s unknown: %s", restaurant_id, exc)
            return 0
        return int(r.restaurant.avg_prep_time_min)

    async def _vehicle(self, driver_id: str) -> int:
        """The driver's vehicle (Dispatch's profile), remembered; 0 when unknown."""
        if not driver_id or self.drivers is None:
            return 0
        if driver_id not in self._vehicles:
            try:
                r = await self.drivers.get_driver(
                    dispatch_pb2.GetDriverRequest(driver_id=driver_id), deadline_s=1.0
                )
            except Exception as exc:  # estimated as a car meanwhile
                _log.debug("vehicle of %s unknown: %s", driver_id, exc)
                return 0
            if len(self._vehicles) > 100_000:
                self._vehicles.clear()
            self._vehicles[driver_id] = int(r.driver.vehicle_type)
        return self._vehicles[driver_id]

    async def record(
        self, order_id: str, stage: str, at: dt.datetime, e: Estimate, *, order: Order | None = None
    ) -> None:
        """Keeps the stage's estimate (the first one made) and shows it as the latest; with
        ``order``, an estimate that slipped past the promise commits ``orders.v1.delayed``."""
        try:
            if stage == "placement":
                async with autocommit(self.pool) as conn:
                    await conn.execute(_INSERT, (order_id, stage, at, e.arrival, e.lower,
                                                 e.upper, e.source))  # fmt: skip
                return
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(_INSERT, (order_id, stage, at, e.arrival, e.lower, e.upper,
                                             e.source))  # fmt: skip
                cur = await conn.execute(_BEFORE, (order_id,))
                before = await cur.fetchone()
                await conn.execute(_MOVE, (e.arrival, order_id))
                await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, order_id))
                if (before is not None and order is not None and self.notice is not None
                        and before[2] not in ("delivered", "cancelled")
                        and slipped(before[0], before[1], e.arrival)):  # fmt: skip
                    late = delay_minutes(before[0], e.arrival)
                    why = f"now expected at {e.arrival:%H:%M} UTC, {late} min later than promised"
                    moved = dataclasses.replace(order, estimated_delivery_time=e.arrival)
                    await enqueue_event(conn, "orders",
                                        self.notice(moved, EVENT_DELAYED, why, at))  # fmt: skip
        except Exception as exc:  # a lost measurement, never a lost order
            _log.warning("ETA estimate of %s at %s not recorded: %s", order_id, stage, exc)

    def committed(self, before: Order, after: Order, *, at: dt.datetime) -> None:
        """Called on each committed change: a new stage is estimated in the background;
        a delivery observes each stage's error."""
        if after.status is Status.DELIVERED and before.status is not Status.DELIVERED:
            self.spawn(self._observe(after.order_id, at))
            return
        stage = _stage_of(before, after)
        if stage is not None:
            self.spawn(self._estimate(after, stage, at))

    async def stage_input(self, o: Order, stage: str, at: dt.datetime) -> EtaInput:
        """What the stage's estimate is asked with: the order as it stands now."""
        at_stage = {"confirmation": Status.CONFIRMED, "pickup": Status.PICKED_UP}
        status = at_stage.get(stage, o.status)
        return EtaInput(
            restaurant_id=o.restaurant_id, restaurant=(o.restaurant_lat, o.restaurant_lon),
            destination=(float(o.delivery_address.get("lat", 0.0)),
                         float(o.delivery_address.get("lon", 0.0))),
            prep_minutes=await self._listed_prep(o.restaurant_id),
            item_count=sum(ln.quantity for ln in o.items),
            subtotal_minor=o.subtotal_minor, currency=o.currency, start=o.created_at,
            now=at, status=status.value, driver_id=o.driver_id,
            vehicle=await self._vehicle(o.driver_id),
            # The conditions as of placement, as the model is trained on them.
            drivers_nearby=o.eta_drivers_nearby, weather=o.eta_weather or 0,
            event_multiplier=o.eta_event_multiplier,
        )  # fmt: skip

    async def _estimate(self, o: Order, stage: str, at: dt.datetime) -> None:
        e = await self.stage_input(o, stage, at)
        try:
            est = await self.eta.estimate(e, timeout_s=self.timeout_s)
        except Exception as exc:  # the earlier estimate stands
            _log.debug("re-estimate of %s at %s failed: %s", o.order_id, stage, exc)
            return
        await self.record(o.order_id, stage, at, est, order=o)

    async def _observe(self, order_id: str, at: dt.datetime) -> None:
        try:
            async with autocommit(self.pool) as conn:
                cur = await conn.execute(
                    "SELECT stage, estimated_delivery_time FROM orders.eta_estimates"
                    " WHERE order_id = %s", (order_id,))  # fmt: skip
                rows = await cur.fetchall()
        except Exception as exc:
            _log.debug("stage errors of %s not observed: %s", order_id, exc)
            return
        for stage, eta in rows:
            STAGE_ERROR.labels(stage).observe(abs((at - eta).total_seconds()))


@dataclass(frozen=True, slots=True)
class StageReport:
    stage: str
    orders: int
    mae_min: float
    p90_min: float
    #: Share of delivered orders inside the stage's 80 % interval (None: no intervals).
    coverage80: float | None
    #: Mean of actual - estimated (positive: later than promised).
    bias_min: float


_REPORT = """
SELECT e.stage, extract(epoch FROM d.at - e.estimated_delivery_time) / 60.0,
       d.at BETWEEN e.lower_time AND e.upper_time, e.lower_time IS NOT NULL
  FROM orders.eta_estimates e
  JOIN orders.timeline d ON d.order_id = e.order_id AND d.status = 'delivered'
 WHERE d.at >= %s AND d.at <= %s
"""


def _q(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def report(pool_or_url: AsyncConnectionPool | str, *, since: dt.datetime,
                 until: dt.datetime) -> list[StageReport]:  # fmt: skip
    """Per stage, over orders delivered between ``since`` and ``until``."""
    import psycopg

    if isinstance(pool_or_url, str):
        async with await psycopg.AsyncConnection.connect(pool_or_url, connect_timeout=5) as c:
            rows = await (await c.execute(_REPORT, (since, until))).fetchall()
    else:
        async with autocommit(pool_or_url) as conn:
            rows = await (await conn.execute(_REPORT, (since, until))).fetchall()
    out = []
    for stage in STAGES:
        errs = [float(r[1]) for r in rows if r[0] == stage]
        inside = [bool(r[2]) for r in rows if r[0] == stage and r[3]]
        if not errs:
            continue
        abs_e = [abs(x) for x in errs]
        out.append(StageReport(
            stage=stage, orders=len(errs), mae_min=round(sum(abs_e) / len(abs_e), 2),
            p90_min=round(_q(abs_e, 0.9), 2),
            coverage80=round(sum(inside) / len(inside), 3) if inside else None,
            bias_min=round(sum(errs) / len(errs), 2),
        ))  # fmt: skip
    return out


def gather_spawner(tasks: set[asyncio.Task[None]]) -> Callable[[Coroutine[Any, Any, None]], None]:
    """A spawn that keeps its tasks referenced until they finish."""

    def spawn(c: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(c)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    return spawn
