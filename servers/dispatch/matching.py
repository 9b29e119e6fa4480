"""One batch of matching: pending orders × available drivers → proposed offers. Pure.

This is the decision both the live service (``engine.py``, every batch interval
per region it leads) and ``foodmesh replay`` (``replay.py``, on a virtual clock)
run: the same filters, scores and solver, with the clock (``now``) and the
travel times handed in.

Filters, per pair:

- radius: the order's own (5 mi; 10 after a batch found it nobody; 15 once
  escalated); widened to 10 mi in the batch itself when fewer than
  ``min_candidates`` drivers are inside it;
- the vehicle fits the trip (to the restaurant, then to the customer): walking
  at most 2 mi, a bicycle 6, a scooter 12, a car any;
- the driver did not decline (or let lapse) an offer of this order before;
- acceptance rate ≥ 0.70 — relaxed per order: when no driver left after the
  other filters reaches 0.70, that order considers them all (the score's
  acceptance term still ranks the likelier ones first), so a quiet area with
  new or choosy drivers is served late rather than never.

Orders moved to the front of the pool (a driver lost them) and escalated
orders have their costs halved, so when drivers are scarce they are matched first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from foodmesh.v1 import common_pb2
from servers.dispatch import assignment, scoring
from servers.dispatch.scoring import Arr, Weights

__all__ = [
    "BatchPlan",
    "Candidate",
    "MatchConfig",
    "PendingOrder",
    "Policy",
    "Proposal",
    "plan_batch",
    "trip_limit_miles",
]

VT = common_pb2.VehicleType
Policy = Literal["batch", "greedy"]

#: Longest trip (to pickup + to dropoff) each vehicle takes, miles.
_TRIP_LIMIT: dict[int, float] = {
    VT.VEHICLE_TYPE_WALKING: 2.0,
    VT.VEHICLE_TYPE_BICYCLE: 6.0,
    VT.VEHICLE_TYPE_SCOOTER: 12.0,
}


def trip_limit_miles(vehicle_type: int) -> float:
    return _TRIP_LIMIT.get(vehicle_type, math.inf)


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order waiting for a driver, as matching sees it."""

    order_id: str
    pickup_lat: float
    pickup_lon: float
    dropoff_lat: float
    dropoff_lon: float
    #: When the food is ready, epoch seconds.
    ready_at: float
    radius_miles: float = 5.0
    excluded: frozenset[str] = frozenset()
    #: Put back at the front of the pool (its driver was lost) or escalated.
    front: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """An available driver, as matching sees it."""

    driver_id: str
    lat: float
    lon: float
    vehicle_type: int = VT.VEHICLE_TYPE_CAR
    rating: float = 5.0
    deliveries: int = 0
    acceptance: float = 1.0


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Matching's knobs (``FOODMESH_DISPATCH_*``)."""

    weights: Weights = field(default_factory=Weights)
    radius_miles: float = 5.0
    wide_radius_miles: float = 10.0
    escalated_radius_miles: float = 15.0
    min_candidates: int = 3
    min_acceptance: float = 0.70
    policy: Policy = "batch"


@dataclass(frozen=True, slots=True)
class Proposal:
    """Offer this order to this driver."""

    order_id: str
    driver_id: str
    score: float
    #: Driver to restaurant.
    to_pickup_s: float
    to_pickup_miles: float
    #: Restaurant to customer.
    to_dropoff_s: float
    to_dropoff_miles: float
    #: When the driver should have the food (arrival, or the food being ready if later).
    pickup_at: float
    delivery_at: float
    #: Why: the score's weighted parts ``(name, weight, value)``, the drivers who could
    #: have taken it, and the orders of the trip it joins (a stacked offer).
    parts: tuple[tuple[str, float, float], ...] = ()
    alternatives: int = 0
    bundle: tuple[str, ...] = ()
    #: The planner's cost, minutes (the parts' weighted sum).
    cost: float = 0.0

    def why(self) -> dict[str, Any]:
        """The explanation as plain data (stored with the offer, sent on it)."""
        return {
            "score": round(self.score, 4),
            "cost": round(self.cost, 4),
            "parts": [[n, w, round(v, 4)] for n, w, v in self.parts],
            "alternatives": self.alternatives,
            "bundle": list(self.bundle),
            "to_pickup_s": round(self.to_pickup_s, 1),
            "pickup_at": round(self.pickup_at, 1),
            "delivery_at": round(self.delivery_at, 1),
        }


@dataclass(frozen=True, slots=True)
class BatchPlan:
    proposals: list[Proposal]
    #: Orders that found no feasible driver: retried next batch with a wider radius.
    unmatched: list[str]
    #: Pairs considered (inside the radius and feasible).
    feasible_pairs: int
    #: Wall seconds spent scoring and solving.
    decide_s: float


def _column(values: Sequence[float]) -> Arr:
    return np.asarray(values, dtype=np.float64)


