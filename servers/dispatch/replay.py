"""A city's day through the live dispatch code, on a virtual clock: ``foodmesh replay``'s engine.

Policies: ``batch`` (ours) plans trips with :mod:`servers.dispatch.trips` — bundles of
up to K orders, released at the kitchen's time, over a horizon of drivers about to
be free — and runs them by the trace's physics (:mod:`servers.dispatch.tripsim`);
``plain`` is the baseline the Grubhub instances' figures use (one order a trip, all
released at once, a 60 s batch, never revised); ``greedy`` is the nearest-driver
baseline below.

For ``greedy``, the decisions are the live service's own — ``matching.plan_batch`` (filters,
scores, the solver or the greedy baseline) and ``offers.OfferRules`` (expiry,
exclusion of decliners, escalation) — with the clock and the I/O injected: time
is the trace's seconds, Location's answer is the list of idle simulated
couriers, the ETA service's answer is straight-line travel at the trace's
``speed_mps``, and drivers' answers come from simulated couriers who accept with
probability ``accept_prob`` after a few seconds (or not at all, letting the offer
lapse). Couriers move along straight lines (haversine) at ``speed_mps``.

The trace format is ``foodmesh-trace/1``, read by :mod:`foodmesh.core.trace`; ``generate_trace``
writes one (a synthetic city with a lunch and a dinner peak) for tests and
benchmarks. Metrics are those TRACE.md lists. The command itself (its options, the
table it prints) is :mod:`foodmesh.commands.replay`.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from foodmesh.core.geo import haversine_m
from foodmesh.core.trace import FORMAT, Courier, Trace, TraceError, TraceOrder, load_trace
from servers.dispatch.matching import Candidate, MatchConfig, PendingOrder, Policy, plan_batch
from servers.dispatch.offers import AssignmentStatus, OfferRules
from servers.dispatch.scoring import distance_matrix_m
from servers.dispatch.trips import TripConfig
from servers.dispatch.tripsim import Metrics, TripSimConfig, simulate_trips

__all__ = [
    "Metrics",
    "ReplayPolicy",
    "SimConfig",
    "Trace",
    "TraceError",
    "generate_trace",
    "load_trace",
    "simulate",
]

_log = logging.getLogger("foodmesh.replay")


def generate_trace(
    *,
    orders: int = 2000,
    couriers: int = 300,
    hours: float = 4.0,
    restaurants: int = 150,
    seed: int = 7,
    origin: tuple[float, float] = (37.7749, -122.4194),
) -> dict[str, Any]:
    """A synthetic city: restaurants in neighbourhood clusters, two peaks of orders.

    Couriers come on in two overlapping shifts; each order's food is ready 8-25
    minutes after it is placed; customers live within ~3 km of the restaurant.
    """
    rng = random.Random(seed)
    m_lat = 1 / 111_195.0
    m_lon = m_lat / math.cos(math.radians(origin[0]))

    def around(lat: float, lon: float, sd_m: float) -> tuple[float, float]:
        return lat + rng.gauss(0, sd_m) * m_lat, lon + rng.gauss(0, sd_m) * m_lon

    centres = [around(*origin, 3000) for _ in range(8)]
    rests = []
    for i in range(restaurants):
        lat, lon = around(*rng.choice(centres), 700)
        rests.append({"id": f"r{i}", "lat": round(lat, 6), "lon": round(lon, 6)})
    span = hours * 3600
    cs = []
    for i in range(couriers):
        lat, lon = around(*origin, 3500)
        early = i % 2 == 0
        if early:
            on = rng.uniform(0, 0.1 * span)
            off = on + rng.uniform(0.55, 0.7) * span
        else:  # the late shift stays until the last orders are out
            on = rng.uniform(0.3, 0.4) * span
            off = span + rng.uniform(1800, 3600)
        cs.append(
            {
                "id": f"c{i}",
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "on_s": round(on),
                "off_s": round(off),
            }
        )
    placed = sorted(
        min(span - 1, max(0.0, rng.gauss(mu, span * 0.12)))
        for mu in (rng.choice((0.3, 0.7)) * span for _ in range(orders))
    )
    os_ = []
    for i, t in enumerate(placed):
        r = rng.choice(rests)
        dlat, dlon = around(float(r["lat"]), float(r["lon"]), 1500)  # type: ignore[arg-type]
        os_.append(
            {
                "id": f"o{i}",
                "placed_s": round(t, 1),
                "restaurant_id": r["id"],
                "ready_s": round(t + rng.uniform(8 * 60, 25 * 60), 1),
                "dropoff": {"lat": round(dlat, 6), "lon": round(dlon, 6)},
            }
        )
    return {
        "format": FORMAT,
        "name": f"synthetic-{orders}-orders-{couriers}-couriers-seed{seed}",
        "source": "servers.dispatch.replay.generate_trace",
        "origin": {"lat": origin[0], "lon": origin[1]},
        "speed_mps": 5.0,
        "pickup_service_s": 240,
        "dropoff_service_s": 240,
        "target_click_to_door_s": 2400,
        "couriers": cs,
        "restaurants": rests,
        "orders": os_,
    }


#: ``batch`` (trips: bundles, kitchen-timed), ``plain`` (the 60 s one-order baseline), ``greedy``.
ReplayPolicy = Literal["batch", "plain", "greedy"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    policy: ReplayPolicy = "batch"
    match: MatchConfig = field(default_factory=MatchConfig)
    rules: OfferRules = field(default_factory=OfferRules)
    batch_interval_s: float = 2.0
    #: Probability a courier accepts an offer; of the rest, half decline and half let it lapse.
    accept_prob: float = 0.9
    answer_s: tuple[float, float] = (2.0, 10.0)
    seed: int = 1
    #: How long after the last order the replay goes on (orders still waiting then count
    #: as unassigned).
    drain_s: float = 3 * 3600
    #: The trip planner's knobs (policy ``batch``).
    trips: TripConfig = field(default_factory=TripConfig)
    #: Travel in whole minutes rounded up (mdrplib's rule) instead of continuously.
    ceil_minutes: bool = False
    #: The plain baseline's batch interval, seconds.
    plain_interval_s: float = 60.0


@dataclass(slots=True)
class _Courier:
    spec: Courier
    lat: float
    lon: float
    state: str = "off"  # off, idle, offered, busy
    idle_since: float = 0.0
    idle_s: float = 0.0
    answers: list[bool] = field(default_factory=list)
    done: int = 0
    last_s: float = 0.0


@dataclass(slots=True)
class _Order:
    spec: TraceOrder
    lat: float  # the restaurant's
    lon: float
    status: AssignmentStatus = AssignmentStatus.PENDING
    excluded: set[str] = field(default_factory=set)
    offers: int = 0
    radius: float = 5.0
    front: bool = False
    pickup_s: float = math.nan
    delivered_s: float = math.nan
    sent_s: float = math.nan
    arrived_s: float = math.nan


def simulate(trace: Trace, config: SimConfig, *, progress: bool = False) -> Metrics:
    """Runs the trace to its end (every order delivered or given up) and measures it."""
    if config.policy == "greedy":
        return _simulate_offers(trace, config, progress=progress)
    if config.policy == "plain":
        tc = replace(config.trips, max_orders=1, release_at_once=True, cover_s=0.0)
        interval = config.plain_interval_s
    else:
        tc, interval = config.trips, config.batch_interval_s
    return simulate_trips(
        trace,
        TripSimConfig(
            trips=tc,
            interval_s=interval,
            accept_prob=config.accept_prob,
            ceil_minutes=config.ceil_minutes,
            seed=config.seed,
            drain_s=config.drain_s,
            label=config.policy,
        ),
        progress=progress,
    )


def _simulate_offers(trace: Trace, config: SimConfig, *, progress: bool = False) -> Metrics:
    """The greedy baseline through the live offer rules, one order per courier."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    policy: Policy = "greedy" if config.policy == "greedy" else "batch"
    match = replace(config.match, policy=policy)
    rules = config.rules
    couriers = {c.id: _Courier(c, c.lat, c.lon) for c in trace.couriers}
    kitchens = {r.id: (r.lat, r.lon) for r in trace.restaurants}
    placed = sorted(trace.orders, key=lambda o: o.placed_s)
    orders = {o.id: _Order(o, *kitchens[o.restaurant_id]) for o in placed}
    events: list[tuple[float, int, str, str, str]] = []
    seq = 0

    def at(t: float, kind: str, a: str = "", b: str = "") -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, a, b))

    for spec in trace.couriers:
        at(spec.on_s, "on", spec.id)
        at(spec.off_s, "off", spec.id)
    for ospec in placed:
        at(ospec.placed_s, "placed", ospec.id)
    last = max([o.placed_s for o in trace.orders] + [0.0])
    end = last + config.drain_s
    at(0.0, "batch")
    pool: dict[str, _Order] = {}
    offers: dict[str, tuple[str, str]] = {}  # offer key -> (order, courier)
    decide_s = 0.0
    batches = 0
    speed = trace.speed_mps
    next_report = time.perf_counter() + 2.0

    def idle(c: _Courier, now: float) -> None:
        c.state = "idle" if now < c.spec.off_s else "off"
        c.idle_since = now

    def leave_idle(c: _Courier, now: float) -> None:
        if c.state == "idle":
            c.idle_s += now - max(c.idle_since, c.spec.on_s)

    while events:
        now, _, kind, a, b = heapq.heappop(events)
        if now > end:
            break
        if kind == "placed":
            pool[a] = orders[a]
        elif kind == "on":
            idle(couriers[a], now)
        elif kind == "off":
            c = couriers[a]
            if c.state == "idle":
                leave_idle(c, now)
                c.state = "off"
        elif kind == "batch":
            if pool or any(e[2] != "batch" for e in events):
                at(now + config.batch_interval_s, "batch")
            free = [c for c in couriers.values() if c.state == "idle"]
            waiting = [
                o
                for o in pool.values()
                if o.status in (AssignmentStatus.PENDING, AssignmentStatus.ESCALATED)
            ]
            if not waiting or not free:
                continue
            pending = [
                PendingOrder(
                    order_id=o.spec.id,
                    pickup_lat=o.lat,
                    pickup_lon=o.lon,
                    dropoff_lat=o.spec.dropoff_lat,
                    dropoff_lon=o.spec.dropoff_lon,
                    ready_at=o.spec.ready_s,
                    radius_miles=o.radius,
                    excluded=frozenset(o.excluded),
                    front=o.front,
                )
                for o in sorted(waiting, key=lambda o: o.spec.placed_s)
            ]
            cands = [
                Candidate(
                    driver_id=c.spec.id,
                    lat=c.lat,
                    lon=c.lon,
                    acceptance=sum(c.answers[-20:]) / len(c.answers[-20:]) if c.answers else 1.0,
                    deliveries=c.done,
                )
                for c in free
            ]
            # Injected I/O: the "ETA service" is straight-line travel at the trace's speed.
            travel = (
                distance_matrix_m(
                    np.array([p.pickup_lat for p in pending]),
                    np.array([p.pickup_lon for p in pending]),
                    np.array([c.lat for c in cands]),
                    np.array([c.lon for c in cands]),
                )
                / speed
            )
            plan = plan_batch(pending, cands, now=now, config=match, travel_s=travel)
            decide_s += plan.decide_s
            batches += 1
            for p in plan.proposals:
                o, c = orders[p.order_id], couriers[p.driver_id]
                o.status = AssignmentStatus.OFFERED
                o.offers += 1
                leave_idle(c, now)
                c.state = "offered"
                key = f"{o.spec.id}#{o.offers}"
                offers[key] = (o.spec.id, c.spec.id)
                roll = rng.random()
                if roll < config.accept_prob:
                    at(now + rng.uniform(*config.answer_s), "accept", key)
                elif roll < config.accept_prob + (1 - config.accept_prob) / 2:
                    at(now + rng.uniform(*config.answer_s), "reject", key)
                else:
                    at(now + rules.expiry_s, "reject", key)
            for oid in plan.unmatched:
                orders[oid].radius = max(orders[oid].radius, match.wide_radius_miles)
        elif kind == "accept":
            oid, cid = offers.pop(a)
            o, c = orders[oid], couriers[cid]
            c.answers.append(True)
            o.status = AssignmentStatus.ASSIGNED
            c.state = "busy"
            del pool[oid]
            to_rest = haversine_m(c.lat, c.lon, o.lat, o.lon) / speed
            o.sent_s, o.arrived_s = now, now + to_rest
            o.pickup_s = max(now + to_rest, o.spec.ready_s) + trace.pickup_service_s
            leg = haversine_m(o.lat, o.lon, o.spec.dropoff_lat, o.spec.dropoff_lon) / speed
            o.delivered_s = o.pickup_s + leg + trace.dropoff_service_s
            at(o.delivered_s, "delivered", oid, cid)
        elif kind == "reject":
            oid, cid = offers.pop(a)
            o, c = orders[oid], couriers[cid]
            c.answers.append(False)
            idle(c, now)
            prior = (
                AssignmentStatus.ESCALATED
                if o.offers > rules.max_attempts
                else (AssignmentStatus.PENDING)
            )
            f = rules.after_failure(
                offers_made=o.offers,
                status=prior,
                radius_miles=o.radius,
                wide=match.wide_radius_miles,
                escalated_radius=match.escalated_radius_miles,
            )
            o.status, o.radius = f.status, f.radius_miles
            o.front = f.status is AssignmentStatus.ESCALATED
            o.excluded.add(cid)
        elif kind == "delivered":
            o, c = orders[a], couriers[b]
            o.status = AssignmentStatus.DELIVERED
            c.lat, c.lon = o.spec.dropoff_lat, o.spec.dropoff_lon
            c.done += 1
            c.last_s = now
            idle(c, now)
        if progress and time.perf_counter() > next_report:
            next_report = time.perf_counter() + 2.0
            n_done = sum(1 for o in orders.values() if o.status is AssignmentStatus.DELIVERED)
            _log.info(
                "replay %s: t=%.1f h, %d/%d delivered, %.0f sim-s per wall-s",
                config.policy,
                now / 3600,
                n_done,
                len(orders),
                now / (time.perf_counter() - started),
            )
    final = (
        now
        if events
        else max(
            [o.delivered_s for o in orders.values() if o.status is AssignmentStatus.DELIVERED]
            + [0.0]
        )
    )
    on_shift = 0.0
    idle_total = 0.0
    for c in couriers.values():
        if c.state == "idle":
            c.idle_s += min(final, c.spec.off_s) - max(c.idle_since, c.spec.on_s)
        # On shift, plus the overtime of finishing the last delivery after it.
        on_shift += max(0.0, max(c.spec.off_s, min(c.last_s, final)) - c.spec.on_s)
        idle_total += max(0.0, c.idle_s)
    done = [o for o in orders.values() if o.status is AssignmentStatus.DELIVERED]
    c2d = np.array([o.delivered_s - o.spec.placed_s for o in done]) if done else np.zeros(1)
    wait = (
        np.array([max(0.0, o.pickup_s - trace.pickup_service_s - o.spec.ready_s) for o in done])
        if done
        else np.zeros(1)
    )
    n = len(orders)
    busy = sum(o.delivered_s - o.sent_s for o in done)
    dwait = [max(0.0, o.spec.ready_s - o.arrived_s) for o in done]
    return Metrics(
        policy=config.policy,
        orders=n,
        delivered=len(done),
        unassigned=n - len(done),
        click_to_door_mean_min=float(c2d.mean() / 60),
        click_to_door_p90_min=float(np.percentile(c2d, 90) / 60),
        on_time_share=float((c2d <= trace.target_click_to_door_s).sum() / max(1, n)),
        food_wait_mean_min=float(wait.mean() / 60),
        courier_idle_share=idle_total / on_shift if on_shift else 0.0,
        offers_per_order=sum(o.offers for o in orders.values()) / max(1, n),
        decide_wall_s=decide_s,
        batches=batches,
        sim_hours=final / 3600,
        wall_s=time.perf_counter() - started,
        trips=len(done),
        orders_per_trip=1.0 if done else 0.0,
        courier_hours_per_order=busy / 3600 / max(1, len(done)),
        utilisation=busy / on_shift if on_shift else 0.0,
        driver_wait_mean_min=sum(dwait) / max(1, len(dwait)) / 60,
    )
