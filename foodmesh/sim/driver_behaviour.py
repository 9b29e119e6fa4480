"""Simulated drivers' decisions: when they work, which offers they take, when they go silent.

Every choice draws from the driver's own random stream, so a run with the same seed
makes the same choices in the same situations.
"""

from __future__ import annotations

import datetime as dt
import math
import random

from foodmesh.sim.city import DriverSpec
from foodmesh.sim.driver_motion import TZ
from foodmesh.v1 import dispatch_pb2

__all__ = ["Behaviour", "acceptance_probability", "shift_windows"]


def acceptance_probability(base: float, distance_miles: float, earnings_minor: int) -> float:
    """How likely a driver takes an offer: their own rate, less for far or poorly paid work.

    Fair pay is about $2 plus $1.20 a mile; an offer paying that keeps ``base``,
    one paying half loses a third of it; past 4 miles every extra mile costs more.
    """
    d = max(0.0, distance_miles if math.isfinite(distance_miles) else 0.0)
    fair = 200.0 + 120.0 * d
    pay = min(1.15, max(0.2, 0.4 + 0.6 * max(0, earnings_minor) / fair))
    far = math.exp(-max(0.0, d - 4.0) / 5.0)
    return min(0.99, max(0.02, base * pay * far))


def shift_windows(
    spec: DriverSpec, *, start: dt.datetime, horizon_s: float, shifts: bool, ramp_s: float,
    rng: random.Random, always_on_share: float = 0.0,
) -> list[tuple[float, float]]:  # fmt: skip
    """The driver's shifts as ``(on_s, off_s)`` seconds after ``start``, within the horizon.

    A shift under way at the start begins within ``ramp_s`` (drivers trickle in);
    without ``shifts`` every driver works the whole run. ``always_on_share`` of the
    drivers (the same ones for a given city) work around the clock, so a city
    simulated at 3 am is quiet, not dead.
    """
    ramp = rng.uniform(0.0, max(0.0, ramp_s))
    if random.Random(f"{spec.driver_id}:owl").random() < always_on_share:
        shifts = False
    if not shifts:
        return [(min(ramp, horizon_s), horizon_s)]
    local = start.astimezone(TZ)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[tuple[float, float]] = []
    days = int(min(horizon_s, 8 * 86400) // 86400) + 2
    for day in range(-1, days):
        on = midnight + dt.timedelta(days=day, hours=spec.shift_start_h)
        on_s = (on - local).total_seconds()
        off_s = on_s + spec.shift_hours * 3600
        if off_s <= 0 or on_s >= horizon_s:
            continue
        on_s = max(on_s, ramp) if on_s <= 0 else on_s
        if on_s < min(off_s, horizon_s):
            out.append((on_s, min(off_s, horizon_s)))
    return out


class Behaviour:
    """One driver's decisions, from their spec and random stream."""

    def __init__(self, spec: DriverSpec, rng: random.Random, *, silent: bool = False) -> None:
        self.spec = spec
        self.rng = rng
        #: This driver's phone loses the network once, mid-delivery, half the time.
        self.silent = silent
        self._silenced = False

    def repositions(self) -> bool:
        """A parked driver now and then drives somewhere near (a quarter of the chances)."""
        return self.rng.random() < 0.25

    def looks_away(self) -> bool:
        """The driver does not see the offer at all: it lapses."""
        return self.rng.random() < 0.03

    def reading_s(self) -> float:
        """How long the driver reads an offer before answering."""
        return self.rng.uniform(1.0, 6.0)

    def accepts(self, offer: dispatch_pb2.Offer) -> bool:
        p = acceptance_probability(self.spec.base_acceptance, offer.distance_miles,
                                   offer.expected_earnings.amount_minor)  # fmt: skip
        return self.rng.random() < p

    @staticmethod
    def reject_reason(offer: dispatch_pb2.Offer) -> dispatch_pb2.RejectReason.ValueType:
        return (dispatch_pb2.REJECT_REASON_TOO_FAR if offer.distance_miles > 4
                else dispatch_pb2.REJECT_REASON_LOW_PAY)  # fmt: skip

    def goes_silent(self) -> bool:
        """Whether the phone drops off the network on this drive (once per driver at most)."""
        if self.silent and not self._silenced and self.rng.random() < 0.5:
            self._silenced = True
            return True
        return False

    def silent_after_s(self, drive_s: float) -> float:
        """How far into the drive the network goes."""
        return drive_s * self.rng.uniform(0.1, 0.6)

    def silence_s(self) -> float:
        """How long the phone stays off the network."""
        return self.rng.uniform(35.0, 80.0)
