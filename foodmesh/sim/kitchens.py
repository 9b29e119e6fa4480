"""Simulated kitchens: hear their orders live, confirm after a moment, cook, call them ready.

Each restaurant is a tablet app on the public HTTP API (role ``restaurant``, subject
its id). It keeps its live order feed open (``GET /api/v1/restaurants/{id}/orders:watch``,
server-sent events, resumed with ``Last-Event-ID`` after a drop) instead of polling,
and cooks every new order it hears of: ``POST /api/v1/orders/{id}/status`` with
CONFIRMED, PREPARING and then READY_FOR_PICKUP after a preparation time drawn from the
restaurant's profile (log-normal around its mean). A refusal because the customer
cancelled meanwhile ends the order's work quietly.

At the start each restaurant sets its order-taking settings: a share confirms
automatically (some all day, some in their lunch and dinner hours only), and a few
kitchens are *absent* (the tablet is on, nobody taps it): their orders wait for the
platform's confirmation timeout and are cancelled. What the feeds tell is counted:
``auto_confirmed``, ``confirm_timeout``, ``no_driver`` (Dispatch escalated an order
nobody took) and ``driver_lost``. An order heard of that no simulated customer placed
(a person on the customer web page, a script) is cooked too and counted ``adopted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from foodmesh.core.tasks import stop_tasks
from foodmesh.sim import world
from foodmesh.sim.agents import Gateway, SimConfig, Stats
from foodmesh.sim.city import RestaurantSpec
from foodmesh.sim.driver_motion import TZ
from foodmesh.sim.trace import TraceRecorder

__all__ = ["KitchenPlan", "Kitchens", "kitchen_settings", "plan_kitchen"]

#: Lunch and dinner, minutes after local midnight: when the part-time auto-confirmers do.
_MEAL_HOURS = ({"start_minute": 11 * 60, "end_minute": 14 * 60},
               {"start_minute": 17 * 60, "end_minute": 22 * 60})  # fmt: skip


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


def kitchen_settings(
    rng: random.Random, restaurant_id: str, *, auto_share: float, absent_share: float
) -> tuple[dict[str, Any], bool]:
    """A restaurant's order-taking settings (the contract's JSON) and whether it is absent."""
    roll = rng.random()
    absent = roll < absent_share
    auto = not absent and roll < absent_share + auto_share
    body: dict[str, Any] = {"restaurant_id": restaurant_id, "auto_confirm": auto}
    if auto and rng.random() < 0.5:
        body["auto_confirm_hours"] = list(_MEAL_HOURS)
    return body, absent


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
        #: Orders a feed handed to a kitchen (forgotten with their ready signal).
        self._taken: set[str] = set()
        #: Plans of the orders simulated customers placed (a person's get one when heard).
        self._plans: dict[str, KitchenPlan] = {}
        #: Set when the feed says the order is confirmed (by auto-confirm, or by us).
        self._confirmed: dict[str, asyncio.Event] = {}
        self._auto: set[str] = set()
        self._absent: set[str] = set()
        #: Orders each kitchen is cooking now (its load, which slows the next one).
        self._cooking: dict[str, int] = {}

    def ready_event(self, order_id: str) -> asyncio.Event | None:
        """Set when the order's food is ready; None for an order these kitchens do not cook."""
        return self._ready.get(order_id)

    def plan(
        self, spec: RestaurantSpec, *, items: int = 2, rng: random.Random | None = None
    ) -> KitchenPlan:
        """The schedule of a new order of ``items`` items, given what the kitchen has on now
        (drawn from ``rng``, the order's own stream, when given)."""
        local = dt.datetime.now(TZ)
        return plan_kitchen(
            rng or self.rng, spec, items=items, load=self._cooking.get(spec.restaurant_id, 0),
            peak=bool(world.is_peak(local.hour, local.weekday())), scale=self.config.prep_scale,
        )  # fmt: skip

    def expect(self, order_id: str, plan: KitchenPlan) -> None:
        """A simulated customer placed ``order_id``: the kitchen cooks it on ``plan``."""
        self._plans[order_id] = plan
        asyncio.get_running_loop().call_later(600, self._plans.pop, order_id, None)

    async def _plan_of(self, order_id: str, spec: RestaurantSpec) -> KitchenPlan:
        # The feed may be quicker than the customer's own answer: give it a moment.
        for _ in range(20):
            plan = self._plans.pop(order_id, None)
            if plan is not None:
                return plan
            await asyncio.sleep(0.1)
        self.stats.inc("adopted")
        return self.plan(spec)

    async def _step(self, order_id: str, restaurant_id: str, status: str) -> bool:
        """True when the order moved on; False when it is cancelled or gone.

        A 5xx or no answer is tried again for two minutes, backing off, as a tablet would
        through a restart of the platform (a kitchen that gave up left its order placed).
        """
        give_up = self.clock() + 120.0
        for attempt in itertools.count():
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
            if self.clock() >= give_up:
                self.stats.error(f"kitchen_gave_up_{status.lower()}")
                return False
            # 5xx or no answer: try again
            await asyncio.sleep(min(10.0, 2.0**attempt) * (0.5 + self.rng.random()))
        return False

    async def cook(
        self, order_id: str, spec: RestaurantSpec, plan: KitchenPlan | None = None
    ) -> None:
        """Takes one order from placed to ready for pickup on ``plan``'s schedule."""
        if order_id in self._ready:
            return  # in a kitchen already (heard twice, or a retried placement)
        placed = self.clock()
        rid = spec.restaurant_id
        ready = self._ready.setdefault(order_id, asyncio.Event())
        self._cooking[rid] = self._cooking.get(rid, 0) + 1
        try:
            if plan is None:
                plan = await self._plan_of(order_id, spec)
            if rid in self._absent:
                return  # nobody taps the tablet: the platform's timeout cancels it
            await self._cook(order_id, rid, placed, plan)
        finally:
            self._cooking[rid] -= 1
            ready.set()  # cooked, or cancelled: nobody waits for it any longer
            # forget it once any driver at the counter has seen it
            asyncio.get_running_loop().call_later(3600, self._forget, order_id)

    def _forget(self, order_id: str) -> None:
        self._ready.pop(order_id, None)
        self._taken.discard(order_id)

    async def configure(self, restaurants: Iterable[RestaurantSpec]) -> None:
        """Sets each restaurant's order-taking settings (auto-confirm, absent kitchens)."""
        rng = random.Random(f"{self.config.seed}:kitchen-settings")
        plans = []
        for spec in restaurants:
            c = self.config
            body, absent = kitchen_settings(
                rng, spec.restaurant_id, auto_share=c.auto_confirm_share,
                absent_share=c.absent_kitchen_share,
            )  # fmt: skip
            if absent:
                self._absent.add(spec.restaurant_id)
            if body["auto_confirm"]:
                self._auto.add(spec.restaurant_id)
            plans.append(body)
        gate = asyncio.Semaphore(16)

        async def put(body: dict[str, Any]) -> None:
            rid = body["restaurant_id"]
            async with gate:
                r = await self.gateway.call("PUT", f"/api/v1/restaurants/{rid}/order-settings",
                                            role="restaurant", subject=rid, body=body)  # fmt: skip
            if not r.ok:
                self.stats.error(f"kitchen_settings_{r.status or 'no_answer'}")

        await asyncio.gather(*(put(b) for b in plans))

    async def listen(
        self,
        restaurants: Mapping[str, RestaurantSpec],
        spawn: Callable[[Any], None],
        stop: asyncio.Event,
    ) -> None:
        """Every restaurant's live feed open, cooking what it hears, until ``stop``."""
        await self.configure(restaurants.values())
        # Feeds hold their connections: a session of their own, not the API calls' pool.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": "foodmesh-sim"}
        ) as session:
            feeds = [asyncio.create_task(self._feed(session, spec, spawn, stop, n))
                     for n, spec in enumerate(restaurants.values())]  # fmt: skip
            try:
                await stop.wait()
            finally:
                await stop_tasks(feeds, timeout_s=2.0)

    async def _feed(
        self,
        session: aiohttp.ClientSession,
        spec: RestaurantSpec,
        spawn: Callable[[Any], None],
        stop: asyncio.Event,
        n: int,
    ) -> None:
        rid = spec.restaurant_id
        url = f"{self.gateway.base_url}/api/v1/restaurants/{rid}/orders:watch"
        last = ""
        backoff = 0.5
        await asyncio.sleep((n % 50) * 0.02)  # not every tablet in the same instant
        while not stop.is_set():
            headers = {"Authorization": self.gateway.tokens.header("restaurant", rid),
                       "Accept": "text/event-stream",
                       "X-Forwarded-For": f"10.250.{(n >> 8) & 255}.{n & 255}"}  # fmt: skip
            if last:
                headers["Last-Event-ID"] = last
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
                async with session.get(url, headers=headers, timeout=timeout) as resp:
                    if resp.status != 200:
                        if resp.status != 429:
                            self.stats.error(f"kitchen_feed_{resp.status}")
                        wait = resp.headers.get("Retry-After", "")
                        await asyncio.sleep(float(wait) if wait.isdigit() else backoff)
                        backoff = min(10.0, backoff * 2)
                        continue
                    backoff = 0.5
                    async for event_id, data in _sse(resp):
                        last = event_id or last
                        self._heard(data, spec, spawn)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if not stop.is_set():
                self.stats.inc("feed_reconnects")
                await asyncio.sleep(backoff)

    def _heard(
        self, data: dict[str, Any], spec: RestaurantSpec, spawn: Callable[[Any], None]
    ) -> None:
        """One message of a restaurant's feed."""
        order = data.get("order", {})
        order_id = str(order.get("order_id", ""))
        if not order_id:
            return
        event = str(data.get("event", ""))
        status = str(order.get("status", ""))
        scheduled = order.get("delivery_option") == "DELIVERY_OPTION_SCHEDULED"
        fresh = event in ("placed", "released") or (
            not event and status == "ORDER_STATUS_PLACED" and not scheduled
        )  # an open order when the tablet connected
        # Confirmed (auto-confirm) or started while the tablet was away, and not seen placed
        # (placed before it connected, or in a gap of its feed): still this kitchen's to cook.
        missed = status in ("ORDER_STATUS_CONFIRMED", "ORDER_STATUS_PREPARING") and (
            not event or event == "confirmed"
        )
        take = fresh and status == "ORDER_STATUS_PLACED" or missed
        if take and order_id not in self._taken:
            # Taken now, not when the task starts: the next message may be about it too.
            self._taken.add(order_id)
            if missed:
                self._confirmed.setdefault(order_id, asyncio.Event()).set()
                self.stats.inc("kitchen_caught_up")
            spawn(self.cook(order_id, spec))
        if event == "confirmed":
            self._confirmed.setdefault(order_id, asyncio.Event()).set()
            if data.get("change", {}).get("actor") == "auto-confirm":
                self.stats.inc("auto_confirmed")
        elif event == "cancelled":
            if str(order.get("cancellation_reason", "")).startswith("confirm_timeout"):
                self.stats.inc("confirm_timeout")
        elif event in ("no_driver", "driver_lost"):
            self.stats.inc(event)

    async def _cook(self, order_id: str, rid: str, placed: float, plan: KitchenPlan) -> None:
        confirmed = self._confirmed.setdefault(order_id, asyncio.Event())
        try:
            for at, status, counter in (
                (plan.confirm_s, "CONFIRMED", "confirmed"),
                (plan.start_s, "PREPARING", "preparing"),
                (plan.ready_s, "READY_FOR_PICKUP", "ready"),
            ):
                if status == "CONFIRMED" and rid in self._auto:
                    # The platform confirms for it (in its hours): wait to hear it, then
                    # tap it ourselves if it does not come.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, placed + at - self.clock()) + 2.0):
                            await confirmed.wait()
                    if confirmed.is_set():
                        self.stats.inc(counter)
                        continue
                await asyncio.sleep(max(0.0, placed + at - self.clock()))
                if not await self._step(order_id, rid, status):
                    return
                self.stats.inc(counter)
        finally:
            self._confirmed.pop(order_id, None)
        if self.recorder is not None:
            self.recorder.order_ready(order_id, self.clock())


_ORDER = ("PLACED", "CONFIRMED", "PREPARING", "READY_FOR_PICKUP", "PICKED_UP", "IN_TRANSIT",
          "DELIVERED")  # fmt: skip


def _rank(status: str) -> int:
    name = status.removeprefix("ORDER_STATUS_")
    return _ORDER.index(name) if name in _ORDER else -1


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(id, data)`` of each message event of a server-sent event stream."""
    event_id, data, kind = "", "", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data and kind in ("", "message"):
                yield event_id, json.loads(data)
            data, kind = "", ""
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line.startswith("event:"):
            kind = line[6:].strip()
