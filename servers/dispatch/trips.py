"""Trips: bundles of up to K orders, timed to the kitchen, over a horizon of drivers. Pure.

One planning round (``plan_trips``), the decision ``foodmesh replay`` runs on its
virtual clock and the live service runs per region it leads (``live.py``):

1. **Horizon**: the orders whose food is ready within ``horizon_s`` and the drivers
   free now *or about to be* (finishing a trip within ``driver_horizon_s``, at their
   last drop-off), each with the moment and place they are free.
2. **Bundles** (``form_bundles``): per restaurant, orders in order of readiness join
   a bundle of up to ``target`` orders (``ceil(orders / drivers)`` clipped to
   ``max_orders``: bundling is for when drivers are scarce) when the food of the
   first waits at most ``max_food_wait_s`` for the last and no order is delivered
   more than ``max_delay_s`` later than on a trip of its own. The drop-offs go in
   the order that delivers the bundle soonest (every permutation: K ≤ 3).
3. **Assignment**: bundles × drivers in one rectangular ``linear_sum_assignment``
   (``assignment.solve``): the cost of a pair is the minutes until each order is at
   its door plus its lateness past the promise, less a reward for serving (more for
   older orders, so nobody starves).
4. **Release at the kitchen's time**: a pair is *committed* (offered) only when the
   driver is free now and must set off within this round to be at the restaurant
   ``release_margin_s`` (plus ``release_spread`` of the prep estimate) before the
   food is ready (or the food is already waiting);
   the rest is a tentative plan, solved afresh next round: until a driver is sent,
   their plan is revised whenever a better one appears (bounded: never after the
   offer, so never once the driver is on the way to the restaurant).

5. **Trips under way** (``join_trips``, ``OpenTrip``): when nobody is free now or
   within the horizon, an order of a restaurant a driver is on the way to (food not
   yet picked up) joins their trip under the bundle rules, one a round.

Every trip carries its why (``Explain``): the cost parts, the bundle, the expected
times. The food's readiness is an estimate handed in (the ETA service's prep
estimate live; the trace's ``ready_s`` in replay).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from foodmesh.core.geo import haversine_m
from servers.dispatch import assignment, scoring

__all__ = [
    "Bundle",
    "Explain",
    "FreeDriver",
    "Leg",
    "TravelRule",
    "TripConfig",
    "TripOrder",
    "TripPlan",
    "TripRound",
    "Move",
    "OpenTrip",
    "due_now",
    "form_bundles",
    "join_trips",
    "plan_trips",
    "reposition",
    "route",
]


@dataclass(frozen=True, slots=True)
class TravelRule:
    """Travel time over a straight line: ``metres / speed``, or whole minutes rounded up.

    ``ceil_minutes`` is mdrplib's own rule (``ceil(metres / metres-per-minute)``);
    the evaluator the replay is compared with travels continuously, so that is the
    default.
    """

    speed_mps: float = 5.0
    ceil_minutes: bool = False

    def seconds(self, metres: float) -> float:
        s = metres / self.speed_mps
        return math.ceil(s / 60.0 - 1e-9) * 60.0 if self.ceil_minutes else s

    def matrix_s(self, metres: scoring.Arr) -> scoring.Arr:
        s: scoring.Arr = metres / self.speed_mps
        if self.ceil_minutes:
            s = np.ceil(s / 60.0 - 1e-9) * 60.0
        return s


@dataclass(frozen=True, slots=True)
class TripConfig:
    """The planner's knobs."""

    max_orders: int = 3
    #: The first order's food waits at most this long for the bundle's last.
    max_food_wait_s: float = 600.0
    #: No order in a bundle is delivered more than this later than on its own.
    max_delay_s: float = 600.0
    #: Bundle only when drivers are scarce (target size ceil(orders / drivers)); else 1.
    scarcity_bundling: bool = True
    #: Orders whose food is ready within this long are planned.
    horizon_s: float = 1800.0
    #: Drivers free within this long (at their last drop-off) are planned.
    driver_horizon_s: float = 900.0
    #: Be at the restaurant this long before the food is ready ...
    release_margin_s: float = 60.0
    #: ... plus this share of the order's prep estimate (placement to ready): the
    #: estimate's own uncertainty, which grows with it (a 30-minute kitchen misses by
    #: more than a 5-minute one). 0 where readiness is known (replay's traces).
    release_spread: float = 0.0
    #: Release every order at once (the plain baseline) instead of at the kitchen's time.
    release_at_once: bool = False
    #: A driver farther than this from the restaurant is not considered, seconds.
    max_to_pickup_s: float = 3600.0
    promise_s: float = 2400.0
    pickup_service_s: float = 240.0
    dropoff_service_s: float = 240.0
    #: Weight of a minute past the promise (on top of the minute itself).
    late_weight: float = 1.0
    #: Reward per order served, minutes, plus this much per minute of its age.
    serve_reward_min: float = 240.0
    age_weight: float = 1.0
    #: Weight of a minute the driver waits at the restaurant; with ``release_at_once``,
    #: of a minute they drive there instead (sent at once, a driver there before the
    #: food waits whatever the plan: only the driving differs, so the nearer goes).
    driver_wait_weight: float = 0.1
    #: Released at the kitchen's time: weight of a minute of the driver's drive to the
    #: restaurant (drivers in time otherwise tie; the nearer one is sent, later). A
    #: driver's minute, driving or waiting, weighs alike; at 0.02 a likely decline
    #: (``FreeDriver.penalty_min``, up to a third of a minute) outweighed 15 minutes of
    #: driving, and the live city's drivers drove 10-20 minutes with others at hand.
    drive_weight: float = 0.1
    #: "doors": minutes until the food is at the doors (ours); "pickup": the driver's
    #: minutes to the restaurant alone (the plain baseline's nearest-driver assignment).
    objective: str = "doors"
    #: Idle drivers with nothing planned move so every busy restaurant has one within
    #: this many seconds (0: they stay where they are).
    cover_s: float = 600.0
    #: ... but none is sent farther than this.
    max_move_s: float = 3600.0
    #: Bundles in the order their first order was placed (first come, first served:
    #: the greedy baseline's solver takes rows in turn).
    first_come: bool = False
    #: Extra reward of an order moved to the front of the pool, minutes.
    front_reward_min: float = 30.0
    #: Reward of a trip ending where demand is (``TripOrder.opportunity`` = 1), minutes.
    opportunity_min: float = 2.0


