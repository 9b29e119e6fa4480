"""The models' features: names, and how a history table or one request becomes a matrix.

The design's features: for preparation, the restaurant's listed prep time, its
recent prep times (rolling, as of the order: ``servers.eta.kitchen``), the order's
size and value, hour and day, peak, the kitchen's load (its open orders) and the
weather; for travel, the route's distance, free-flow and traffic time (its
multiplier), hour and day, peak, weather, the zone (distance from the centre:
parking), the driver's speed history and vehicle, and whether the leg ends at a
customer's door; for the pickup wait (food ready -> in the driver's hands, when no
driver is assigned yet), hour and day, peak, weather, a local event's factor, the
free drivers near the restaurant (NaN when unknown), the kitchen's load and what
says how long it will cook (listed and recent prep times, the order's size): each
known at placement, the same way in training and live. Pure: numpy in, numpy out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from foodmesh.roads.vehicles import vehicle_seconds, vehicle_time_s

__all__ = [
    "CENTER",
    "PREP_FEATURES",
    "TRAVEL_FEATURES",
    "WAIT_FEATURES",
    "DriverProfile",
    "RestaurantProfile",
    "is_peak",
    "prep_matrix",
    "travel_matrix",
    "vehicle_seconds",
    "wait_matrix",
    "vehicle_time_s",
]

F64 = npt.NDArray[np.float64]

#: The city's centre (the design's example coordinates); distance from it stands for the zone.
CENTER = (37.7749, -122.4194)

PREP_FEATURES: tuple[str, ...] = (
    "restaurant_listed_prep_min",
    "restaurant_recent_prep_min",
    "restaurant_recent_orders",
    "item_count",
    "subtotal",
    "hour",
    "day_of_week",
    "is_peak",
    "restaurant_load",
    "weather",
)

TRAVEL_FEATURES: tuple[str, ...] = (
    "distance_km",
    "free_flow_min",
    "graph_min",
    "traffic_multiplier",
    "hour",
    "day_of_week",
    "is_peak",
    "weather",
    "zone_km",
    "driver_speed_ratio",
    "driver_deliveries_log",
    "vehicle",
    "to_customer",
)


WAIT_FEATURES: tuple[str, ...] = (
    "hour",
    "day_of_week",
    "is_peak",
    "weather",
    "event_multiplier",
    "drivers_nearby",
    "restaurant_load",
    "restaurant_listed_prep_min",
    "restaurant_recent_prep_min",
    "item_count",
)


@dataclass(frozen=True, slots=True)
class RestaurantProfile:
    """What history says of a kitchen: its mean prep time and how many orders it made."""

    avg_prep_min: float
    orders: int


@dataclass(frozen=True, slots=True)
class DriverProfile:
    """What history says of a driver: actual over road-graph time, and deliveries made."""

    speed_ratio: float
    deliveries: int


def is_peak(hour: npt.ArrayLike, dow: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The design's peak hours: 11-13 and 18-20 on weekdays, 12-14 and 18-20 at weekends."""
    h = np.asarray(hour)
    d = np.asarray(dow)
    weekday = ((h >= 11) & (h <= 13)) | ((h >= 18) & (h <= 20))
    weekend = ((h >= 12) & (h <= 14)) | ((h >= 18) & (h <= 20))
    return np.where(d < 5, weekday, weekend)


