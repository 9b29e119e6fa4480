"""Order and event ids: opaque, unguessable, sortable by creation time (UUIDv7 layout).

48 bits of Unix milliseconds, then 74 random bits (RFC 9562 version 7), written as
26 Crockford base32 characters after a prefix. Base32 keeps the bit order, so ids
sort as their creation times do (to the millisecond) and shard by hash cleanly.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["new_order_id", "order_id_time_ms", "uuid7_int"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_PREFIX = "ord_"
_LEN = 26


def uuid7_int(now_ms: int | None = None) -> int:
    """A 128-bit UUIDv7 as an integer (time in the top 48 bits, version 7, variant 10)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"time out of range: {ms}")
    rand = secrets.randbits(74)
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    return (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b


def _b32(value: int) -> str:
    out = []
    for _ in range(_LEN):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_order_id(now_ms: int | None = None) -> str:
    """``ord_`` + 26 base32 characters of a fresh UUIDv7."""
    return _PREFIX + _b32(uuid7_int(now_ms))


def order_id_time_ms(order_id: str) -> int | None:
    """The creation time (Unix ms) an order id carries; None if it is not one of ours."""
    body = order_id.removeprefix(_PREFIX)
    if body == order_id or len(body) != _LEN:
        return None
    value = 0
    for c in body:
        i = _INDEX.get(c)
        if i is None:
            return None
        value = value << 5 | i
    if value >> 128 or (value >> 76) & 0xF != 7:
        return None
    return value >> 80
