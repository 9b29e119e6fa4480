"""The model of the city: how long kitchens cook, how drivers drive, how long stops take.

One home for the city's physics, drawn from by both the offline history
(:mod:`foodmesh.sim.history`) and the live simulator (the kitchens of
:mod:`foodmesh.sim.kitchens`, the drives and stops of :mod:`foodmesh.sim.drivers`),
so an ETA model trained offline is trained on the world it serves.

- **kitchens**: a restaurant's prep time is its mean, grown by the order's size,
  the kitchen's load (orders it is cooking), peak hours and bad weather; what
  these leave unexplained is a log-normal spread of σ = :data:`PREP_NOISE`;
- **drivers**: each has a pace against the road graph (a log-normal personal
  factor fixed by their id), drives their vehicle's profile of the graph's time
  (:func:`foodmesh.roads.vehicles.vehicle_seconds`), slowed by the weather, with
  a little noise per drive;
- **stops**: at the restaurant's counter a hand-over of one to three minutes; at
  the customer's door parking and walking, longer downtown;
- **supply**: how many drivers are free near a kitchen when an order comes (in
  its geohash-5 cell, as Pricing counts them), and what that does to the order:
  the fewer, the longer until one is assigned and the farther they drive to the
  kitchen (:func:`free_drivers_mean`, :func:`assign_delay_seconds_many`,
  :func:`nearest_driver_m_many`);
- **events**: a share of orders come under a local event (a concert, a game) with
  Pricing's factor (1.2, 1.5 or 1.8): its kitchens are busier and its drivers
  fewer (:func:`event_multipliers_many`).

Pure: a random generator in, numbers out. Scalar functions take ``random.Random``
(the live agents); the ``*_many`` ones take a numpy ``Generator`` (the history).
"""

from __future__ import annotations

import math
import random

import numpy as np
import numpy.typing as npt

from foodmesh.roads.vehicles import vehicle_seconds, vehicle_time_s
from foodmesh.sim.city import SHIFT_HOURS, SHIFT_STARTS_H
from foodmesh.sim.demand import curve

__all__ = [
    "ALWAYS_ON_SHARE",
    "ASSIGN_WAIT_S",
    "CELL_DRIVERS",
    "DRIVER_PACE_SD",
    "EVENT_MULTIPLIERS",
    "EVENT_SHARE",
    "SUPPLY_RADIUS_M",
    "PREP_NOISE",
    "TRAVEL_NOISE",
    "WEATHER_P",
    "assign_delay_seconds_many",
    "driver_pace",
    "drive_seconds",
    "drive_seconds_many",
    "event_multipliers_many",
    "free_drivers_mean",
    "handover_seconds",
    "handover_seconds_many",
    "is_peak",
    "nearest_driver_m_many",
    "on_shift_share",
    "parking_seconds",
    "parking_seconds_many",
    "prep_minutes",
    "prep_minutes_many",
    "prep_multiplier",
]

F64 = npt.NDArray[np.float64]

#: Log-sd of what a kitchen's prep time leaves unexplained by size, load, peak and weather.
PREP_NOISE = 0.10
#: Log-sd of one drive against the driver's own pace.
TRAVEL_NOISE = 0.06
#: Log-sd of drivers' personal pace against the road graph.
DRIVER_PACE_SD = 0.10
#: How weather (WeatherKind numbers) slows roads and kitchens; how often each comes.
WEATHER_TRAVEL = np.array([1.0, 1.0, 1.06, 1.14, 1.28, 1.35, 1.05])
WEATHER_PREP = np.array([1.0, 1.0, 1.0, 1.03, 1.06, 1.08, 1.02])
WEATHER_P = np.array([0.0, 0.74, 0.12, 0.07, 0.03, 0.01, 0.03])
#: Prep times are clipped to this range, minutes.
PREP_RANGE_MIN = (4.0, 80.0)

#: Drivers whose shifts put them in one geohash-5 cell (about 4.9 x 3.9 km here), all on shift.
CELL_DRIVERS = 30.0
#: Of them, how many are busy delivering at the week's mean demand (more as demand rises).
BUSY_PER_DEMAND = 4.0
#: Share of drivers who work around the clock (the live sim's night owls).
ALWAYS_ON_SHARE = 0.1
#: How weather (WeatherKind numbers) thins the drivers on the road.
WEATHER_SUPPLY = np.array([1.0, 1.0, 0.92, 0.85, 0.75, 0.65, 0.95])
#: The mean of free drivers never falls below this (someone is always about to finish).
SUPPLY_FLOOR = 0.5
#: Radius of the disc with a geohash-5 cell's area: where the counted free drivers are.
SUPPLY_RADIUS_M = 2400.0
#: Seconds until a driver frees up when none is near (the queue part of the assignment delay).
ASSIGN_WAIT_S = 480.0
#: Share of orders placed under a local event, its factors (Pricing's) and how often each.
EVENT_SHARE = 0.06
EVENT_MULTIPLIERS = np.array([1.2, 1.5, 1.8])
EVENT_P = np.array([0.6, 0.3, 0.1])
#: How much of an event's factor shows in its kitchens' prep times.
EVENT_PREP = 0.25


