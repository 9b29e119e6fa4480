"""Drivers' routes, pure: which leg is active, what to do next for it, the RouteUpdate.

A driver with an active delivery has one *leg*: to the restaurant from the
assignment until they arrive there, to the customer from pickup until they arrive
there. For that leg the driver is sent a route (``RouteUpdate``) as soon as one can be
had, and then, while new fixes come in, the route is checked against the ETA
service's reroute rule at most every ``every_s`` (12 s by default).

Without a road route (the ETA service is not configured, fails, or does not answer
in time) the driver gets a *stand-in*: the straight line to the stop, flagged
``source = STRAIGHT_LINE``, with a rough distance and duration and no steps. The
driver always learns the leg, its stop and a rough ETA, and the session never waits
on the ETA service. When the ETA service is configured, a stand-in is retried every
``every_s`` and replaced by the road route (reason ``INITIAL``) once it answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf import duration_pb2

from foodmesh.core.geo import haversine_m
from foodmesh.roads import encode_polyline
from foodmesh.v1 import common_pb2, dispatch_pb2, eta_pb2
from servers.dispatch.model import Assignment
from servers.dispatch.offers import AssignmentStatus
from servers.dispatch.scoring import DETOUR, SPEED_MPS

__all__ = [
    "ARRIVING_S",
    "Leg",
    "LegState",
    "Next",
    "leg_of",
    "leg_state",
    "next_step",
    "arriving",
    "seconds_left",
    "reason_of",
    "straight_line",
    "update_from_reroute",
    "update_from_route",
]

R = dispatch_pb2.RouteUpdateReason
ES = eta_pb2.EstimateSource


class Leg(enum.IntEnum):
    TO_RESTAURANT = dispatch_pb2.ROUTE_LEG_TO_RESTAURANT
    TO_CUSTOMER = dispatch_pb2.ROUTE_LEG_TO_CUSTOMER


def leg_of(status: AssignmentStatus) -> Leg | None:
    """The leg a driver is driving in this assignment status, if any."""
    if status is AssignmentStatus.ASSIGNED:
        return Leg.TO_RESTAURANT
    if status is AssignmentStatus.PICKED_UP:
        return Leg.TO_CUSTOMER
    return None


@dataclass(slots=True)
class LegState:
    """What is known of one driver's active leg (mutable: the navigator's record).

    Times (``tried_at``, ``checked_at``, ``fix_at``) are on one monotonic clock.
    """

    driver_id: str
    order_id: str
    leg: Leg
    dest: tuple[float, float]
    label: str
    #: Where the leg starts when no fix of the driver is known (the restaurant, for
    #: the leg to the customer); None for the leg to the restaurant.
    origin_hint: tuple[float, float] | None = None
    vehicle_type: int = common_pb2.VEHICLE_TYPE_CAR
    #: The route last sent; None until one is.
    update: dispatch_pb2.RouteUpdate | None = None
    #: The route sent is a straight-line stand-in.
    stand_in: bool = False
    #: When a route was last asked for.
    tried_at: float | None = None
    #: When the route was last sent or checked.
    checked_at: float | None = None
    #: The driver's latest fix and when it came in.
    fix: tuple[float, float] | None = None
    fix_at: float | None = None
    #: The customer was told the driver is arriving (``dispatch.v1.arriving``).
    arriving_said: bool = False


#: Under this many seconds from the customer, the driver is "arriving".
ARRIVING_S = 180.0


def seconds_left(st: LegState) -> float | None:
    """The live ETA to the leg's stop from the driver's latest fix (the straight line with
    the scoring detour, at the vehicle's speed); None without a fix."""
    if st.fix is None:
        return None
    meters = haversine_m(st.fix[0], st.fix[1], st.dest[0], st.dest[1]) * DETOUR
    return meters / max(SPEED_MPS.get(st.vehicle_type, SPEED_MPS[common_pb2.VEHICLE_TYPE_CAR]), 0.1)


def arriving(st: LegState, *, within_s: float = ARRIVING_S) -> bool:
    """True when the customer should now hear their driver is arriving (once per leg)."""
    if st.leg is not Leg.TO_CUSTOMER or st.arriving_said:
        return False
    left = seconds_left(st)
    return left is not None and left < within_s


def leg_state(a: Assignment, leg: Leg, *, vehicle_type: int) -> LegState:
    """A fresh record of ``a``'s leg ``leg``."""
    if leg is Leg.TO_RESTAURANT:
        dest, label, hint = (a.pickup_lat, a.pickup_lon), a.pickup_label, None
    else:
        dest, label = (a.dropoff_lat, a.dropoff_lon), a.dropoff_label
        hint = (a.pickup_lat, a.pickup_lon)
    return LegState(
        driver_id=a.driver_id,
        order_id=a.order_id,
        leg=leg,
        dest=dest,
        label=label,
        origin_hint=hint,
        vehicle_type=vehicle_type,
    )


class Next(enum.Enum):
    WAIT = "wait"
    #: Ask for a (new) route from where the driver is.
    ROUTE = "route"
    #: Check the route sent against the driver's latest fix.
    CHECK = "check"


def next_step(st: LegState, *, now: float, every_s: float, can_route: bool) -> Next:
    """What the navigator does for ``st`` now.

    - no route sent yet: ask at once, then again when a fix comes in (the origin may
      have been unknown) or ``every_s`` later;
    - a stand-in sent: ask again every ``every_s`` while the ETA service is configured;
    - a road route sent: check it when a fix newer than the last check is there and
      ``every_s`` has passed since the last check (so at most every ``every_s``).
    """
    if st.update is None:
        if st.tried_at is None or now - st.tried_at >= every_s:
            return Next.ROUTE
        if st.fix_at is not None and st.fix_at > st.tried_at:
            return Next.ROUTE
        return Next.WAIT
    if not can_route:
        return Next.WAIT
    if st.stand_in:
        return Next.ROUTE if st.tried_at is None or now - st.tried_at >= every_s else Next.WAIT
    last = st.checked_at if st.checked_at is not None else st.tried_at
    if st.fix_at is None or (last is not None and st.fix_at <= last):
        return Next.WAIT
    if last is None or now - last >= every_s:
        return Next.CHECK
    return Next.WAIT


def reason_of(reason: int) -> int | None:
    """The RouteUpdateReason of an ETA RerouteReason; None when there is no reroute."""
    if reason == eta_pb2.REROUTE_REASON_OFF_ROUTE:
        return R.ROUTE_UPDATE_REASON_OFF_ROUTE
    if reason == eta_pb2.REROUTE_REASON_ETA_CHANGED:
        return R.ROUTE_UPDATE_REASON_ETA_CHANGED
    return None


def _seconds(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(max(0.0, s) * 1e9))
    return d


def _base(st: LegState, *, reason: int) -> dispatch_pb2.RouteUpdate:
    u = dispatch_pb2.RouteUpdate(order_id=st.order_id, leg=int(st.leg), reason=reason)  # type: ignore[arg-type]
    u.destination.location.lat, u.destination.location.lon = st.dest
    u.destination.label = st.label
    return u


def update_from_route(
    resp: eta_pb2.RouteResponse, st: LegState, *, reason: int, now: float
) -> dispatch_pb2.RouteUpdate:
    """The RouteUpdate of a Route answer (steps included when the answer has them)."""
    u = _base(st, reason=reason)
    u.polyline = resp.polyline
    u.distance_meters = resp.distance_meters
    u.duration.CopyFrom(_seconds(resp.duration_seconds))
    u.eta.FromNanoseconds(int((now + resp.duration_seconds) * 1e9))
    u.steps.extend(resp.steps)
    u.source = resp.source or ES.ESTIMATE_SOURCE_ROAD_GRAPH
    return u


def update_from_reroute(
    resp: eta_pb2.CheckRerouteResponse, st: LegState, *, reason: int
) -> dispatch_pb2.RouteUpdate:
    """The RouteUpdate of a CheckReroute answer alone (no steps: used when Route fails)."""
    u = _base(st, reason=reason)
    u.polyline = resp.polyline
    u.distance_meters = resp.distance_meters
    u.duration.CopyFrom(_seconds(resp.duration_seconds))
    u.eta.CopyFrom(resp.eta)
    u.source = ES.ESTIMATE_SOURCE_ROAD_GRAPH
    return u


def straight_line(
    origin: tuple[float, float], st: LegState, *, reason: int, now: float
) -> dispatch_pb2.RouteUpdate:
    """The stand-in: the straight line to the stop, timed like the scoring heuristic."""
    meters = haversine_m(origin[0], origin[1], st.dest[0], st.dest[1]) * DETOUR
    secs = meters / max(SPEED_MPS.get(st.vehicle_type, SPEED_MPS[common_pb2.VEHICLE_TYPE_CAR]), 0.1)
    u = _base(st, reason=reason)
    u.polyline = encode_polyline([origin, st.dest])
    u.distance_meters = meters
    u.duration.CopyFrom(_seconds(secs))
    u.eta.FromNanoseconds(int((now + secs) * 1e9))
    u.source = ES.ESTIMATE_SOURCE_STRAIGHT_LINE
    return u
