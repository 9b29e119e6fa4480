"""Money in integer minor units, rounded half up (half away from zero). Pure.

The one home of money arithmetic: Pricing quotes with it, Order refunds with it.
One rounding rule everywhere, written down: **half up** to the minor
unit (0.5 cent goes to the next cent), as printed receipts do; never banker's
rounding, and no float ever touches an amount. Rates are given as integers of a
fixed scale (basis points, parts per million, tenths) so every product is exact
before its single rounding.
"""

from __future__ import annotations

__all__ = ["apply_bps", "apply_ppm", "apply_tenths", "clamp", "mul_ratio", "split_refund"]


def mul_ratio(amount_minor: int, num: int, den: int) -> int:
    """``amount × num / den`` rounded half away from zero (``den`` > 0)."""
    if den <= 0:
        raise ValueError("den must be positive")
    n = amount_minor * num
    q, r = divmod(abs(n), den)
    if 2 * r >= den:
        q += 1
    return q if n >= 0 else -q


def apply_bps(amount_minor: int, bps: int) -> int:
    """``amount × bps / 10 000`` (basis points: 500 is 5 %)."""
    return mul_ratio(amount_minor, bps, 10_000)


def apply_ppm(amount_minor: int, ppm: int) -> int:
    """``amount × ppm / 1 000 000`` (tax rates such as 8.625 % = 86 250 ppm)."""
    return mul_ratio(amount_minor, ppm, 1_000_000)


def apply_tenths(amount_minor: int, tenths: int) -> int:
    """``amount × tenths / 10`` (a surge of 1.3 is 13 tenths)."""
    return mul_ratio(amount_minor, tenths, 10)


def clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def split_refund(total_minor: int, keep_minor: int) -> tuple[int, int]:
    """``(refund, kept)`` of a charge of ``total_minor`` when ``keep_minor`` is retained.

    The kept part never exceeds the total nor goes below zero.
    """
    kept = clamp(keep_minor, 0, total_minor)
    return total_minor - kept, kept
