"""When a driver gets a new route: the design's rule, pure.

A driver is rerouted when their fix is more than ``off_route_m`` (500 m) from the
route they follow, or when the fastest route from where they are now would change
their ETA by more than ``eta_change_s`` (5 min). Off-route is checked first: a driver
who left the route needs a new one whatever the clock says.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foodmesh.core.geo import EARTH_RADIUS_M

__all__ = [
    "ETA_CHANGE_S",
    "OFF_ROUTE_M",
    "Reason",
    "RerouteDecision",
    "decide",
    "deviation_m",
]

OFF_ROUTE_M = 500.0
ETA_CHANGE_S = 300.0


class Reason(enum.Enum):
    NONE = 0
    OFF_ROUTE = 1
    ETA_CHANGED = 2


@dataclass(frozen=True, slots=True)
class RerouteDecision:
    reason: Reason
    deviation_m: float
    #: New ETA minus the one the driver was given, seconds (None when not known).
    eta_change_s: float | None

    @property
    def reroute(self) -> bool:
        return self.reason is not Reason.NONE


def deviation_m(lat: float, lon: float, path: Sequence[tuple[float, float]]) -> float:
    """Metres from (lat, lon) to the nearest point of the polyline ``path``.

    Uses an equirectangular projection around the fix: exact to well under a metre
    at the scale of a city, and vectorised over the segments.
    """
    if not path:
        return math.inf
    pts = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    k = math.radians(1.0) * EARTH_RADIUS_M
    kx = k * math.cos(math.radians(lat))
    y = (pts[:, 0] - lat) * k
    x = (pts[:, 1] - lon) * kx
    if len(pts) == 1:
        return float(math.hypot(x[0], y[0]))
    ax, ay, bx, by = x[:-1], y[:-1], x[1:], y[1:]
    dx, dy = bx - ax, by - ay
    seg2 = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(seg2 > 0, -(ax * dx + ay * dy) / seg2, 0.0)
    t = np.clip(t, 0.0, 1.0)
    px, py = ax + t * dx, ay + t * dy
    return float(np.sqrt(np.min(px * px + py * py)))


def decide(
    *,
    deviation: float,
    current_eta_s: float | None,
    new_eta_s: float | None,
    off_route_m: float = OFF_ROUTE_M,
    eta_change_s: float = ETA_CHANGE_S,
) -> RerouteDecision:
    """The design's rule: off the route by more than 500 m, else the ETA moved by more than 5 min.

    ``current_eta_s`` and ``new_eta_s`` are arrival times (any common epoch, seconds);
    either being None means the ETA test cannot be made.
    """
    change = None
    if current_eta_s is not None and new_eta_s is not None:
        change = new_eta_s - current_eta_s
    if deviation > off_route_m:
        return RerouteDecision(Reason.OFF_ROUTE, deviation, change)
    if change is not None and abs(change) > eta_change_s:
        return RerouteDecision(Reason.ETA_CHANGED, deviation, change)
    return RerouteDecision(Reason.NONE, deviation, change)