@dataclass(frozen=True, slots=True)
class TripOrder:
    """An order waiting for a trip."""

    order_id: str
    restaurant_id: str
    pickup_lat: float
    pickup_lon: float
    dropoff_lat: float
    dropoff_lon: float
    placed_at: float
    #: When the food is expected ready (the prep estimate).
    ready_at: float
    excluded: frozenset[str] = frozenset()
    #: Drivers farther than this from the restaurant are not considered (live: the
    #: order's search radius, widened when a round finds it nobody), metres.
    radius_m: float = math.inf
    #: A driver lost it (or it was escalated): served before the others when drivers
    #: are scarce (its reward counts ``front_reward_min`` more).
    front: bool = False
    #: Demand expected around the drop-off (the opportunity term), 0 to 1: a trip
    #: ending where orders will be is worth ``opportunity_min`` minutes more.
    opportunity: float = 0.0


@dataclass(frozen=True, slots=True)
class FreeDriver:
    """A driver as the planner sees them: where and when they are next free."""

    driver_id: str
    lat: float
    lon: float
    free_at: float
    #: Takes no new trip starting at or after this (end of shift).
    off_at: float = math.inf
    #: Longest trip the vehicle takes (to the restaurant, then to the customer), metres.
    max_trip_m: float = math.inf
    #: Minutes added to every trip given this driver: the offer risk (a likely
    #: decline costs an offer's lapse) and the quality term. 0 for replay's couriers.
    penalty_min: float = 0.0
    #: The vehicle (``common.VehicleType``; 0: unknown, as the travel rule).
    vehicle: int = 0
    #: The driver's travel time per second of the travel rule's: their vehicle on the
    #: roads now (live: ETA's times of the pool's drop-offs by vehicle; a bicycle takes
    #: ~1.7 times a car's free flow). Scales their straight-line drive to the restaurant
    #: and their drives to the doors. 1 for replay's couriers (the trace's one speed).
    pace: float = 1.0


@dataclass(frozen=True, slots=True)
class OpenTrip:
    """A trip whose driver has not yet picked its food up: one more order may join it.

    Every order on it is of one restaurant; ``arrive_at`` is when the driver is (or
    was) at the restaurant. ``accepted``: the driver took the trip; while its offer
    is still open, a join is only planned (offered once they accept).
    """

    driver_id: str
    restaurant_id: str
    arrive_at: float
    orders: tuple[TripOrder, ...]
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class Leg:
    """One stop of a trip."""

    kind: str  # "pickup" or "dropoff"
    order_ids: tuple[str, ...]
    lat: float
    lon: float
    #: Expected arrival and departure (service done), epoch or trace seconds.
    arrive_at: float
    depart_at: float


