"""Geo math shared by services: great-circle distance and geohash cells. Pure, no I/O."""

from __future__ import annotations

import math

__all__ = [
    "EARTH_RADIUS_M",
    "METERS_PER_MILE",
    "geohash_decode",
    "geohash_encode",
    "geohash_neighbors",
    "haversine_m",
    "valid_lat_lon",
]

EARTH_RADIUS_M = 6_371_008.8
METERS_PER_MILE = 1609.344
_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {c: i for i, c in enumerate(_BASE32)}


def valid_lat_lon(lat: float, lon: float) -> bool:
    """True for a finite latitude in [-90, 90] and longitude in [-180, 180]."""
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def geohash_encode(lat: float, lon: float, precision: int = 6) -> str:
    """The geohash cell of ``precision`` characters that holds the point."""
    if not valid_lat_lon(lat, lon):
        raise ValueError(f"not a valid position: lat={lat}, lon={lon}")
    if not 1 <= precision <= 12:
        raise ValueError(f"precision must be 1..12, got {precision}")
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    out: list[str] = []
    bits = 0
    ch = 0
    even = True
    while len(out) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            if lon >= mid:
                ch = (ch << 1) | 1
                lon_lo = mid
            else:
                ch <<= 1
                lon_hi = mid
        else:
            mid = (lat_lo + lat_hi) / 2
            if lat >= mid:
                ch = (ch << 1) | 1
                lat_lo = mid
            else:
                ch <<= 1
                lat_hi = mid
        even = not even
        bits += 1
        if bits == 5:
            out.append(_BASE32[ch])
            bits = 0
            ch = 0
    return "".join(out)


def geohash_decode(cell: str) -> tuple[float, float, float, float]:
    """Bounds of a cell as ``(lat_lo, lat_hi, lon_lo, lon_hi)``."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    even = True
    for c in cell:
        try:
            value = _DECODE[c]
        except KeyError:
            raise ValueError(f"not a geohash: {cell!r}") from None
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) / 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return lat_lo, lat_hi, lon_lo, lon_hi


def geohash_neighbors(cell: str) -> list[str]:
    """The (up to) eight cells around ``cell``, of the same precision."""
    lat_lo, lat_hi, lon_lo, lon_hi = geohash_decode(cell)
    dlat, dlon = lat_hi - lat_lo, lon_hi - lon_lo
    clat, clon = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
    out: list[str] = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == dy == 0:
                continue
            lat = clat + dy * dlat
            lon = ((clon + dx * dlon + 180) % 360) - 180
            if -90 <= lat <= 90:
                n = geohash_encode(lat, lon, len(cell))
                if n != cell and n not in out:
                    out.append(n)
    return out
