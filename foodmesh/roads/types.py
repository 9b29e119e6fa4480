"""Plain data of the road graph: road classes, snapped points, routes and their steps."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LatLon", "RoadClass", "Route", "Snap", "Step"]

LatLon = tuple[float, float]


class RoadClass(enum.IntEnum):
    """Kind of road, from fast to slow (OSM ``highway=*`` folds into these)."""

    MOTORWAY = 0
    PRIMARY = 1
    SECONDARY = 2
    RESIDENTIAL = 3
    SERVICE = 4


#: Free-flow speed (m/s) of a class when the data gives none.
DEFAULT_SPEED_MPS: dict[RoadClass, float] = {
    RoadClass.MOTORWAY: 26.8,  # 60 mph
    RoadClass.PRIMARY: 15.6,  # 35 mph
    RoadClass.SECONDARY: 11.2,  # 25 mph
    RoadClass.RESIDENTIAL: 8.9,  # 20 mph
    RoadClass.SERVICE: 4.5,  # 10 mph
}


@dataclass(frozen=True, slots=True)
class Snap:
    """A point moved onto the nearest road.

    ``edge`` runs from ``source`` to ``target``; the point sits ``fraction`` of the way
    along it. ``twin`` is the edge of the opposite direction on a two-way street, or -1.
    ``distance_m`` is how far the original point was from the road.
    """

    lat: float
    lon: float
    edge: int
    twin: int
    source: int
    target: int
    fraction: float
    distance_m: float
    street: str


@dataclass(frozen=True, slots=True)
class Step:
    """One instruction of turn-by-turn navigation.

    ``maneuver`` is one of ``depart``, ``straight``, ``turn left``, ``turn right``,
    ``slight left``, ``slight right``, ``u-turn``, ``arrive``; ``distance_m`` and
    ``duration_s`` are of the stretch that follows it on ``street``; ``lat``/``lon``
    is where the maneuver happens.
    """

    maneuver: str
    street: str
    distance_m: float
    duration_s: float
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Route:
    """The fastest path between two snapped points at a departure time.

    ``duration_s`` is with the traffic model and overrides applied, ``free_flow_s``
    the same path at free-flow speeds; ``traffic_multiplier`` is their ratio.
    ``path`` starts at the snapped origin and ends at the snapped destination.
    """

    distance_m: float
    duration_s: float
    free_flow_s: float
    path: tuple[LatLon, ...]
    polyline: str
    steps: tuple[Step, ...]
    origin: Snap
    destination: Snap
    edges: tuple[int, ...]

    @property
    def traffic_multiplier(self) -> float:
        return self.duration_s / self.free_flow_s if self.free_flow_s > 0 else 1.0