@dataclass(frozen=True, slots=True)
class Bundle:
    """Orders of one restaurant to pick up together, drop-offs in ``orders``' order."""

    orders: tuple[TripOrder, ...]
    #: Seconds from leaving the restaurant to each drop-off's service end.
    drop_offsets_s: tuple[float, ...]

    @property
    def ready_at(self) -> float:
        return max(o.ready_at for o in self.orders)

    @property
    def lat(self) -> float:
        return self.orders[0].pickup_lat

    @property
    def lon(self) -> float:
        return self.orders[0].pickup_lon

    def margin_s(self, cfg: TripConfig) -> float:
        """How long before the food's estimated readiness its driver should be there."""
        prep = max(0.0, self.ready_at - min(o.placed_at for o in self.orders))
        return cfg.release_margin_s + cfg.release_spread * prep


@dataclass(frozen=True, slots=True)
class Explain:
    """Why this trip: the cost parts (minutes) and the expected times."""

    cost: float
    minutes_to_doors: float
    late_minutes: float
    driver_wait_min: float
    serve_reward: float
    bundle_size: int
    alternatives: int
    release_at: float
    #: The pair's cost scaled to [0, 1] among the round's, as a score (1: best).
    score: float = 1.0
    driver_penalty: float = 0.0
    #: Minutes the driver drives to the restaurant.
    travel_min: float = 0.0

    def text(self) -> str:
        return (
            f"{self.bundle_size} order(s); {self.minutes_to_doors:.1f} min to the doors, "
            f"{self.late_minutes:.1f} min late, driver waits {self.driver_wait_min:.1f} min; "
            f"best of {self.alternatives} drivers"
        )


@dataclass(frozen=True, slots=True)
class TripPlan:
    """A bundle for a driver: the route, and whether to offer it now."""

    driver_id: str
    bundle: Bundle
    legs: tuple[Leg, ...]
    #: Send now (the driver must leave this round); else a tentative plan.
    commit: bool
    why: Explain
    #: The orders already on the trip this plan joins (``OpenTrip``); () for a new trip.
    joins: tuple[str, ...] = ()

    @property
    def order_ids(self) -> tuple[str, ...]:
        return tuple(o.order_id for o in self.bundle.orders)

    @property
    def new_order_ids(self) -> tuple[str, ...]:
        """The orders this plan gives (a join: the one joining)."""
        return tuple(o for o in self.order_ids if o not in self.joins)


@dataclass(frozen=True, slots=True)
class TripRound:
    plans: list[TripPlan]
    #: Orders planned but with no driver this round.
    waiting: list[str]
    bundles: int
    decide_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def due_now(*, ready_at: float, to_pickup_s: float, now: float, interval_s: float,
            margin_s: float) -> bool:  # fmt: skip
    """Whether a driver ``to_pickup_s`` away must be sent this round to be there on time.

    On time: ``margin_s`` before the food is ready. Sent later than the round before
    that, they would be late; sent earlier, they would wait at the counter.
    """
    return ready_at - to_pickup_s - margin_s < now + interval_s


def route(
    orders: Sequence[TripOrder], travel: TravelRule, cfg: TripConfig
) -> tuple[tuple[TripOrder, ...], tuple[float, ...]]:
    """The drop-off order delivering soonest (sum of arrival offsets), and those offsets."""
    best: tuple[float, tuple[TripOrder, ...], tuple[float, ...]] | None = None
    for perm in itertools.permutations(orders):
        t, lat, lon = 0.0, perm[0].pickup_lat, perm[0].pickup_lon
        offs = []
        for o in perm:
            t += travel.seconds(haversine_m(lat, lon, o.dropoff_lat, o.dropoff_lon))
            t += cfg.dropoff_service_s
            offs.append(t)
            lat, lon = o.dropoff_lat, o.dropoff_lon
        total = sum(offs)
        if best is None or total < best[0]:
            best = (total, perm, tuple(offs))
    assert best is not None
    return best[1], best[2]