def prep_matrix(
    *,
    listed_prep_min: npt.ArrayLike,
    recent_prep_min: npt.ArrayLike,
    recent_orders: npt.ArrayLike,
    item_count: npt.ArrayLike,
    subtotal: npt.ArrayLike,
    hour: npt.ArrayLike,
    day_of_week: npt.ArrayLike,
    restaurant_load: npt.ArrayLike,
    weather: npt.ArrayLike,
) -> F64:
    """Rows of :data:`PREP_FEATURES` (arrays broadcast; scalars make one row).

    ``listed_prep_min`` is the Catalog's prep time of the restaurant; ``recent_prep_min``
    the mean of its latest ready orders (NaN when none: the trees learn what missing
    means) and ``recent_orders`` how many that is (``servers.eta.kitchen``).
    """
    cols = np.broadcast_arrays(
        np.asarray(listed_prep_min, dtype=np.float64),
        np.asarray(recent_prep_min, dtype=np.float64),
        np.asarray(recent_orders, dtype=np.float64),
        np.asarray(item_count, dtype=np.float64),
        np.asarray(subtotal, dtype=np.float64),
        np.asarray(hour, dtype=np.float64),
        np.asarray(day_of_week, dtype=np.float64),
        is_peak(hour, day_of_week).astype(np.float64),
        np.asarray(restaurant_load, dtype=np.float64),
        np.asarray(weather, dtype=np.float64),
    )
    return np.atleast_2d(np.stack(cols, axis=-1))


def travel_matrix(
    *,
    distance_m: npt.ArrayLike,
    free_flow_s: npt.ArrayLike,
    graph_s: npt.ArrayLike,
    hour: npt.ArrayLike,
    day_of_week: npt.ArrayLike,
    weather: npt.ArrayLike,
    zone_km: npt.ArrayLike,
    driver_speed_ratio: npt.ArrayLike,
    driver_deliveries: npt.ArrayLike,
    vehicle: npt.ArrayLike,
    to_customer: npt.ArrayLike,
) -> F64:
    """Rows of :data:`TRAVEL_FEATURES` (arrays broadcast; scalars make one row)."""
    ff = np.asarray(free_flow_s, dtype=np.float64)
    g = np.asarray(graph_s, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mult = np.where(ff > 0, g / np.maximum(ff, 1e-9), 1.0)
    cols = np.broadcast_arrays(
        np.asarray(distance_m, dtype=np.float64) / 1000.0,
        ff / 60.0,
        g / 60.0,
        mult,
        np.asarray(hour, dtype=np.float64),
        np.asarray(day_of_week, dtype=np.float64),
        is_peak(hour, day_of_week).astype(np.float64),
        np.asarray(weather, dtype=np.float64),
        np.asarray(zone_km, dtype=np.float64),
        np.asarray(driver_speed_ratio, dtype=np.float64),
        np.log1p(np.asarray(driver_deliveries, dtype=np.float64)),
        np.asarray(vehicle, dtype=np.float64),
        np.asarray(to_customer, dtype=np.float64),
    )
    return np.atleast_2d(np.stack(cols, axis=-1))


def wait_matrix(
    *,
    hour: npt.ArrayLike,
    day_of_week: npt.ArrayLike,
    weather: npt.ArrayLike,
    event_multiplier: npt.ArrayLike,
    drivers_nearby: npt.ArrayLike,
    restaurant_load: npt.ArrayLike,
    listed_prep_min: npt.ArrayLike,
    recent_prep_min: npt.ArrayLike,
    item_count: npt.ArrayLike,
) -> F64:
    """Rows of :data:`WAIT_FEATURES` (arrays broadcast; scalars make one row).

    ``drivers_nearby`` is the free drivers near the restaurant at placement (NaN when
    unknown: the trees learn what missing means); ``event_multiplier`` a local
    event's factor (1 without one; 0 or NaN, not sent, reads as 1).
    """
    ev = np.asarray(event_multiplier, dtype=np.float64)
    ev = np.where(np.isfinite(ev) & (ev > 0), ev, 1.0)
    cols = np.broadcast_arrays(
        np.asarray(hour, dtype=np.float64),
        np.asarray(day_of_week, dtype=np.float64),
        is_peak(hour, day_of_week).astype(np.float64),
        np.asarray(weather, dtype=np.float64),
        ev,
        np.asarray(drivers_nearby, dtype=np.float64),
        np.asarray(restaurant_load, dtype=np.float64),
        np.asarray(listed_prep_min, dtype=np.float64),
        np.asarray(recent_prep_min, dtype=np.float64),
        np.asarray(item_count, dtype=np.float64),
    )
    return np.atleast_2d(np.stack(cols, axis=-1))