def is_peak(hour: npt.ArrayLike, dow: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Kitchens' rush: 11-13 and 18-20 on weekdays, 12-14 and 18-20 at weekends (local)."""
    h = np.asarray(hour)
    d = np.asarray(dow)
    weekday = ((h >= 11) & (h <= 13)) | ((h >= 18) & (h <= 20))
    weekend = ((h >= 12) & (h <= 14)) | ((h >= 18) & (h <= 20))
    return np.asarray(np.where(d < 5, weekday, weekend), dtype=bool)


def prep_multiplier(
    items: npt.ArrayLike,
    load: npt.ArrayLike,
    peak: npt.ArrayLike,
    weather: npt.ArrayLike,
    event: npt.ArrayLike = 1.0,
) -> F64:
    """What size, load (orders already cooking), peak hours, weather and a local event
    (its factor, 1 without one) do to a mean prep time."""
    i = np.asarray(items, dtype=np.float64)
    ld = np.asarray(load, dtype=np.float64)
    w = np.clip(np.asarray(weather, dtype=np.int64), 0, len(WEATHER_PREP) - 1)
    return np.asarray(
        (0.78 + 0.11 * (np.maximum(i, 1.0) - 1.0))
        * (1.0 + 0.06 * ld)
        * np.where(np.asarray(peak, dtype=bool), 1.12, 1.0)
        * WEATHER_PREP[w]
        * (1.0 + EVENT_PREP * (np.asarray(event, dtype=np.float64) - 1.0)),
        dtype=np.float64,
    )


def prep_minutes_many(
    rng: np.random.Generator,
    mean_min: npt.ArrayLike,
    *,
    items: npt.ArrayLike,
    load: npt.ArrayLike,
    peak: npt.ArrayLike,
    weather: npt.ArrayLike,
) -> F64:
    """Prep times in minutes for many orders (arrays broadcast)."""
    m = np.asarray(mean_min, dtype=np.float64) * prep_multiplier(items, load, peak, weather)
    noise = np.exp(rng.normal(0.0, PREP_NOISE, size=np.shape(m)))
    return np.asarray(np.clip(m * noise, *PREP_RANGE_MIN), dtype=np.float64)


def prep_minutes(
    rng: random.Random, mean_min: float, *, items: int, load: int, peak: bool, weather: int = 1
) -> float:
    """One order's prep time in minutes (the live kitchens)."""
    m = float(prep_multiplier(items, load, peak, weather)) * mean_min
    return min(max(m * math.exp(rng.gauss(0.0, PREP_NOISE)), PREP_RANGE_MIN[0]), PREP_RANGE_MIN[1])


def driver_pace(driver_id: str, *, seed: int = 7) -> float:
    """A driver's pace against the road graph (above 1 slower), fixed by their id."""
    return math.exp(random.Random(f"{seed}:{driver_id}:pace").gauss(0.0, DRIVER_PACE_SD))


def drive_seconds(
    rng: random.Random,
    *,
    vehicle: int,
    free_flow_s: float,
    graph_s: float,
    pace: float,
    weather: int = 1,
) -> float:
    """One drive's seconds: the vehicle's profile of the graph's time, the driver, the weather."""
    w = WEATHER_TRAVEL[min(max(weather, 0), len(WEATHER_TRAVEL) - 1)]
    base = vehicle_seconds(vehicle, free_flow_s, graph_s)
    return float(base * pace * w * math.exp(rng.gauss(0.0, TRAVEL_NOISE)))


def drive_seconds_many(
    rng: np.random.Generator,
    *,
    vehicle: npt.ArrayLike,
    free_flow_s: npt.ArrayLike,
    graph_s: npt.ArrayLike,
    pace: npt.ArrayLike,
    weather: npt.ArrayLike,
) -> F64:
    """:func:`drive_seconds` for many drives."""
    w = WEATHER_TRAVEL[np.clip(np.asarray(weather, dtype=np.int64), 0, len(WEATHER_TRAVEL) - 1)]
    base = vehicle_time_s(vehicle, free_flow_s, graph_s)
    n = np.shape(base)
    return np.asarray(base * np.asarray(pace) * w * np.exp(rng.normal(0.0, TRAVEL_NOISE, size=n)))


def parking_seconds(rng: random.Random, zone_km: float) -> float:
    """Parking and walking to a customer's door ``zone_km`` from the centre (longer downtown)."""
    return min(max(3.0 - 0.3 * zone_km, 0.8), 3.0) * 60.0 * rng.uniform(0.8, 1.2)


def parking_seconds_many(rng: np.random.Generator, zone_km: npt.ArrayLike) -> F64:
    z = np.asarray(zone_km, dtype=np.float64)
    return np.asarray(np.clip(3.0 - 0.3 * z, 0.8, 3.0) * 60.0 * rng.uniform(0.8, 1.2, np.shape(z)))


def handover_seconds(rng: random.Random) -> float:
    """At the counter once the food is ready and the driver is there: one to three minutes."""
    return rng.uniform(60.0, 180.0)


def handover_seconds_many(rng: np.random.Generator, n: int) -> F64:
    return np.asarray(rng.uniform(60.0, 180.0, size=n))


def on_shift_share(hour: npt.ArrayLike) -> F64:
    """Share of the shift drivers on shift at local ``hour`` (fractional; the shifts of
    :mod:`foodmesh.sim.city`: a start and a length drawn evenly, every day)."""
    h = np.asarray(hour, dtype=np.float64)
    on = np.zeros(np.shape(h))
    for s in SHIFT_STARTS_H:
        for length in SHIFT_HOURS:
            on += ((h - s) % 24.0) < length
    return np.asarray(on / (len(SHIFT_STARTS_H) * len(SHIFT_HOURS)), dtype=np.float64)


def free_drivers_mean(
    hour: npt.ArrayLike,
    dow: npt.ArrayLike,
    *,
    weather: npt.ArrayLike = 1,
    event: npt.ArrayLike = 1.0,
) -> F64:
    """The mean number of free drivers near a kitchen at an order's (whole) local hour.

    Drivers on shift (the shifts' share, plus the night owls, thinned by bad weather)
    less those busy delivering, who follow the demand curve (times an event's
    factor): plenty in the afternoon lull, few at the dinner rush, a handful at night.
    """
    h = np.asarray(hour, dtype=np.float64) + 0.5
    d = np.asarray(dow, dtype=np.int64)
    w = np.clip(np.asarray(weather, dtype=np.int64), 0, len(WEATHER_SUPPLY) - 1)
    demand = np.vectorize(curve, otypes=[np.float64])(d, h)
    on = CELL_DRIVERS * (ALWAYS_ON_SHARE + (1.0 - ALWAYS_ON_SHARE) * on_shift_share(h))
    busy = BUSY_PER_DEMAND * demand * np.asarray(event, dtype=np.float64)
    return np.asarray(np.maximum(on * WEATHER_SUPPLY[w] - busy, SUPPLY_FLOOR), dtype=np.float64)


def event_multipliers_many(rng: np.random.Generator, n: int) -> F64:
    """Each order's local event factor: 1 for most, Pricing's 1.2 / 1.5 / 1.8 for a few."""
    under = rng.random(n) < EVENT_SHARE
    factor = rng.choice(EVENT_MULTIPLIERS, size=n, p=EVENT_P)
    return np.asarray(np.where(under, factor, 1.0), dtype=np.float64)


def assign_delay_seconds_many(rng: np.random.Generator, free: npt.ArrayLike) -> F64:
    """Order placed -> driver assigned, given the free drivers near the kitchen.

    A dispatch round and an offer accepted (20-90 s), plus a wait for a driver to
    free up that is long when none is near (mean :data:`ASSIGN_WAIT_S`) and short
    when many are (mean ``ASSIGN_WAIT_S / (n + 0.5)``).
    """
    n = np.asarray(free, dtype=np.float64)
    queue = rng.exponential(1.0, size=np.shape(n)) * ASSIGN_WAIT_S / (n + 0.5)
    return np.asarray(rng.uniform(20.0, 90.0, size=np.shape(n)) + queue, dtype=np.float64)


def nearest_driver_m_many(rng: np.random.Generator, free: npt.ArrayLike) -> F64:
    """Straight-line metres from the kitchen to the driver assigned, given the free drivers.

    The nearest of ``n`` points uniform in a disc of radius R is at
    ``R * sqrt(1 - U ** (1 / n))`` (about ``0.89 R / sqrt(n)`` on average); with none
    free the driver comes from a neighbouring cell, R to 2R away.
    """
    n = np.asarray(free, dtype=np.float64)
    u = rng.random(np.shape(n))
    with np.errstate(divide="ignore"):
        near = SUPPLY_RADIUS_M * np.sqrt(1.0 - u ** (1.0 / np.maximum(n, 1.0)))
    far = SUPPLY_RADIUS_M * (1.0 + u)
    return np.asarray(np.where(n >= 1, near, far), dtype=np.float64)
