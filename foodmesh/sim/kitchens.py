"""Simulated kitchens: confirm an order after a moment, start it, and call it ready.

Each restaurant is a tablet app on the public HTTP API (role ``restaurant``, subject
its id): ``POST /api/v1/orders/{id}/status`` with CONFIRMED, PREPARING and then
READY_FOR_PICKUP after a preparation time drawn from the restaurant's profile
(log-normal around its mean). A refusal because the customer cancelled meanwhile
ends the order's work quietly.

Orders the simulated customers did not place (a person on the customer web page,
a script) are cooked too: :meth:`Kitchens.adopt` lists the city's placed orders
every few seconds (an ops view, standing in for the tablets' new-order
notifications) and cooks each one no kitchen has yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from foodmesh.sim import world
from foodmesh.sim.agents import Gateway, SimConfig, Stats
from foodmesh.sim.city import RestaurantSpec
from foodmesh.sim.driver_motion import TZ
from foodmesh.sim.trace import TraceRecorder

__all__ = ["KitchenPlan", "Kitchens", "plan_kitchen"]


@dataclass(frozen=True, slots=True)
class KitchenPlan:
    """Seconds after placement at which the kitchen confirms, starts and finishes."""

    confirm_s: float
    start_s: float
    ready_s: float


def plan_kitchen(
    rng: random.Random,
    spec: RestaurantSpec,
    *,
    items: int = 2,
    load: int = 0,
    peak: bool = False,
    weather: int = 1,
    scale: float = 1.0,
) -> KitchenPlan:
    """When a kitchen will act on a new order (all times scaled by ``scale``).

    The prep time, counted from placement as the history counts it, comes from the
    city's model (:func:`foodmesh.sim.world.prep_minutes`): the restaurant's mean, the
    order's size, the orders it is already cooking (``load``), peak hours, the weather.
    """
    confirm = rng.uniform(5.0, 45.0)
    start = confirm + rng.uniform(0.0, 20.0)
    prep = 60.0 * world.prep_minutes(rng, spec.prep_mean_min, items=items, load=load,
                                     peak=peak, weather=weather)  # fmt: skip
    ready = max(prep, start + 1.0)
    return KitchenPlan(confirm * scale, start * scale, ready * scale)


class Kitchens:
    """Every restaurant's tablet; one sleeping coroutine per order in the kitchen."""

    def __init__(
        self,
        *,
        config: SimConfig,
        gateway: Gateway,
        stats: Stats,
        recorder: TraceRecorder | None,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.stats = stats
        self.recorder = recorder
        self.clock = clock
        self.rng = rng
        self._ready: dict[str, asyncio.Event] = {}
        #: Orders each kitchen is cooking now (its load, which slows the next one).
        self._cooking: dict[str, int] = {}

    def ready_event(self, order_id: str) -> asyncio.Event | None:
        """Set when the order's food is ready; None for an order these kitchens do not cook."""
        return self._ready.get(order_id)

    def plan(self, spec: RestaurantSpec, *, items: int = 2) -> KitchenPlan:
        """The schedule of a new order of ``items`` items, given what the kitchen has on now."""
        local = dt.datetime.now(TZ)
        return plan_kitchen(
            self.rng, spec, items=items, load=self._cooking.get(spec.restaurant_id, 0),
            peak=bool(world.is_peak(local.hour, local.weekday())), scale=self.config.prep_scale,
        )  # fmt: skip

    async def _step(self, order_id: str, restaurant_id: str, status: str) -> bool:
        """True when the order moved on; False when it is cancelled or gone."""
        for _ in range(5):
            r = await self.gateway.call(
                "POST", f"/api/v1/orders/{order_id}/status", role="restaurant",
                subject=restaurant_id, body={"status": f"ORDER_STATUS_{status}"},
            )  # fmt: skip
            if r.ok:
                return True
            if r.status in (400, 409, 412):  # FAILED_PRECONDITION: cancelled, or already moved
                got = await self.gateway.call("GET", f"/api/v1/orders/{order_id}",
                                              role="restaurant", subject=restaurant_id)  # fmt: skip
                current = got.body.get("order", {}).get("status", "") if got.ok else ""
                if current == "ORDER_STATUS_CANCELLED":
                    self.stats.inc("kitchen_saw_cancel")
                    return False
                if current and _rank(current) >= _rank(f"ORDER_STATUS_{status}"):
                    return True  # our earlier try went through after all
                self.stats.error(f"kitchen_{status.lower()}_{r.status}")
                return False
            if r.status and r.status < 500 and r.status != 429:
                self.stats.error(f"kitchen_{status.lower()}_{r.status}")
                return False
            await asyncio.sleep(1.0 + self.rng.random() * 2)  # 5xx or no answer: try again
        return False

    async def cook(self, order_id: str, spec: RestaurantSpec, plan: KitchenPlan) -> None:
        """Takes one order from placed to ready for pickup on ``plan``'s schedule."""
        if order_id in self._ready:
            return  # in a kitchen already (adopted, or a retried placement)
        placed = self.clock()
        rid = spec.restaurant_id
        ready = self._ready.setdefault(order_id, asyncio.Event())
        self._cooking[rid] = self._cooking.get(rid, 0) + 1
        try:
            await self._cook(order_id, rid, placed, plan)
        finally:
            self._cooking[rid] -= 1
            ready.set()  # cooked, or cancelled: nobody waits for it any longer
            # forget it once any driver at the counter has seen it
            asyncio.get_running_loop().call_later(3600, self._ready.pop, order_id, None)

    async def adopt(
        self,
        restaurants: Mapping[str, RestaurantSpec],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        stop: asyncio.Event,
        *,
        every_s: float = 2.0,
        min_age_s: float = 5.0,
    ) -> None:
        """Cooks the city's placed orders that no simulated customer placed, until ``stop``.

        An order younger than ``min_age_s`` is left to its customer's own path (which
        records it in the trace); :meth:`cook` never cooks one order twice either way.
        """
        while not stop.is_set():
            r = await self.gateway.call(
                "GET", "/api/v1/orders?status=ORDER_STATUS_PLACED&page_size=100", role="ops",
                subject="sim-kitchens",
            )  # fmt: skip
            if r.ok:
                now = dt.datetime.now(dt.UTC)
                for order in r.body.get("orders", []):
                    order_id = str(order.get("order_id", ""))
                    spec = restaurants.get(str(order.get("restaurant_id", "")))
                    if not order_id or spec is None or order_id in self._ready:
                        continue
                    if _age_s(order.get("created_at"), now) < min_age_s:
                        continue
                    self.stats.inc("adopted")
                    items = sum(int(i.get("quantity", 1)) for i in order.get("items", []))
                    spawn(self.cook(order_id, spec, self.plan(spec, items=items or 2)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop.wait()

    async def _cook(self, order_id: str, rid: str, placed: float, plan: KitchenPlan) -> None:
        for at, status, counter in (
            (plan.confirm_s, "CONFIRMED", "confirmed"),
            (plan.start_s, "PREPARING", "preparing"),
            (plan.ready_s, "READY_FOR_PICKUP", "ready"),
        ):
            await asyncio.sleep(max(0.0, placed + at - self.clock()))
            if not await self._step(order_id, rid, status):
                return
            self.stats.inc(counter)
        if self.recorder is not None:
            self.recorder.order_ready(order_id, self.clock())


_ORDER = ("PLACED", "CONFIRMED", "PREPARING", "READY_FOR_PICKUP", "PICKED_UP", "IN_TRANSIT",
          "DELIVERED")  # fmt: skip


def _rank(status: str) -> int:
    name = status.removeprefix("ORDER_STATUS_")
    return _ORDER.index(name) if name in _ORDER else -1


def _age_s(created_at: object, now: dt.datetime) -> float:
    """Seconds since an RFC 3339 ``created_at``; 0 when it is missing or unreadable."""
    if not isinstance(created_at, str):
        return 0.0
    try:
        when = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (now - when).total_seconds()
