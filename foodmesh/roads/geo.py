"""Vectorised geo math for the graph: haversine over arrays, a local plane, bearings.

Scalar great-circle distance lives in :mod:`foodmesh.core.geo`; this module
only adds the numpy forms the graph needs (same Earth radius).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from foodmesh.core.geo import EARTH_RADIUS_M, haversine_m, valid_lat_lon

__all__ = [
    "EARTH_RADIUS_M",
    "LocalPlane",
    "bearing_deg",
    "haversine_m",
    "haversine_np",
    "valid_lat_lon",
]

F64 = npt.NDArray[np.float64]


def haversine_np(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> F64:
    """Great-circle distance in metres, element-wise over arrays."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a))))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial compass bearing from point 1 to point 2, degrees in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


class LocalPlane:
    """An equirectangular plane in metres around a reference point.

    Good to well under 0.1 % over a city; the KD-tree and the edge projections work here.
    """

    __slots__ = ("kx", "ky", "lat0", "lon0")

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0 = lat0
        self.lon0 = lon0
        self.ky = math.radians(1.0) * EARTH_RADIUS_M
        self.kx = self.ky * math.cos(math.radians(lat0))

    def to_xy(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[F64, F64]:
        x = (np.asarray(lon, dtype=np.float64) - self.lon0) * self.kx
        y = (np.asarray(lat, dtype=np.float64) - self.lat0) * self.ky
        return x, y

    def to_latlon(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[F64, F64]:
        lat = np.asarray(y, dtype=np.float64) / self.ky + self.lat0
        lon = np.asarray(x, dtype=np.float64) / self.kx + self.lon0
        return lat, lon