def form_bundles(
    orders: Sequence[TripOrder], *, target: int, travel: TravelRule, cfg: TripConfig
) -> list[Bundle]:
    """Per restaurant, greedy: each order (by readiness) joins the bundle it delays least."""
    by_rest: dict[str, list[TripOrder]] = defaultdict(list)
    for o in orders:
        by_rest[o.restaurant_id].append(o)
    out: list[Bundle] = []
    for group in by_rest.values():
        group.sort(key=lambda o: (o.ready_at, o.placed_at))
        if target <= 1 or len(group) == 1:
            out.extend(Bundle((o,), route((o,), travel, cfg)[1]) for o in group)
            continue
        solo = {
            o.order_id: travel.seconds(
                haversine_m(o.pickup_lat, o.pickup_lon, o.dropoff_lat, o.dropoff_lon)
            )
            + cfg.dropoff_service_s
            for o in group
        }
        open_: list[Bundle] = []
        for o in group:
            best: tuple[float, int, Bundle] | None = None
            for k, b in enumerate(open_):
                if len(b.orders) >= target:
                    continue
                if o.ready_at - min(x.ready_at for x in b.orders) > cfg.max_food_wait_s:
                    continue
                if b.orders[0].excluded != o.excluded and (b.orders[0].excluded or o.excluded):
                    continue
                members, offs = route((*b.orders, o), travel, cfg)
                ready = max(x.ready_at for x in members)
                delays = [
                    ready + off - (x.ready_at + solo[x.order_id])
                    for x, off in zip(members, offs, strict=True)
                ]
                if max(delays) > cfg.max_delay_s:
                    continue
                added = sum(delays)
                if best is None or added < best[0]:
                    best = (added, k, Bundle(members, offs))
            if best is None:
                open_.append(Bundle((o,), route((o,), travel, cfg)[1]))
            else:
                open_[best[1]] = best[2]
        out.extend(open_)
    return out


def _drive_s(offset_s: float, stop: int, pace: scoring.Arr | float, cfg: TripConfig) -> scoring.Arr:
    """A drop-off offset (``Bundle.drop_offsets_s``) at a driver's ``pace``: its driving
    scaled, the ``stop + 1`` service times not."""
    service = (stop + 1) * cfg.dropoff_service_s
    return np.asarray((offset_s - service) * pace + service)


def _legs(bundle: Bundle, arrive: float, cfg: TripConfig, pace: float = 1.0) -> tuple[Leg, ...]:
    dep = max(arrive, bundle.ready_at) + cfg.pickup_service_s
    legs = [Leg("pickup", tuple(o.order_id for o in bundle.orders), bundle.lat, bundle.lon,
                arrive, dep)]  # fmt: skip
    for k, (o, off) in enumerate(zip(bundle.orders, bundle.drop_offsets_s, strict=True)):
        end = dep + float(_drive_s(off, k, pace, cfg))
        legs.append(
            Leg("dropoff", (o.order_id,), o.dropoff_lat, o.dropoff_lon,
                end - cfg.dropoff_service_s, end)
        )  # fmt: skip
    return tuple(legs)