def plan_batch(
    orders: Sequence[PendingOrder],
    drivers: Sequence[Candidate],
    *,
    now: float,
    config: MatchConfig,
    demand: Mapping[str, float] | None = None,
    travel_s: Arr | None = None,
) -> BatchPlan:
    """The offers to make now: at most one per order and one per driver.

    ``demand`` maps an order id to the recent orders around its dropoff (for the
    opportunity term). ``travel_s`` is the driver→restaurant travel time matrix
    (orders × drivers) when the ETA service gave one; else the heuristic.
    """
    started = time.perf_counter()
    n, m = len(orders), len(drivers)
    if n == 0:
        return BatchPlan([], [], 0, 0.0)
    if m == 0:
        return BatchPlan([], [o.order_id for o in orders], 0, time.perf_counter() - started)
    o_lat = _column([o.pickup_lat for o in orders])
    o_lon = _column([o.pickup_lon for o in orders])
    d_lat = _column([d.lat for d in drivers])
    d_lon = _column([d.lon for d in drivers])
    to_pickup_m = scoring.distance_matrix_m(o_lat, o_lon, d_lat, d_lon)
    to_pickup_mi = scoring.miles(to_pickup_m)
    leg_m = scoring.haversine_pairs_m(
        o_lat,
        o_lon,
        _column([o.dropoff_lat for o in orders]),
        _column([o.dropoff_lon for o in orders]),
    )
    leg_mi = scoring.miles(leg_m)

    radius = _column([o.radius_miles for o in orders])[:, None]
    inside = to_pickup_mi <= radius
    few = inside.sum(axis=1) < config.min_candidates
    radius = np.where(few[:, None], np.maximum(radius, config.wide_radius_miles), radius)
    feasible = to_pickup_mi <= radius

    limit = _column([trip_limit_miles(d.vehicle_type) for d in drivers])
    feasible &= (to_pickup_mi + leg_mi[:, None]) <= limit[None, :]
    index = {d.driver_id: j for j, d in enumerate(drivers)}
    for i, o in enumerate(orders):
        for who in o.excluded:
            j = index.get(who)
            if j is not None:
                feasible[i, j] = False
    acceptance = _column([d.acceptance for d in drivers])
    keen: npt.NDArray[np.bool_] = np.asarray(acceptance >= config.min_acceptance)
    strict: npt.NDArray[np.bool_] = feasible & keen[None, :]
    relaxed: npt.NDArray[np.bool_] = np.asarray(~strict.any(axis=1))
    feasible = np.where(relaxed[:, None], feasible, strict)

    speed = _column([scoring.SPEED_MPS.get(d.vehicle_type, 6.9) for d in drivers])
    if travel_s is None:
        travel_s = scoring.heuristic_travel_s(to_pickup_m, speed[None, :])
    ready_in_min = _column([(o.ready_at - now) / 60.0 for o in orders])[:, None]
    demand = demand or {}
    score = scoring.match_score(
        config.weights,
        miles=to_pickup_mi,
        eta_min=travel_s / 60.0,
        ready_in_min=ready_in_min,
        rating=_column([d.rating for d in drivers])[None, :],
        deliveries=_column([float(d.deliveries) for d in drivers])[None, :],
        acceptance=acceptance[None, :],
        demand=_column([float(demand.get(o.order_id, 0)) for o in orders])[:, None],
    )
    cost = 1.0 - score
    front = _column([0.5 if o.front else 1.0 for o in orders])[:, None]
    cost = cost * front

    if config.policy == "greedy":
        # The baseline: first come, first served; each order takes its nearest driver.
        order_rank = sorted(range(n), key=lambda i: (not orders[i].front, i))
        sub_pairs = assignment.greedy(
            cost[order_rank], feasible[order_rank], key=to_pickup_m[order_rank]
        )
        pairs = [(order_rank[i], j) for i, j in sub_pairs]
    else:
        pairs = assignment.solve(cost, feasible)

    proposals: list[Proposal] = []
    matched: set[int] = set()
    alternatives = feasible.sum(axis=1)
    w = config.weights
    if pairs:
        pi = np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs))
        pj = np.fromiter((j for _, j in pairs), dtype=np.int64, count=len(pairs))
        t_drop_all = scoring.heuristic_travel_s(leg_m[pi], speed[pj])
    for k, (i, j) in enumerate(pairs):
        o, d = orders[i], drivers[j]
        matched.add(i)
        t_pick = float(travel_s[i, j])
        t_drop = float(t_drop_all[k])
        pickup_at = max(now + t_pick, o.ready_at)
        one = (
            to_pickup_mi[i, j : j + 1],
            _column([t_pick / 60.0]),
            ready_in_min[i],
            _column([d.rating]),
            _column([float(d.deliveries)]),
            acceptance[j : j + 1],
            _column([float(demand.get(o.order_id, 0))]),
        )
        parts = (
            ("distance", w.distance, float(scoring.distance_score(one[0])[0])),
            ("eta", w.eta, float(scoring.eta_fit_score(one[1], one[2])[0])),
            ("quality", w.quality, float(scoring.quality_score(one[3], one[4])[0])),
            ("acceptance", w.acceptance, float(scoring.acceptance_score(one[5])[0])),
            ("opportunity", w.opportunity, float(scoring.opportunity_score(one[6])[0])),
        )  # fmt: skip
        proposals.append(
            Proposal(
                order_id=o.order_id,
                driver_id=d.driver_id,
                score=float(score[i, j]),
                to_pickup_s=t_pick,
                to_pickup_miles=float(to_pickup_mi[i, j]),
                to_dropoff_s=t_drop,
                to_dropoff_miles=float(leg_mi[i]),
                pickup_at=pickup_at,
                delivery_at=pickup_at + t_drop,
                parts=parts,
                alternatives=int(alternatives[i]),
            )
        )
    unmatched = [o.order_id for i, o in enumerate(orders) if i not in matched]
    return BatchPlan(proposals, unmatched, int(feasible.sum()), time.perf_counter() - started)
