"""Money arithmetic in integer minor units: no floats touch an amount.

Rates are basis points (1/100 of a percent), rounded half up to the minor unit,
as receipts do.
"""

from __future__ import annotations

__all__ = ["apply_bps", "clamp", "scale", "split_refund"]


def apply_bps(amount_minor: int, bps: int) -> int:
    """``amount × bps / 10000``, rounded half away from zero."""
    num = amount_minor * bps
    q, r = divmod(abs(num), 10_000)
    if r * 2 >= 10_000:
        q += 1
    return q if num >= 0 else -q


def scale(amount_minor: int, factor: float) -> int:
    """``amount × factor`` rounded half up, via basis points (surge: 1.2 → 12000 bps)."""
    return apply_bps(amount_minor, round(factor * 10_000))


def clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def split_refund(total_minor: int, keep_minor: int) -> tuple[int, int]:
    """``(refund, kept)`` of a charge of ``total_minor`` when ``keep_minor`` is retained.

    The kept part never exceeds the total nor goes below zero.
    """
    kept = clamp(keep_minor, 0, total_minor)
    return total_minor - kept, kept
