"""A driver's GPS fix: validation, ordering, per-driver throttling, its cell. Pure, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from cachetools import LRUCache

from foodmesh.core.geo import geohash_decode, geohash_encode

__all__ = ["CellCache", "Fix", "Rejection", "Throttle", "check_fix"]

#: A fix from further ahead than this is a device clock that is wrong.
MAX_FUTURE_S = 60.0
#: A fix older than this is not "live" any more (e.g. replayed from an offline buffer).
MAX_AGE_S = 600.0


@dataclass(frozen=True, slots=True)
class Fix:
    """One position report, as the ingest pipeline carries it."""

    driver_id: str
    lat: float
    lon: float
    accuracy_m: float
    heading_deg: float
    speed_mps: float
    #: Device time of the fix, seconds since the epoch.
    device_ts: float
    #: Server receive time, seconds since the epoch.
    received_ts: float
    order_id: str = ""


class Rejection(Enum):
    """Why a fix was not accepted; the ack carries it back to the app."""

    BAD_COORDINATES = "coordinates out of range or not a number"
    BAD_ACCURACY = "accuracy must be a finite number >= 0"
    BAD_HEADING = "heading must be within [0, 360)"
    BAD_SPEED = "speed must be a finite number >= 0"
    IN_THE_FUTURE = f"timestamp more than {MAX_FUTURE_S:g} s in the future"
    TOO_OLD = f"timestamp more than {MAX_AGE_S / 60:g} min old"
    OUT_OF_ORDER = "timestamp not after the driver's last accepted fix"
    THROTTLED = "more fixes per second than allowed"


def check_fix(fix: Fix, *, last_device_ts: float | None) -> Rejection | None:
    """None when ``fix`` is acceptable, else the reason (the first that applies)."""
    # Comparisons with NaN are false, so each range test below also refuses NaN; inf
    # needs its own test only where a range is open-ended. (Once per fix: kept lean.)
    lat, lon = fix.lat, fix.lon
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return Rejection.BAD_COORDINATES
    if not 0.0 <= fix.accuracy_m < math.inf:
        return Rejection.BAD_ACCURACY
    if not 0.0 <= fix.heading_deg < 360.0:
        return Rejection.BAD_HEADING
    if not 0.0 <= fix.speed_mps < math.inf:
        return Rejection.BAD_SPEED
    ts = fix.device_ts
    if not ts <= fix.received_ts + MAX_FUTURE_S:
        return Rejection.IN_THE_FUTURE
    if ts < fix.received_ts - MAX_AGE_S:
        return Rejection.TOO_OLD
    if last_device_ts is not None and ts <= last_device_ts:
        return Rejection.OUT_OF_ORDER
    return None


class Throttle:
    """A token bucket per stream: ``rate`` fixes/s sustained, ``burst`` at once.

    A flood is answered with THROTTLED rejections at once: never queued, so a
    misbehaving app costs a counter, not memory.
    """

    __slots__ = ("burst", "rate", "_tokens", "_at")

    def __init__(self, *, rate: float = 5.0, burst: float = 10.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def allow(self, now: float) -> bool:
        """Takes one token at monotonic time ``now``; False when none is left."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class CellCache:
    """The geohash-6 cell of each driver's latest position, with the cell's bounds.

    A driver stays in one cell (about 1.2 x 0.6 km) for many fixes, so most fixes
    cost four comparisons instead of an encoding. The bounds are the exact
    (dyadic) cell edges, compared the way the encoder compares them: the answer is
    always ``geohash_encode(lat, lon, 6)``. Positions must be valid (checked first).
    At most ``max_drivers`` are kept, the least recently seen going first.
    """

    __slots__ = ("max_drivers", "_cells")

    def __init__(self, *, max_drivers: int = 200_000) -> None:
        self.max_drivers = max_drivers
        self._cells: LRUCache[str, tuple[float, float, float, float, str]] = LRUCache(max_drivers)

    def cell(self, driver_id: str, lat: float, lon: float) -> str:
        try:
            c = self._cells[driver_id]  # not .get(): it costs a second lookup
        except KeyError:
            pass
        else:
            if c[0] <= lat < c[1] and c[2] <= lon < c[3]:
                return c[4]
        gh = geohash_encode(lat, lon, 6)
        self._cells[driver_id] = (*geohash_decode(gh), gh)
        return gh
