"""Geo math shared by services: great-circle distance and geohash cells. Pure, no I/O."""

from __future__ import annotations

import math

__all__ = [
    "EARTH_RADIUS_M",
    "METERS_PER_MILE",
    "cells_covering",
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


def _spread(x: int) -> int:
    """Spreads the low 32 bits of ``x`` apart: bit k moves to bit 2k (a Morton code half)."""
    x &= 0xFFFFFFFF
    x = (x | (x << 16)) & 0x0000FFFF0000FFFF
    x = (x | (x << 8)) & 0x00FF00FF00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0F
    x = (x | (x << 2)) & 0x3333333333333333
    return (x | (x << 1)) & 0x5555555555555555


def geohash_encode(lat: float, lon: float, precision: int = 6) -> str:
    """The geohash cell of ``precision`` characters that holds the point.

    Quantises both axes and interleaves their bits in one go (no per-bit loop):
    it runs once per location fix, so it has to be cheap.
    """
    if not valid_lat_lon(lat, lon):
        raise ValueError(f"not a valid position: lat={lat}, lon={lon}")
    if not 1 <= precision <= 12:
        raise ValueError(f"precision must be 1..12, got {precision}")
    lat_bits, lon_bits = _axis_bits(precision)
    return _cell(_index(lat, 90.0, lat_bits), _index(lon, 180.0, lon_bits), precision)


def _index(x: float, half: float, bits: int) -> int:
    """The cell index of ``x`` on an axis ``[-half, half]`` cut in ``2**bits`` cells."""
    n = 1 << bits
    i = min(int((x + half) / (2 * half) * n), n - 1)
    # ``x + half`` can round across a cell edge (x = -1e-75 gives exactly half); cell
    # edges are dyadic, so comparing against them is exact and settles it.
    step = 2 * half / n
    if i > 0 and x < i * step - half:
        i -= 1
    elif i < n - 1 and x >= (i + 1) * step - half:
        i += 1
    return i


def _axis_bits(precision: int) -> tuple[int, int]:
    bits = 5 * precision
    return bits // 2, (bits + 1) // 2


def _cell(lat_i: int, lon_i: int, precision: int) -> str:
    # Geohash starts with a longitude bit; it lands on the top bit of the code either way.
    if precision % 2 == 0:
        code = (_spread(lon_i) << 1) | _spread(lat_i)
    else:
        code = _spread(lon_i) | (_spread(lat_i) << 1)
    out = [""] * precision
    for i in range(precision - 1, -1, -1):
        out[i] = _BASE32[code & 31]
        code >>= 5
    return "".join(out)


def cells_covering(lat: float, lon: float, radius_m: float, precision: int) -> list[str]:
    """Every cell of ``precision`` that a circle of ``radius_m`` around the point can touch.

    Covers the circle's bounding box (wrapping at the antimeridian, clamped at the
    poles), so a search of these cells' indexes misses nobody inside the circle.
    """
    if not valid_lat_lon(lat, lon):
        raise ValueError(f"not a valid position: lat={lat}, lon={lon}")
    lat_bits, lon_bits = _axis_bits(precision)
    n_lat, n_lon = 1 << lat_bits, 1 << lon_bits
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    lat_lo, lat_hi = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    cos_lat = min(math.cos(math.radians(lat_lo)), math.cos(math.radians(lat_hi)))
    if lat_lo <= -90.0 or lat_hi >= 90.0 or cos_lat <= 1e-9:
        dlon = 180.0
    else:
        dlon = min(180.0, math.degrees(radius_m / (EARTH_RADIUS_M * cos_lat)))
    i_lo = max(0, int((lat_lo + 90.0) / 180.0 * n_lat))
    i_hi = min(n_lat - 1, int((lat_hi + 90.0) / 180.0 * n_lat))
    j_lo = math.floor((lon - dlon + 180.0) / 360.0 * n_lon)
    j_hi = math.floor((lon + dlon + 180.0) / 360.0 * n_lon)
    if j_hi - j_lo + 1 >= n_lon:
        j_lo, j_hi = 0, n_lon - 1
    cells: list[str] = []
    for i in range(i_lo, i_hi + 1):
        for j in range(j_lo, j_hi + 1):
            cells.append(_cell(i, j % n_lon, precision))
    return cells


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