def join_trips(
    orders: Sequence[TripOrder],
    trips: Sequence[OpenTrip],
    *,
    now: float,
    travel: TravelRule,
    config: TripConfig,
) -> list[TripPlan]:
    """Orders joining trips whose driver is on the way to (or at) their restaurant.

    ``plan_trips`` asks only when no driver is free now or within the horizon. One
    new order a trip a round (a driver answers one offer at a time), while it
    carries fewer than ``max_orders``; the order of its restaurant ready soonest
    that keeps the bundle's rules (``form_bundles``: the food waits at most
    ``max_food_wait_s``, no order delivered more than ``max_delay_s`` later than
    on its own trip from that restaurant).
    """
    cfg = config
    by_rest: dict[str, list[TripOrder]] = defaultdict(list)
    for o in orders:
        by_rest[o.restaurant_id].append(o)
    for group in by_rest.values():
        group.sort(key=lambda o: (o.ready_at, o.placed_at, o.order_id))
    taken: set[str] = set()
    plans: list[TripPlan] = []
    for t in sorted(trips, key=lambda t: (t.arrive_at, t.driver_id)):
        if len(t.orders) >= cfg.max_orders or not t.orders:
            continue
        for o in by_rest.get(t.restaurant_id, ()):
            if o.order_id in taken or t.driver_id in o.excluded:
                continue
            trial = (*t.orders, o)
            if max(x.ready_at for x in trial) - min(x.ready_at for x in trial) > (
                cfg.max_food_wait_s
            ):
                continue
            members, offs = route(trial, travel, cfg)
            bundle = Bundle(members, offs)
            dep = max(t.arrive_at, bundle.ready_at) + cfg.pickup_service_s
            delays = [
                dep + off
                - (max(t.arrive_at, x.ready_at) + cfg.pickup_service_s
                   + route((x,), travel, cfg)[1][0])
                for x, off in zip(members, offs, strict=True)
            ]  # fmt: skip
            if max(delays) > cfg.max_delay_s:
                continue
            taken.add(o.order_id)
            legs = _legs(bundle, t.arrive_at, cfg)
            wait = max(bundle.ready_at - t.arrive_at, 0.0) / 60.0
            doors = sum(leg.depart_at - now for leg in legs[1:]) / 60.0
            late = sum(
                max(leg.depart_at - x.placed_at - cfg.promise_s, 0.0) / 60.0
                for leg, x in zip(legs[1:], members, strict=True)
            )
            cost = doors + cfg.late_weight * late + cfg.driver_wait_weight * wait
            why = Explain(cost=cost, minutes_to_doors=doors,
                          late_minutes=late, driver_wait_min=wait, serve_reward=0.0,
                          bundle_size=len(members), alternatives=1, release_at=now)  # fmt: skip
            joins = tuple(x.order_id for x in t.orders)
            plans.append(TripPlan(t.driver_id, bundle, legs, t.accepted, why, joins))
            break
    return plans


