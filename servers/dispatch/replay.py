"""A city's day through the live dispatch code, on a virtual clock: ``foodmesh replay``'s engine.

Policies, all three the planner the live service runs (:func:`servers.dispatch.trips.plan_trips`)
driven by the trace's physics (:mod:`servers.dispatch.tripsim`): ``batch`` (ours) —
bundles of up to K orders, released at the kitchen's time, over a horizon of drivers
about to be free, trips under way joined; ``plain``, the baseline the Grubhub
instances' figures use (one order a trip, all released at once, a 60 s batch, never
revised); ``greedy``, the nearest-driver baseline (one order a trip, at once, every
round the orders in placement order each take the nearest idle courier).

The trace format is ``foodmesh-trace/1``, read by :mod:`foodmesh.core.trace`; ``generate_trace``
writes one (a synthetic city with a lunch and a dinner peak) for tests and
benchmarks. Metrics are those TRACE.md lists. The command itself (its options, the
table it prints) is :mod:`foodmesh.commands.replay`.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from foodmesh.core.trace import FORMAT, Trace, TraceError, load_trace
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
    batch_interval_s: float = 2.0
    #: Probability a courier accepts an offer (a decline excludes them from those orders).
    accept_prob: float = 0.9
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


def simulate(trace: Trace, config: SimConfig, *, progress: bool = False) -> Metrics:
    """Runs the trace to its end (every order delivered or given up) and measures it."""
    solver = "optimal"
    if config.policy == "greedy":
        # First come, first served: each order (by placement) takes the nearest idle driver.
        tc = replace(config.trips, max_orders=1, release_at_once=True, cover_s=0.0,
                     objective="pickup", first_come=True)  # fmt: skip
        interval, solver = config.batch_interval_s, "greedy"
    elif config.policy == "plain":
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
            solver=solver,
        ),
        progress=progress,
    )
