"""Time-of-day traffic per road class, and live overrides (incidents, closures). Pure."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from foodmesh.roads.types import RoadClass

__all__ = ["Overrides", "TrafficModel", "seed_base_multiplier"]


def seed_base_multiplier(weekday: int, hour: int) -> float:
    """The design's table: weekday rush 1.5x, weekday lunch 1.2x, weekend brunch 1.3x, else 1.0/0.9.

    ``weekday`` is Monday=0; ``hour`` is local wall-clock 0..23.
    """
    if weekday < 5:
        if 7 <= hour <= 9 or 17 <= hour <= 19:
            return 1.5
        if 12 <= hour <= 13:
            return 1.2
        return 1.0
    if 11 <= hour <= 14:
        return 1.3
    return 0.9


#: How strongly each class feels congestion: a multiplier m becomes 1 + (m - 1) * s.
#: Rush hour (1.5x) is then 2.0x on motorways and arterials and 1.5x in side streets.
DEFAULT_SENSITIVITY: Mapping[RoadClass, float] = {
    RoadClass.MOTORWAY: 2.0,
    RoadClass.PRIMARY: 2.0,
    RoadClass.SECONDARY: 1.5,
    RoadClass.RESIDENTIAL: 1.0,
    RoadClass.SERVICE: 0.5,
}


@dataclass(frozen=True, slots=True)
class TrafficModel:
    """Time-of-day travel-time multipliers per road class.

    The base is the design's weekday/weekend table (:func:`seed_base_multiplier`),
    scaled per class by ``sensitivity``; ``scale`` multiplies the whole table's
    excess over free flow (0 = free flow everywhere). Local time is in ``timezone``;
    a naive datetime is taken as local wall time already.
    """

    timezone: str = "America/Los_Angeles"
    sensitivity: Mapping[RoadClass, float] = field(
        default_factory=lambda: dict(DEFAULT_SENSITIVITY)
    )
    scale: float = 1.0

    def local(self, when: dt.datetime) -> dt.datetime:
        if when.tzinfo is None:
            return when
        return when.astimezone(ZoneInfo(self.timezone))

    def multiplier(self, road_class: RoadClass | int, when: dt.datetime) -> float:
        """The multiplier on free-flow travel time of ``road_class`` at ``when``."""
        t = self.local(when)
        return self._scaled(RoadClass(road_class), seed_base_multiplier(t.weekday(), t.hour))

    def _scaled(self, road_class: RoadClass, base: float) -> float:
        s = self.sensitivity.get(road_class, 1.0)
        return max(0.1, 1.0 + (base - 1.0) * s * self.scale)

    def multipliers(self, when: dt.datetime) -> npt.NDArray[np.float64]:
        """Multipliers of every class at ``when``, indexed by ``RoadClass`` value."""
        t = self.local(when)
        base = seed_base_multiplier(t.weekday(), t.hour)
        return np.array([self._scaled(c, base) for c in RoadClass], dtype=np.float64)

    def bucket(self, when: dt.datetime) -> tuple[int, int]:
        """(weekday, hour) in local time: departures in one bucket share multipliers."""
        t = self.local(when)
        return t.weekday(), t.hour


@dataclass(frozen=True, slots=True)
class Overrides:
    """Live conditions on top of the traffic model: slowed and closed edges.

    ``slowdowns`` maps an edge id to a factor >= 1 on its travel time (an incident);
    ``closed`` edges cannot be used at all. Immutable and hashable, so a graph can
    cache the weights it derives from one.
    """

    slowdowns: tuple[tuple[int, float], ...] = ()
    closed: frozenset[int] = frozenset()

    @staticmethod
    def of(
        *, slowdowns: Mapping[int, float] | None = None, closed: Iterable[int] = ()
    ) -> Overrides:
        """Builds overrides from a mapping and an iterable (validated)."""
        items: dict[int, float] = {}
        for e, f in (slowdowns or {}).items():
            if not math.isfinite(f) or f < 1.0:
                raise ValueError(f"slowdown of edge {e} must be a finite factor >= 1, got {f}")
            items[int(e)] = max(items.get(int(e), 1.0), float(f))
        return Overrides(tuple(sorted(items.items())), frozenset(int(e) for e in closed))

    def with_closed(self, edges: Iterable[int]) -> Overrides:
        return Overrides(self.slowdowns, self.closed | frozenset(int(e) for e in edges))

    def with_slowdown(self, edges: Iterable[int], factor: float) -> Overrides:
        merged = dict(self.slowdowns)
        for e in edges:
            merged[int(e)] = max(merged.get(int(e), 1.0), factor)
        return Overrides.of(slowdowns=merged, closed=self.closed)

    def __bool__(self) -> bool:
        return bool(self.slowdowns or self.closed)