def plan_trips(
    orders: Sequence[TripOrder],
    drivers: Sequence[FreeDriver],
    *,
    now: float,
    interval_s: float,
    travel: TravelRule,
    config: TripConfig,
    open_trips: Sequence[OpenTrip] = (),
    to_pickup_s: Mapping[tuple[str, str], float] | None = None,
    solver: Callable[..., list[tuple[int, int]]] = assignment.solve,
) -> TripRound:
    """One round: joins to trips under way, bundles, the best driver for each, which to send.

    ``open_trips``: trips not yet picked up that an order of their restaurant may
    join (``join_trips``) before the rest is planned. ``to_pickup_s``: known
    driver→restaurant times by ``(driver_id, order_id)`` (live: ETA's road times),
    used instead of ``travel``'s straight line for those pairs, in the choice and
    in the release (ready − travel − margin); replay passes none.
    """
    started = time.perf_counter()
    cfg = config
    horizon = [o for o in orders if cfg.release_at_once or o.ready_at <= now + cfg.horizon_s]
    drv = [
        d
        for d in drivers
        if d.free_at <= now + (0.0 if cfg.release_at_once else cfg.driver_horizon_s)
        and max(d.free_at, now) < d.off_at
    ]
    target = 1
    if cfg.max_orders > 1:
        target = min(cfg.max_orders, max(1, math.ceil(len(horizon) / max(1, len(drv)))))
        if not cfg.scarcity_bundling:
            target = cfg.max_orders
    joined: list[TripPlan] = []
    if cfg.max_orders > 1 and open_trips and not drv:
        # A trip under way grows only when nobody is free now or about to be: joining
        # delays the orders on it, so it is the last resort (on the six Grubhub days,
        # joining whenever drivers were scarce cost up to 0.4 min of p90 on some and
        # gained on others; as the last resort, it never fires there).
        joined = join_trips(horizon, open_trips, now=now, travel=travel, config=cfg)
        gone = {oid for p in joined for oid in p.new_order_ids}
        busy = {p.driver_id for p in joined}
        horizon = [o for o in horizon if o.order_id not in gone]
        drv = [d for d in drv if d.driver_id not in busy]
    if not horizon or not drv:
        return TripRound(joined, [o.order_id for o in horizon], 0, time.perf_counter() - started)
    bundles = form_bundles(horizon, target=target, travel=travel, cfg=cfg)
    if cfg.first_come:
        bundles.sort(key=lambda b: min((o.placed_at, o.order_id) for o in b.orders))
    nb, nd = len(bundles), len(drv)
    b_lat = np.array([b.lat for b in bundles])
    b_lon = np.array([b.lon for b in bundles])
    d_lat = np.array([d.lat for d in drv])
    d_lon = np.array([d.lon for d in drv])
    pace = np.array([d.pace for d in drv])
    to_pick = travel.matrix_s(scoring.distance_matrix_m(b_lat, b_lon, d_lat, d_lon)) * pace
    known = _known_pickups(bundles, drv, to_pickup_s) if to_pickup_s else {}
    for cell, secs in known.items():
        to_pick[cell] = secs
    free = np.maximum(np.array([d.free_at for d in drv]), now)
    arrive = free[None, :] + to_pick
    ready = np.array([b.ready_at for b in bundles])[:, None]
    leave = np.maximum(arrive, ready) + cfg.pickup_service_s
    wait_min = np.maximum(ready - arrive, 0.0) / 60.0
    if not cfg.release_at_once:
        # Released at the kitchen's time, a driver early if sent now is sent later instead
        # and waits only the margin: every driver in time waits alike. Counted as if sent
        # now, the farthest driver still in time looked best and went at once, to wait at
        # the counter for whatever the road beat its estimate by (live: 7 min on average).
        margin = np.array([b.margin_s(cfg) for b in bundles])[:, None]
        wait_min = np.minimum(wait_min, margin / 60.0)
    cost = np.zeros((nb, nd))
    late = np.zeros((nb, nd))
    to_doors = np.zeros((nb, nd))
    reward = np.zeros(nb)
    for i, b in enumerate(bundles):
        for k, (o, off) in enumerate(zip(b.orders, b.drop_offsets_s, strict=True)):
            # Each driver's own pace to the doors: a bicycle's drop-off is later.
            at_door = leave[i] + _drive_s(off, k, pace, cfg)
            lateness = np.maximum(at_door - o.placed_at - cfg.promise_s, 0.0) / 60.0
            to_doors[i] += (at_door - now) / 60.0
            late[i] += lateness
            reward[i] += cfg.serve_reward_min + cfg.age_weight * max(0.0, now - o.placed_at) / 60
            reward[i] += cfg.front_reward_min * o.front + cfg.opportunity_min * o.opportunity
    penalty = np.array([d.penalty_min for d in drv])
    cost = (
        to_doors + cfg.late_weight * late
        # Sent at once, an early driver waits whatever the plan: only the drive differs.
        # Released at the kitchen's time, all in time wait alike: the nearer goes (its
        # drive, a tie-break weight, is the driver's time the order takes).
        + (cfg.driver_wait_weight * to_pick / 60.0 if cfg.release_at_once
           else cfg.driver_wait_weight * wait_min + cfg.drive_weight * to_pick / 60.0)
        + penalty[None, :] - reward[:, None]
    )  # fmt: skip
    if cfg.objective == "pickup":
        cost = (arrive - now) / 60.0
    feasible = to_pick <= cfg.max_to_pickup_s
    # Live limits (replay's couriers have none): the order's radius, the vehicle's range.
    radius = np.array([min(o.radius_m for o in b.orders) for b in bundles])
    if np.isfinite(radius).any():
        feasible &= scoring.distance_matrix_m(b_lat, b_lon, d_lat, d_lon) <= radius[:, None]
    reach = np.array([d.max_trip_m for d in drv])
    if np.isfinite(reach).any():
        leg = np.array([
            haversine_m(b.lat, b.lon, b.orders[0].dropoff_lat, b.orders[0].dropoff_lon)
            for b in bundles
        ])  # fmt: skip
        pick_m = scoring.distance_matrix_m(b_lat, b_lon, d_lat, d_lon)
        feasible &= pick_m + leg[:, None] <= reach[None, :]
    index = {d.driver_id: j for j, d in enumerate(drv)}
    for i, b in enumerate(bundles):
        for o in b.orders:
            for who in o.excluded:
                j = index.get(who)
                if j is not None:
                    feasible[i, j] = False
    # The solver wants costs in [0, 1]: shift and scale (a monotone map keeps the optimum).
    lo, hi = float(cost.min()), float(cost.max())
    scaled = (cost - lo) / max(hi - lo, 1e-9)
    pairs = solver(scaled, feasible)
    plans: list[TripPlan] = list(joined)
    matched: set[int] = set()
    alternatives = feasible.sum(axis=1)
    for i, j in pairs:
        b, d = bundles[i], drv[j]
        matched.add(i)
        idle = d.free_at <= now
        start = float(free[j])
        # The route itself on the great circle (the matrix's flat-earth distance is for
        # choosing; the trip must follow the physics exactly).
        arr = start + known.get(
            (i, j), travel.seconds(haversine_m(d.lat, d.lon, b.lat, b.lon)) * d.pace
        )
        margin_s = b.margin_s(cfg)
        release = b.ready_at - (arr - start) - margin_s
        commit = idle and (
            cfg.release_at_once
            or due_now(ready_at=b.ready_at, to_pickup_s=arr - start, now=now,
                       interval_s=interval_s, margin_s=margin_s)
        )  # fmt: skip
        legs = _legs(b, arr, cfg, d.pace)
        why = Explain(
            cost=float(cost[i, j]),
            minutes_to_doors=float(to_doors[i, j]),
            late_minutes=float(late[i, j]),
            driver_wait_min=float(wait_min[i, j]),
            serve_reward=float(reward[i]),
            bundle_size=len(b.orders),
            alternatives=int(alternatives[i]),
            release_at=max(start, release),
            score=1.0 - float(scaled[i, j]),
            driver_penalty=float(penalty[j]),
            travel_min=float(to_pick[i, j]) / 60.0,
        )
        plans.append(TripPlan(d.driver_id, b, legs, commit, why))
    waiting = [o.order_id for i, b in enumerate(bundles) if i not in matched for o in b.orders]
    return TripRound(plans, waiting, nb, time.perf_counter() - started, {"target": float(target)})


