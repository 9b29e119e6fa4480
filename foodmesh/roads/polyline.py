"""Google's encoded polyline algorithm format (precision 5 by default)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["decode", "encode"]


def _encode_value(v: int, out: list[str]) -> None:
    v = ~(v << 1) if v < 0 else v << 1
    while v >= 0x20:
        out.append(chr((0x20 | (v & 0x1F)) + 63))
        v >>= 5
    out.append(chr(v + 63))


def encode(points: Iterable[Sequence[float]], *, precision: int = 5) -> str:
    """Encodes ``(lat, lon)`` points; rounding is per point, so errors never accumulate."""
    factor = 10**precision
    out: list[str] = []
    plat = plon = 0
    for p in points:
        lat = round(p[0] * factor)
        lon = round(p[1] * factor)
        _encode_value(lat - plat, out)
        _encode_value(lon - plon, out)
        plat, plon = lat, lon
    return "".join(out)


def decode(text: str, *, precision: int = 5) -> list[tuple[float, float]]:
    """Decodes an encoded polyline into ``(lat, lon)`` points.

    Raises:
        ValueError: the text is not a well-formed polyline.
    """
    factor = 10**precision
    coords: list[tuple[float, float]] = []
    i, n = 0, len(text)
    lat = lon = 0
    while i < n:
        deltas = []
        for _ in range(2):
            shift = result = 0
            while True:
                if i >= n:
                    raise ValueError("truncated polyline")
                b = ord(text[i]) - 63
                i += 1
                if not 0 <= b < 64:
                    raise ValueError(f"bad polyline character {text[i - 1]!r} at {i - 1}")
                result |= (b & 0x1F) << shift
                shift += 5
                if b < 0x20:
                    break
            deltas.append(~(result >> 1) if result & 1 else result >> 1)
        lat += deltas[0]
        lon += deltas[1]
        coords.append((lat / factor, lon / factor))
    return coords
