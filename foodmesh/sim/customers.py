"""Simulated customers: search near home, open a menu, order, watch it come, sometimes rate it.

A customer is a phone app on the public HTTP API (role ``customer``, subject the
customer's id). An order is: ``GET /api/v1/restaurants/search`` around the
delivery address (open now), a choice among the hits by popularity and
distance, ``GET .../menu``, a cart that meets the minimum, and
``POST /api/v1/orders`` with an ``Idempotency-Key``; then a look at
``GET /api/v1/orders/{id}`` every so often until it is delivered or cancelled.

A small share misbehave on purpose, so the platform's defences are exercised
under load: malformed orders and searches (must be 400 naming the field),
double taps (the same key twice at once: one order), retries after a client
timeout (the same key again: the same order), and a customer trying a kitchen's
step (403).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from google.protobuf import json_format

from foodmesh.sim.agents import Gateway, HttpResult, SimConfig, Stats
from foodmesh.sim.city import City, CustomerSpec, RestaurantSpec
from foodmesh.sim.demand import Chooser, choose_cart, restaurant_weight
from foodmesh.sim.kitchens import Kitchens
from foodmesh.sim.trace import TraceRecorder

__all__ = ["BAD_PROBES", "Customers"]

Spawn = Callable[[Coroutine[Any, Any, None]], None]
BAD_PROBES = ("bad_order", "bad_search", "double_tap", "retry_after_timeout", "wrong_role")
_METERS_PER_MILE = 1609.344


def _minor(money: Any) -> int:
    try:
        return int((money or {}).get("amount_minor", 0))
    except (TypeError, ValueError):
        return 0


class Customers:
    """Every customer of the city; ``order(n)`` is one arrival of the demand process."""

    def __init__(
        self,
        *,
        city: City,
        config: SimConfig,
        gateway: Gateway,
        stats: Stats,
        kitchens: Kitchens,
        recorder: TraceRecorder | None,
        clock: Callable[[], float],
        rng: random.Random,
        spawn: Spawn,
        run_id: str,
    ) -> None:
        self.city = city
        self.config = config
        self.gateway = gateway
        self.stats = stats
        self.kitchens = kitchens
        self.recorder = recorder
        self.clock = clock
        self.rng = rng
        self.spawn = spawn
        self.run_id = run_id
        self._chooser = Chooser([c.appetite for c in city.customers])
        self._restaurants = {r.restaurant_id: r for r in city.restaurants}
        self._addresses = {
            c.customer_id: json_format.MessageToDict(c.address, preserving_proto_field_name=True)
            for c in city.customers
        }
        #: The delivery PIN of each order under way, as its customer saw it when placing
        #: it; the customer tells it to the driver at the door (:meth:`pin_of`).
        self._pins: dict[str, str] = {}

    async def pin_of(self, order_id: str, driver_id: str) -> str:
        """The PIN the customer of ``order_id`` gives its driver ('' if left at the door).

        An order no simulated customer placed (a person's, which the city adopts): its
        customer is read from the driver's view of the order, and the PIN from that
        customer's own view through the gateway (the customer tells it at the door).
        """
        if order_id in self._pins:
            return self._pins[order_id]
        path = f"/api/v1/orders/{order_id}"
        r = await self.gateway.call("GET", path, role="driver", subject=driver_id,
                                    count_errors=False)  # fmt: skip
        cid = str(r.body.get("order", {}).get("customer_id", "")) if r.ok else ""
        if not cid:
            return ""
        r = await self.gateway.call("GET", path, role="customer", subject=cid,
                                    count_errors=False)  # fmt: skip
        return str(r.body.get("order", {}).get("delivery_pin", "")) if r.ok else ""

    # ------------------------------------------------------------ one order

    async def order(self, n: int) -> None:
        """Arrival ``n``: a customer orders (or, for a bad actor, probes the API).

        Each arrival draws from its own stream (the seed and ``n``): two cities fed the
        same seed see the same customers, carts, kitchens, tips, cancellations and
        ratings, whatever their platforms do (common random numbers, so two dispatch
        policies compare on the same orders).
        """
        rng = random.Random(f"{self.config.seed}:arrival:{n}")
        customer = self.city.customers[self._chooser.draw(rng)]
        probe = ""
        if rng.random() < self.config.bad_share:
            probe = rng.choice(BAD_PROBES)
            self.stats.inc("bad_probes")
        if probe in ("bad_order", "bad_search", "wrong_role"):
            await self._probe(probe, customer, n)
            return
        self.stats.inc("arrivals")
        chosen = await self._choose(customer, rng)
        if chosen is None:
            return
        spec, cart_body = chosen
        key = f"sim-{self.run_id}-{n}"
        card = "pm_card_declined" if rng.random() < self.config.declined_share else (
            "pm_card_visa")  # fmt: skip
        body: dict[str, Any] = {
            "restaurant_id": spec.restaurant_id,
            "items": cart_body,
            "delivery_address": self._addresses[customer.customer_id],
            "payment_method_id": card,
        }
        leave_at_door = n % 5 == 4  # nobody home: the driver proves it with a photo
        if leave_at_door:
            body["leave_at_door"] = True
        if rng.random() < 0.6:
            body["tip"] = {"amount_minor": str(rng.choice((100, 200, 300, 500))),
                           "currency_code": "USD"}  # fmt: skip
        plan = self.kitchens.plan(
            spec, items=sum(int(c.get("quantity", 1)) for c in cart_body), rng=rng
        )
        placed_at = self.clock()
        if probe == "double_tap":
            result = await self._double_tap(customer, key, body)
        elif probe == "retry_after_timeout":
            result = await self._retry_after_timeout(customer, key, body)
        else:
            result = await self._place(customer, key, body)
        if result is None:
            return
        if result.status == 402:
            self.stats.inc("declined")
            return
        if not result.ok:
            self.stats.error(f"place_{result.status or result.error.split(':')[0]}")
            return
        order = result.body.get("order", {})
        order_id = str(order.get("order_id", ""))
        if not order_id:
            self.stats.error("place_no_order_id")
            return
        self.stats.inc("placed")
        if self.recorder is not None:
            addr = customer.address
            self.recorder.order_placed(
                order_id, t=placed_at, restaurant_id=spec.restaurant_id,
                restaurant=spec.location, dropoff=(addr.lat, addr.lon),
                planned_ready_s=placed_at + plan.ready_s,
            )  # fmt: skip
        self._pins[order_id] = "" if leave_at_door else str(order.get("delivery_pin", ""))
        self.kitchens.expect(order_id, plan)  # the kitchen hears of it on its feed
        try:
            await self._watch(customer, order_id, rng)
        finally:
            self._pins.pop(order_id, None)

    async def _choose(
        self, customer: CustomerSpec, rng: random.Random
    ) -> tuple[RestaurantSpec, list[Any]] | None:
        addr = customer.address
        found = await self.gateway.call(
            "GET", "/api/v1/restaurants/search", role="customer", subject=customer.customer_id,
            params={"lat": f"{addr.lat:.6f}", "lon": f"{addr.lon:.6f}", "radius": "3",
                    "open_now": "true", "page_size": "50"},
            headers=self._headers(customer),
        )  # fmt: skip
        if not found.ok:
            self.stats.error(f"search_{found.status or 'no_answer'}")
            return None
        hits = [
            h
            for h in found.body.get("restaurants", [])
            if h.get("is_open", True) and h.get("restaurant_id") in self._restaurants
        ]
        if not hits:
            self.stats.inc("no_restaurant_open")
            return None
        weights = [
            restaurant_weight(self._restaurants[h["restaurant_id"]].popularity,
                              float(h.get("distance_miles", 0.0)) * _METERS_PER_MILE)
            for h in hits
        ]  # fmt: skip
        if sum(weights) <= 0:
            self.stats.inc("no_restaurant_open")
            return None
        hit = hits[Chooser(weights).draw(rng)]
        spec = self._restaurants[hit["restaurant_id"]]
        menu = await self.gateway.call(
            "GET", f"/api/v1/restaurants/{spec.restaurant_id}/menu", role="customer",
            subject=customer.customer_id, headers=self._headers(customer),
        )  # fmt: skip
        if not menu.ok:
            self.stats.error(f"menu_{menu.status or 'no_answer'}")
            return None
        items = [
            (str(i["item_id"]), _minor(i.get("price")))
            for c in menu.body.get("menu", {}).get("categories", [])
            for i in c.get("items", [])
            if i.get("available") and i.get("item_id")
        ]
        minimum = max(_minor(hit.get("minimum_order")), 0)
        cart = choose_cart(rng, items, minimum_minor=minimum)
        if cart is None:
            self.stats.inc("no_cart")
            return None
        lines = [{"item_id": line.item_id, "quantity": line.quantity} for line in cart.lines]
        return spec, lines

    def _headers(self, customer: CustomerSpec, **extra: str) -> dict[str, str]:
        # Each customer has their own address, as phones do (only a trusting gateway reads it).
        n = int(customer.customer_id.rsplit("_", 1)[-1] or 0)
        return {"X-Forwarded-For": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", **extra}

    async def _place(
        self,
        customer: CustomerSpec,
        key: str,
        body: dict[str, Any],
        *,
        timeout_s: float | None = None,
    ) -> HttpResult | None:
        for attempt in range(4):
            r = await self.gateway.call(
                "POST", "/api/v1/orders", role="customer", subject=customer.customer_id,
                body=body, headers=self._headers(customer, **{"Idempotency-Key": key}),
                timeout_s=timeout_s,
            )  # fmt: skip
            # in progress (409) or no answer: the same key again is safe, that is what it is for
            if (r.status == 409 or r.status == 0 or r.status >= 500) and attempt < 3:
                self.stats.inc("place_retries")
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            return r
        return None

    # ------------------------------------------------------------ after the order

    async def _watch(self, customer: CustomerSpec, order_id: str, rng: random.Random) -> None:
        cid = customer.customer_id
        if rng.random() < self.config.cancel_share:
            await asyncio.sleep(rng.uniform(1.0, 4.0) * self.config.prep_scale)
            r = await self.gateway.call(
                "POST", f"/api/v1/orders/{order_id}:cancel", role="customer", subject=cid,
                body={"reason": "changed my mind"}, headers=self._headers(customer),
            )  # fmt: skip
            if r.ok:
                self.stats.inc("cancelled")
                if self.recorder is not None:
                    self.recorder.order_cancelled(order_id)
                return
        deadline = self.clock() + 3 * 3600
        while self.clock() < deadline:
            await asyncio.sleep(self.config.watch_every_s * rng.uniform(0.7, 1.3))
            r = await self.gateway.call("GET", f"/api/v1/orders/{order_id}", role="customer",
                                        subject=cid, headers=self._headers(customer))  # fmt: skip
            if not r.ok:
                continue
            status = r.body.get("order", {}).get("status", "")
            if status == "ORDER_STATUS_CANCELLED":
                self.stats.inc("seen_cancelled")
                if self.recorder is not None:
                    self.recorder.order_cancelled(order_id)
                return
            if status == "ORDER_STATUS_DELIVERED":
                self.stats.inc("seen_delivered")
                if rng.random() < self.config.rate_share:
                    await self._rate(customer, order_id, rng)
                return

    async def _rate(self, customer: CustomerSpec, order_id: str, rng: random.Random) -> None:
        stars = rng.choices((1, 2, 3, 4, 5), weights=(3, 4, 10, 33, 50))[0]
        body: dict[str, Any] = {"restaurant_rating": stars}
        if rng.random() < 0.7:
            body["driver_rating"] = rng.choices((3, 4, 5), weights=(10, 30, 60))[0]
        r = await self.gateway.call("POST", f"/api/v1/orders/{order_id}/rating", role="customer",
                                    subject=customer.customer_id, body=body,
                                    headers=self._headers(customer))  # fmt: skip
        if r.ok:
            self.stats.inc("rated")
        elif r.status:
            self.stats.error(f"rate_{r.status}")

    # ------------------------------------------------------------ bad actors

    def _score(self, probe: str, r: HttpResult, *, expect_field: str | None = None) -> bool:
        """Counts a probe's answer: defended when a 4xx (naming ``expect_field`` if given)."""
        if 400 <= r.status < 500 and r.status != 429:
            prefixes = (f"{expect_field}.", f"{expect_field}[")
            if expect_field is not None and not any(
                f == expect_field or f.startswith(prefixes) for f in r.violations()
            ):
                self.stats.breached[f"{probe}_unnamed_field"] += 1
                return False
            self.stats.defended[probe] += 1
            return True
        if r.status == 429:  # the limiter defended; neither here nor there
            self.stats.defended[f"{probe}_throttled"] += 1
            return True
        self.stats.breached[probe] += 1
        return False

    async def _probe(self, probe: str, customer: CustomerSpec, n: int) -> None:
        cid = customer.customer_id
        hdrs = self._headers(customer)
        if probe == "bad_search":
            lat = self.rng.choice(("95.5", "-91", "NaN", "north"))
            r = await self.gateway.call("GET", "/api/v1/restaurants/search", role="customer",
                                        subject=cid, params={"lat": lat, "lon": "-122.4"},
                                        headers=hdrs, count_errors=False)  # fmt: skip
            # a word is not a number: the gateway refuses it before any field is read
            self._score(probe, r, expect_field=None if lat == "north" else "lat")
            return
        if probe == "wrong_role":
            r = await self.gateway.call(
                "POST", f"/api/v1/orders/sim-missing-{n}/status", role="customer", subject=cid,
                body={"status": "ORDER_STATUS_DELIVERED"}, headers=hdrs, count_errors=False,
            )  # fmt: skip
            self._score(probe, r)
            return
        spec = self._restaurants[self.city.restaurants[0].restaurant_id]
        address = dict(self._addresses[cid])
        good_items = [{"item_id": spec.item_ids()[0], "quantity": 1}]
        kind = self.rng.choice(("quantity", "latitude", "no_items", "card"))
        body: dict[str, Any] = {
            "restaurant_id": spec.restaurant_id,
            "items": good_items,
            "delivery_address": address,
            "payment_method_id": "pm_card_visa",
        }
        field = "items"
        if kind == "quantity":
            body["items"] = [
                {"item_id": spec.item_ids()[0], "quantity": self.rng.choice((0, -3, 1000))}
            ]
        elif kind == "latitude":
            address["lat"] = self.rng.choice((123.4, -95.0))
            field = "delivery_address"
        elif kind == "no_items":
            body["items"] = []
        else:
            body["payment_method_id"] = ""
            field = "payment_method_id"
        r = await self.gateway.call(
            "POST", "/api/v1/orders", role="customer", subject=cid, body=body,
            headers={**hdrs, "Idempotency-Key": f"sim-bad-{self.run_id}-{n}"}, count_errors=False,
        )  # fmt: skip
        self._score(f"bad_order_{kind}", r, expect_field=field)

    async def _double_tap(
        self, customer: CustomerSpec, key: str, body: dict[str, Any]
    ) -> HttpResult | None:
        """The same order sent twice at once: one order, never two, never a 5xx."""
        a, b = await asyncio.gather(self._place(customer, key, body),
                                    self._place(customer, key, body))  # fmt: skip
        if a is None or b is None:
            self.stats.breached["double_tap_no_answer"] += 1
            return a or b
        ids = {r.body.get("order", {}).get("order_id") for r in (a, b) if r.ok}
        if a.status >= 500 or b.status >= 500 or len(ids) > 1:
            self.stats.breached["double_tap"] += 1
        else:
            self.stats.defended["double_tap"] += 1
        return a if a.ok else b

    async def _retry_after_timeout(
        self, customer: CustomerSpec, key: str, body: dict[str, Any]
    ) -> HttpResult | None:
        """Gives up on the first try almost at once, then retries with the same key."""
        first = await self.gateway.call(
            "POST", "/api/v1/orders", role="customer", subject=customer.customer_id, body=body,
            # the app gives up after 5 ms; the server still has the usual 10 s to finish
            headers=self._headers(customer, **{"Idempotency-Key": key,
                                               "X-Request-Timeout": "10000m"}), timeout_s=0.005,
            count_errors=False, retry_throttled=0,
        )  # fmt: skip
        second = await self._place(customer, key, body)
        if second is None or second.status >= 500 or second.status == 0:
            self.stats.breached["retry_after_timeout"] += 1
            return second
        if (
            first.ok
            and second.ok
            and (
                first.body.get("order", {}).get("order_id")
                != second.body.get("order", {}).get("order_id")
            )
        ):
            self.stats.breached["retry_after_timeout_two_orders"] += 1
        else:
            self.stats.defended["retry_after_timeout"] += 1
        return second
