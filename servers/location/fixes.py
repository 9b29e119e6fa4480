"""A driver's GPS fix: validation, ordering and per-driver throttling. Pure, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = ["Fix", "Rejection", "Throttle", "check_fix"]

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


def _finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


def check_fix(fix: Fix, *, last_device_ts: float | None) -> Rejection | None:
    """None when ``fix`` is acceptable, else the reason (the first that applies)."""
    if not _finite(fix.lat, fix.lon) or not (-90 <= fix.lat <= 90 and -180 <= fix.lon <= 180):
        return Rejection.BAD_COORDINATES
    if not _finite(fix.accuracy_m) or fix.accuracy_m < 0:
        return Rejection.BAD_ACCURACY
    if not _finite(fix.heading_deg) or not 0 <= fix.heading_deg < 360:
        return Rejection.BAD_HEADING
    if not _finite(fix.speed_mps) or fix.speed_mps < 0:
        return Rejection.BAD_SPEED
    if not _finite(fix.device_ts) or fix.device_ts > fix.received_ts + MAX_FUTURE_S:
        return Rejection.IN_THE_FUTURE
    if fix.device_ts < fix.received_ts - MAX_AGE_S:
        return Rejection.TOO_OLD
    if last_device_ts is not None and fix.device_ts <= last_device_ts:
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