def _known_pickups(
    bundles: Sequence[Bundle],
    drivers: Sequence[FreeDriver],
    to_pickup_s: Mapping[tuple[str, str], float],
) -> dict[tuple[int, int], float]:
    """The (bundle, driver) cells with a known time (a bundle's orders share its restaurant)."""
    col = {d.driver_id: j for j, d in enumerate(drivers)}
    row: dict[str, int] = {o.order_id: i for i, b in enumerate(bundles) for o in b.orders}
    cells: dict[tuple[int, int], float] = {}
    for (driver_id, order_id), s in to_pickup_s.items():
        i, j = row.get(order_id), col.get(driver_id)
        if i is not None and j is not None and math.isfinite(s) and s >= 0.0:
            cells.setdefault((i, j), float(s))
    return cells


@dataclass(frozen=True, slots=True)
class Move:
    """Send an idle driver towards a restaurant likely to need one."""

    driver_id: str
    lat: float
    lon: float
    restaurant_id: str


def reposition(
    idle: Sequence[FreeDriver],
    covering: Sequence[tuple[float, float]],
    restaurants: Sequence[tuple[str, float, float, float]],
    *,
    travel: TravelRule,
    config: TripConfig,
) -> list[Move]:
    """Idle, unplanned drivers to the busiest restaurants no driver covers.

    ``restaurants`` are ``(id, lat, lon, weight)`` (weight: recent orders);
    ``covering`` the places of every driver who covers already (planned, about to be
    free there, or idle). Greedy, busiest first: a restaurant with nobody within
    ``cover_s`` gets the nearest idle driver within ``max_move_s``.
    """
    if config.cover_s <= 0 or not idle or not restaurants:
        return []
    ranked = sorted(restaurants, key=lambda r: -r[3])
    r_lat = np.array([r[1] for r in ranked])
    r_lon = np.array([r[2] for r in ranked])
    if covering:
        c_lat = np.array([c[0] for c in covering])
        c_lon = np.array([c[1] for c in covering])
        covered = (
            travel.matrix_s(scoring.distance_matrix_m(r_lat, r_lon, c_lat, c_lon)).min(axis=1)
            <= config.cover_s
        )
    else:
        covered = np.zeros(len(ranked), dtype=bool)
    d_lat = np.array([d.lat for d in idle])
    d_lon = np.array([d.lon for d in idle])
    to = travel.matrix_s(scoring.distance_matrix_m(r_lat, r_lon, d_lat, d_lon))
    taken = np.zeros(len(idle), dtype=bool)
    moves: list[Move] = []
    for i, (rid, lat, lon, _w) in enumerate(ranked):
        if covered[i]:
            continue
        row = np.where(taken | (to[i] > config.max_move_s), np.inf, to[i])
        j = int(np.argmin(row))
        if not math.isfinite(float(row[j])):
            continue
        taken[j] = True
        moves.append(Move(idle[j].driver_id, lat, lon, rid))
        # Whoever goes there covers the restaurants around it too.
        near = travel.matrix_s(
            scoring.distance_matrix_m(r_lat, r_lon, np.array([lat]), np.array([lon]))
        )[:, 0]
        covered |= near <= config.cover_s
        if taken.all():
            break
    return moves
