"""How often a driver's app should send a fix: one pure function, the server's to decide.

The app does what the ack says, so the policy can change without an app release.
On a delivery the customer watches the car move (5 s); close to the restaurant or
the customer, arrival detection and the "driver is here" moment need more (2 s);
an available driver only has to be findable for matching (15 s, or 30 s when it
has not moved); a paused driver barely matters (60 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Activity", "DriverActivity", "IntervalPolicy", "next_interval_s"]


class Activity(Enum):
    """What the driver is doing, as far as location freshness matters."""

    OFFLINE = "offline"
    PAUSED = "paused"
    AVAILABLE = "available"
    OFFERED = "offered"
    ON_DELIVERY = "on_delivery"


@dataclass(frozen=True, slots=True)
class DriverActivity:
    """The inputs of the policy, all known at ingest time."""

    activity: Activity
    #: Metres to the next stop (restaurant or customer) when on a delivery, else None.
    distance_to_stop_m: float | None = None
    #: Metres per second, from the last fix.
    speed_mps: float = 0.0
    #: Seconds the driver has not moved more than ``still_radius_m``.
    stationary_s: float = 0.0


@dataclass(frozen=True, slots=True)
class IntervalPolicy:
    """The knobs, in seconds and metres (defaults from the design: 5 s on delivery)."""

    on_delivery_s: float = 5.0
    near_stop_s: float = 2.0
    near_stop_m: float = 500.0
    offered_s: float = 5.0
    available_s: float = 15.0
    available_still_s: float = 30.0
    still_after_s: float = 120.0
    paused_s: float = 60.0
    min_s: float = 1.0
    max_s: float = 60.0


def next_interval_s(a: DriverActivity, policy: IntervalPolicy = IntervalPolicy()) -> float:
    """Seconds until the app should send its next fix."""
    if a.activity is Activity.ON_DELIVERY:
        interval = policy.on_delivery_s
        if a.distance_to_stop_m is not None:
            # Arrival is a matter of how soon we get there, not just how far: a car at
            # 15 m/s covers the 500 m ring in ~33 s, so speed narrows it too.
            eta_s = a.distance_to_stop_m / max(a.speed_mps, 1.0)
            if a.distance_to_stop_m <= policy.near_stop_m or eta_s <= 30.0:
                interval = policy.near_stop_s
    elif a.activity is Activity.OFFERED:
        interval = policy.offered_s
    elif a.activity is Activity.AVAILABLE:
        still = a.stationary_s >= policy.still_after_s
        interval = policy.available_still_s if still else policy.available_s
    else:
        interval = policy.paused_s
    return min(policy.max_s, max(policy.min_s, interval))
