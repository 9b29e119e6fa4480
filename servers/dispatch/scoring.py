"""The planner's per-driver and per-place terms and the geometry it works in. Pure.

The trip planner (``trips.plan_trips``) costs a trip in minutes; the live service
adds what replay's couriers do not have (``live.py``):

- quality: ``0.7·clip((rating - 3) / 2) + 0.3·min(deliveries / 1000, 1)``, worth up
  to a minute;
- opportunity: ``demand / (demand + 3)`` of the dropoff area (orders seen there
  in the last half hour): a driver left where orders are gets the next one sooner.

Distances on numpy arrays (a round's whole matrix in one pass); ``heuristic_travel_s``:
the great-circle distance times a detour factor of 1.35 (street grids run ~1.3-1.4
over the crow's flight) at the vehicle's urban speed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from foodmesh.core.geo import EARTH_RADIUS_M, METERS_PER_MILE
from foodmesh.v1 import common_pb2

__all__ = [
    "DETOUR",
    "SPEED_MPS",
    "Arr",
    "distance_matrix_m",
    "haversine_pairs_m",
    "heuristic_travel_s",
    "miles",
    "opportunity_score",
    "quality_score",
]

Arr = npt.NDArray[np.float64]
VT = common_pb2.VehicleType
#: Street distance over great-circle distance in a city grid.
DETOUR = 1.35
#: Mean urban speed by vehicle, m/s (car 25 km/h door to door, bike 15, walking 5).
SPEED_MPS: Mapping[int, float] = {
    VT.VEHICLE_TYPE_UNSPECIFIED: 6.9,
    VT.VEHICLE_TYPE_CAR: 6.9,
    VT.VEHICLE_TYPE_SCOOTER: 6.1,
    VT.VEHICLE_TYPE_BICYCLE: 4.2,
    VT.VEHICLE_TYPE_WALKING: 1.4,
}


def quality_score(rating: Arr, deliveries: Arr) -> Arr:
    """Rating (3 → 0, 5 → 1) weighted 0.7, experience (1,000 deliveries → 1) 0.3."""
    rating_part = np.clip((rating - 3.0) / 2.0, 0.0, 1.0)
    experience = np.minimum(np.maximum(deliveries, 0.0) / 1000.0, 1.0)
    return 0.7 * rating_part + 0.3 * experience


def opportunity_score(demand: Arr) -> Arr:
    """Recent orders around the dropoff, saturating: 0 → 0, 3 → 0.5, 30 → 0.9."""
    d = np.maximum(demand, 0.0)
    return d / (d + 3.0)


def distance_matrix_m(lat1: Arr, lon1: Arr, lat2: Arr, lon2: Arr) -> Arr:
    """Distances between points 1 (rows) and points 2 (columns), metres.

    Equirectangular, at each row point's latitude: within a city (tens of km) it is
    within 0.1 % of the great-circle distance, and it costs no trigonometry per
    pair, which matters at 10 million pairs (2,000 orders × 5,000 drivers).
    """
    rad = math.pi / 180.0
    dx = (lon2[None, :] - lon1[:, None]) * rad
    dx *= np.cos(lat1 * rad)[:, None]
    dy = (lat2[None, :] - lat1[:, None]) * rad
    out: Arr = np.hypot(dx, dy)
    out *= EARTH_RADIUS_M
    return out


def haversine_pairs_m(lat1: Arr, lon1: Arr, lat2: Arr, lon2: Arr) -> Arr:
    """Great-circle distances between points 1 and points 2, element by element, metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2) - np.radians(lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    out: Arr = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return out


def heuristic_travel_s(meters: Arr, speed_mps: Arr | float) -> Arr:
    """Seconds to cover a great-circle distance through streets at ``speed_mps``."""
    out: Arr = meters * DETOUR / np.maximum(speed_mps, 0.1)
    return out


def miles(meters: Arr) -> Arr:
    out: Arr = meters / METERS_PER_MILE
    return out
