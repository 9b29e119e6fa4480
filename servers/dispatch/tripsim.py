"""A trace's day through the trip planner (``trips.plan_trips``), on a virtual clock.

The physics are the trace's (``foodmesh-trace/1``, as the Grubhub MDRP instances
describe them): travel along the straight line at ``speed_mps`` (or mdrplib's whole
minutes rounded up, ``ceil_minutes``); a courier leaves a restaurant at
``max(arrival, ready) + pickup_service_s`` (one service per restaurant visit); an
order is delivered when its drop-off service ends (arrival at the door +
``dropoff_service_s``); click-to-door is that minus ``placed_s``. Couriers are on
shift from ``on_s`` to ``off_s``: they take no trip after ``off_s`` and finish
what they hold.

Every ``interval_s`` the planner runs over the orders placed and not yet sent and
every courier free now or soon; the trips it commits are offered at once; a courier
accepts with probability ``accept_prob`` (a decline excludes them from those
orders). A committed trip then runs to its end by the physics above: the planner's
expected times *are* the trip, as nothing in a trace perturbs it.

The readiness the planner plans with is the trace's ``ready_s`` (the lower bound
assumes it, too); live, it is the ETA service's prep estimate.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np

from foodmesh.core.geo import haversine_m
from foodmesh.core.trace import Trace
from servers.dispatch import assignment
from servers.dispatch.trips import (
    FreeDriver,
    OpenTrip,
    TravelRule,
    TripConfig,
    TripOrder,
    plan_trips,
    reposition,
)

__all__ = ["Metrics", "TripSimConfig", "simulate_trips"]

_log = logging.getLogger("foodmesh.replay")


@dataclass(frozen=True, slots=True)
class TripSimConfig:
    trips: TripConfig = field(default_factory=TripConfig)
    interval_s: float = 30.0
    accept_prob: float = 1.0
    ceil_minutes: bool = False
    seed: int = 1
    drain_s: float = 3 * 3600
    label: str = "batch"
    #: How often idle, unplanned couriers are moved towards uncovered restaurants.
    reposition_every_s: float = 120.0
    #: Orders placed within this long make a restaurant busy (its weight).
    demand_window_s: float = 3600.0
    #: "optimal" (``assignment.solve``) or "greedy" (rows in turn, the cheapest each).
    solver: str = "optimal"


@dataclass(frozen=True, slots=True)
class Metrics:
    """What a replay measured (every policy's, so replay prints one table)."""

    policy: str
    orders: int
    delivered: int
    unassigned: int
    click_to_door_mean_min: float
    click_to_door_p90_min: float
    on_time_share: float
    food_wait_mean_min: float
    courier_idle_share: float
    offers_per_order: float
    decide_wall_s: float
    batches: int
    sim_hours: float
    wall_s: float
    trips: int = 0
    orders_per_trip: float = 0.0
    #: Courier-hours on trips (travel, waiting, service) per delivered order.
    courier_hours_per_order: float = 0.0
    #: Share of on-shift time on trips.
    utilisation: float = 0.0
    #: A courier's wait at the restaurant for the food, mean per order.
    driver_wait_mean_min: float = 0.0


@dataclass(slots=True)
class _Rider:
    id: str
    lat: float
    lon: float
    on_s: float
    off_s: float
    free_at: float
    busy_s: float = 0.0
    #: The trip under way while its food is not picked up yet (others may join it):
    #: restaurant, arrival there, the pickup's start, the orders.
    trip: tuple[str, float, float, tuple[TripOrder, ...]] | None = None
    #: Moving while idle: from, to, when it set off, seconds it takes.
    move: tuple[float, float, float, float, float, float] | None = None

    def where(self, now: float) -> tuple[float, float]:
        """Where the courier is at ``now`` (somewhere along a move, or where they stopped)."""
        if self.move is None:
            return self.lat, self.lon
        flat, flon, tlat, tlon, start, dur = self.move
        f = 1.0 if dur <= 0 else min(1.0, max(0.0, (now - start) / dur))
        return flat + (tlat - flat) * f, flon + (tlon - flon) * f

    def stop(self, now: float) -> None:
        """Ends a move at ``now``: the courier is where they got to; the time counts as work."""
        if self.move is not None:
            self.lat, self.lon = self.where(now)
            self.busy_s += min(max(0.0, now - self.move[4]), self.move[5])
            self.move = None


def simulate_trips(trace: Trace, config: TripSimConfig, *, progress: bool = False) -> Metrics:
    """Runs the trace through the planner until every order is delivered (or the drain ends)."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    cfg = TripConfig(
        **{
            **{k: getattr(config.trips, k) for k in config.trips.__dataclass_fields__},
            "pickup_service_s": trace.pickup_service_s,
            "dropoff_service_s": trace.dropoff_service_s,
            "promise_s": trace.target_click_to_door_s,
        }
    )
    travel = TravelRule(speed_mps=trace.speed_mps, ceil_minutes=config.ceil_minutes)
    solve = assignment.greedy if config.solver == "greedy" else assignment.solve
    kitchens = {r.id: (r.lat, r.lon) for r in trace.restaurants}
    riders = [_Rider(c.id, c.lat, c.lon, c.on_s, c.off_s, c.on_s) for c in trace.couriers]
    by_id = {r.id: r for r in riders}
    placed = sorted(trace.orders, key=lambda o: o.placed_s)
    excluded: dict[str, set[str]] = {}
    offers: dict[str, int] = {o.id: 0 for o in placed}
    picked: dict[str, float] = {}  # order -> food picked up (service start)
    arrived: dict[str, float] = {}  # order -> the courier at the restaurant
    delivered: dict[str, float] = {}
    pool: dict[str, TripOrder] = {}
    nxt = 0
    trips = 0
    decide = 0.0
    rounds = 0
    last = max([o.placed_s for o in placed] + [0.0])
    end = last + config.drain_s
    now = min([o.placed_s for o in placed] + [0.0])
    now = math.floor(now / config.interval_s) * config.interval_s
    report = time.perf_counter() + 2.0
    # A round with nothing new (no order, no courier freed, no planned release due)
    # would plan what the last one planned: skipped, which is what lets a day of 2 s
    # rounds replay in seconds.
    wake_at = now
    prev = -math.inf
    next_move = now
    planned: set[str] = set()
    recent: list[tuple[float, str]] = []  # (placed, restaurant) of orders seen
    while now <= end and (nxt < len(placed) or pool):
        while nxt < len(placed) and placed[nxt].placed_s <= now:
            o = placed[nxt]
            lat, lon = kitchens[o.restaurant_id]
            pool[o.id] = TripOrder(o.id, o.restaurant_id, lat, lon, o.dropoff_lat,
                                   o.dropoff_lon, o.placed_s, o.ready_s)  # fmt: skip
            nxt += 1
            wake_at = now
            recent.append((o.placed_s, o.restaurant_id))
        if pool and wake_at > now:
            wake_at = min(
                [wake_at]
                + [r.free_at for r in riders if prev < r.free_at <= now]
                + [r.on_s for r in riders if prev < r.on_s <= now]
            )
        prev = now
        if pool and wake_at <= now:
            wake_at = math.inf
            free = [
                FreeDriver(r.id, *r.where(now), r.free_at, r.off_s)
                for r in riders
                if r.free_at < r.off_s and r.on_s <= now + cfg.driver_horizon_s
            ]
            open_trips = [
                OpenTrip(r.id, r.trip[0], r.trip[1], r.trip[3])
                for r in riders
                if r.trip is not None and now < r.trip[2]
            ]
            rnd = plan_trips(list(pool.values()), free, now=now, interval_s=config.interval_s,
                             travel=travel, config=cfg, open_trips=open_trips,
                             solver=solve)  # fmt: skip
            decide += rnd.decide_s
            rounds += 1
            planned = {p.driver_id for p in rnd.plans if not p.commit}
            for p in rnd.plans:
                if not p.commit:
                    wake_at = min(wake_at, p.why.release_at - config.interval_s)
                    continue
                wake_at = now + config.interval_s  # a courier and orders left the round
                for oid in p.new_order_ids:
                    offers[oid] += 1
                if rng.random() >= config.accept_prob:
                    for oid in p.new_order_ids:
                        excluded.setdefault(oid, set()).add(p.driver_id)
                        old = pool[oid]
                        pool[oid] = TripOrder(
                            old.order_id, old.restaurant_id, old.pickup_lat, old.pickup_lon,
                            old.dropoff_lat, old.dropoff_lon, old.placed_at, old.ready_at,
                            frozenset(excluded[oid]),
                        )  # fmt: skip
                    continue
                r = by_id[p.driver_id]
                r.stop(now)
                pick = p.legs[0]
                if p.joins:  # the trip under way grows: its times are the plan's now
                    start = r.free_at
                else:
                    trips += 1
                    start = max(now, r.free_at)
                for oid in p.new_order_ids:
                    del pool[oid]
                for oid in p.order_ids:
                    arrived[oid] = pick.arrive_at
                    picked[oid] = pick.depart_at - cfg.pickup_service_s
                for leg in p.legs[1:]:
                    delivered[leg.order_ids[0]] = leg.depart_at
                last_leg = p.legs[-1]
                r.trip = (p.bundle.orders[0].restaurant_id, pick.arrive_at,
                          pick.depart_at - cfg.pickup_service_s, p.bundle.orders)  # fmt: skip
                r.busy_s += last_leg.depart_at - start
                r.free_at = last_leg.depart_at
                r.lat, r.lon = last_leg.lat, last_leg.lon
        if now >= next_move and cfg.cover_s > 0:
            next_move = now + config.reposition_every_s
            _move_idle(riders, planned, recent, kitchens, now, travel, cfg, config)
        if progress and time.perf_counter() > report:
            report = time.perf_counter() + 2.0
            _log.info(
                "replay %s: t=%.1f h, %d/%d sent, %.0f sim-s per wall-s",
                config.label,
                now / 3600,
                len(delivered),
                len(placed),
                now / max(1e-9, time.perf_counter() - started),
            )
        now += config.interval_s
    for r in riders:
        r.stop(min(now, r.off_s) if r.move is None or now < r.move[4] + r.move[5] else now)
    return _measure(trace, config, riders, placed, delivered, picked, arrived, offers, trips,
                    decide, rounds, started)  # fmt: skip


def _move_idle(
    riders: list[_Rider],
    planned: set[str],
    recent: list[tuple[float, str]],
    kitchens: dict[str, tuple[float, float]],
    now: float,
    travel: TravelRule,
    cfg: TripConfig,
    config: TripSimConfig,
) -> None:
    """Sends idle, unplanned couriers towards busy restaurants nobody covers."""
    weight: dict[str, float] = {}
    for placed_s, rid in reversed(recent):
        if placed_s < now - config.demand_window_s:
            break
        weight[rid] = weight.get(rid, 0.0) + 1.0
    if not weight:
        return
    for r in riders:
        if r.move is not None and now >= r.move[4] + r.move[5]:
            r.stop(now)
    on = [r for r in riders if r.on_s <= now < r.off_s]
    idle = [r for r in on if r.free_at <= now and r.id not in planned and r.move is None]
    covering = []
    for r in on:
        if r.move is not None:
            covering.append((r.move[2], r.move[3]))
        elif r.free_at <= now + cfg.cover_s:
            covering.append((r.lat, r.lon))
    # Idle couriers cover only where they stand; the planned ones, where they will be.
    moves = reposition(
        [FreeDriver(r.id, r.lat, r.lon, now, r.off_s) for r in idle],
        covering,
        [(rid, *kitchens[rid], w) for rid, w in weight.items()],
        travel=travel,
        config=cfg,
    )
    by_id = {r.id: r for r in idle}
    for mv in moves:
        r = by_id[mv.driver_id]
        dur = travel.seconds(haversine_m(r.lat, r.lon, mv.lat, mv.lon))
        r.move = (r.lat, r.lon, mv.lat, mv.lon, now, dur)


def _measure(
    trace: Trace,
    config: TripSimConfig,
    riders: list[_Rider],
    placed: list,  # type: ignore[type-arg]
    delivered: dict[str, float],
    picked: dict[str, float],
    arrived: dict[str, float],
    offers: dict[str, int],
    trips: int,
    decide: float,
    rounds: int,
    started: float,
) -> Metrics:
    n = len(placed)
    done = [o for o in placed if o.id in delivered]
    c2d = np.array([delivered[o.id] - o.placed_s for o in done]) if done else np.zeros(1)
    food = np.array([max(0.0, picked[o.id] - o.ready_s) for o in done]) if done else np.zeros(1)
    # A courier's wait at the restaurant: from arrival until the food is ready, once per trip.
    dwait = (
        np.array([max(0.0, picked[o.id] - arrived[o.id]) for o in done]) if done else np.zeros(1)
    )
    final = max(list(delivered.values()) + [0.0])
    # On shift, plus the time spent finishing the last trip after it ended.
    shift = sum(max(0.0, max(r.off_s, min(r.free_at, final)) - r.on_s) for r in riders)
    busy = sum(r.busy_s for r in riders)
    return Metrics(
        policy=config.label,
        orders=n,
        delivered=len(done),
        unassigned=n - len(done),
        click_to_door_mean_min=float(c2d.mean() / 60),
        click_to_door_p90_min=float(np.percentile(c2d, 90) / 60),
        on_time_share=float((c2d <= trace.target_click_to_door_s).sum() / max(1, n)),
        food_wait_mean_min=float(food.mean() / 60),
        courier_idle_share=max(0.0, 1 - busy / shift) if shift else 0.0,
        offers_per_order=sum(offers.values()) / max(1, n),
        decide_wall_s=decide,
        batches=rounds,
        sim_hours=final / 3600,
        wall_s=time.perf_counter() - started,
        trips=trips,
        orders_per_trip=len(done) / max(1, trips),
        courier_hours_per_order=busy / 3600 / max(1, len(done)),
        utilisation=busy / shift if shift else 0.0,
        driver_wait_mean_min=float(dwait.mean() / 60),
    )
