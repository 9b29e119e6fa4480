"""What the dashboard's map draws: road segments by class, restaurants, surge cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from foodmesh.core.geo import geohash_decode, geohash_encode

__all__ = ["map_payload", "search_grid", "surge_cells"]

_MILE_DEG_LAT = 1609.344 / 111_195.0


def map_payload(graph: Any, restaurants: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Road segments (each undirected street once) as flat integer arrays per road class.

    Coordinates are sent as integers in 1e-5 degrees (about a metre) relative to the
    south-west corner, which makes the JSON of a 20,000-node city about a third of
    plain floats, and compresses well.
    """
    if graph is None or graph.edge_count == 0:
        lats = [r[2] for r in restaurants] or [37.7749]
        lons = [r[3] for r in restaurants] or [-122.4194]
        pad = 0.02
        return {"bounds": [min(lats) - pad, min(lons) - pad, max(lats) + pad, max(lons) + pad],
                "origin": [min(lats) - pad, min(lons) - pad], "roads": {},
                "restaurants": [list(r) for r in restaurants]}  # fmt: skip
    src = np.asarray(graph.sources, dtype=np.int64)
    dst = np.asarray(graph.targets, dtype=np.int64)
    # a two-way street is two directed edges: draw it once
    keep = (src < dst) | np.asarray(graph.oneway, dtype=bool)
    lat0, lon0 = float(graph.lat.min()), float(graph.lon.min())
    qlat = np.round((graph.lat - lat0) * 1e5).astype(np.int64)
    qlon = np.round((graph.lon - lon0) * 1e5).astype(np.int64)
    classes = np.asarray(graph.road_class)
    roads: dict[str, list[int]] = {}
    for c in np.unique(classes[keep]):
        m = keep & (classes == c)
        s, d = src[m], dst[m]
        flat = np.stack([qlat[s], qlon[s], qlat[d], qlon[d]], axis=1).ravel()
        roads[str(int(c))] = flat.tolist()
    return {
        "bounds": [float(graph.lat.min()), float(graph.lon.min()), float(graph.lat.max()),
                   float(graph.lon.max())],
        "origin": [lat0, lon0],
        "roads": roads,
        "restaurants": [list(r) for r in restaurants],
    }  # fmt: skip


def surge_cells(restaurants: Sequence[Sequence[Any]]) -> list[tuple[str, float, float]]:
    """The geohash-5 cells with restaurants in them, and each cell's centre."""
    cells = sorted({geohash_encode(r[2], r[3], 5) for r in restaurants})
    out = []
    for c in cells:
        lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(c)
        out.append((c, (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2))
    return out


def search_grid(
    center: tuple[float, float], *, half_miles: float = 8.0, step_miles: float = 2.5
) -> list[tuple[float, float]]:
    """Points on a square grid around ``center``: searching at each finds every restaurant
    whose delivery zones reach any of them (zones are a few miles wide)."""
    dlat = step_miles * _MILE_DEG_LAT
    dlon = dlat / np.cos(np.radians(center[0]))
    k = int(half_miles // step_miles)
    return [(center[0] + i * dlat, center[1] + j * float(dlon))
            for i in range(-k, k + 1) for j in range(-k, k + 1)]  # fmt: skip
