"""Promo code rules: does a code apply to this cart, and how much does it take off. Pure.

A code is checked in this order, and the first rule it breaks is the reason given
(``PromoRejected.reason``): not yet valid, expired, wrong region, wrong currency,
exhausted (all uses taken), first order only, already used (this customer's
limit), minimum not met. Percent discounts round half up to the minor unit;
every discount is capped by ``max_discount`` and by the subtotal itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from foodmesh.core.money import apply_bps

__all__ = [
    "DiscountKind",
    "Promo",
    "PromoRejected",
    "PromoUsage",
    "check_redeemable",
    "discount_minor",
    "normalize",
]


class DiscountKind(enum.Enum):
    PERCENT = "percent"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class Promo:
    code: str
    kind: DiscountKind
    #: Percent off in basis points (20 % = 2000) for PERCENT.
    percent_bps: int = 0
    #: Amount off for FIXED.
    amount_off_minor: int = 0
    currency: str = "USD"
    min_subtotal_minor: int = 0
    #: Largest discount; 0 is no cap.
    max_discount_minor: int = 0
    first_order_only: bool = False
    #: Uses per customer; 0 is unlimited.
    per_customer_limit: int = 0
    #: Uses in all; 0 is unlimited.
    total_limit: int = 0
    start_ts: float | None = None
    end_ts: float | None = None
    #: Geohash prefixes where it applies; empty is everywhere.
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromoUsage:
    """What is counted so far: the customer's uses, all uses, the customer's past orders."""

    customer_uses: int = 0
    total_uses: int = 0
    customer_orders: int = 0


class PromoRejected(Exception):
    """The code does not apply; ``reason`` is machine-readable, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def normalize(code: str) -> str:
    """Codes are case-insensitive and stored upper case."""
    return code.strip().upper()


def _check_usage(promo: Promo, usage: PromoUsage) -> None:
    if promo.total_limit and usage.total_uses >= promo.total_limit:
        raise PromoRejected("EXHAUSTED", f"{promo.code} has been used up")
    if promo.first_order_only and usage.customer_orders > 0:
        raise PromoRejected("FIRST_ORDER_ONLY", f"{promo.code} is for a first order only")
    if promo.per_customer_limit and usage.customer_uses >= promo.per_customer_limit:
        raise PromoRejected(
            "ALREADY_USED",
            f"{promo.code} was already used ({usage.customer_uses} of "
            f"{promo.per_customer_limit} uses)",
        )


def check_redeemable(promo: Promo, usage: PromoUsage, *, now: float) -> None:
    """The checks that hold at redemption time (validity window and use counts)."""
    _check_window(promo, now)
    _check_usage(promo, usage)


def _check_window(promo: Promo, now: float) -> None:
    if promo.start_ts is not None and now < promo.start_ts:
        raise PromoRejected("NOT_YET_VALID", f"{promo.code} is not valid yet")
    if promo.end_ts is not None and now > promo.end_ts:
        raise PromoRejected("EXPIRED", f"{promo.code} has expired")


def discount_minor(
    promo: Promo,
    *,
    subtotal_minor: int,
    currency: str,
    cell: str,
    usage: PromoUsage,
    now: float,
) -> int:
    """The discount (≥ 0, never more than the subtotal); raises :class:`PromoRejected`."""
    _check_window(promo, now)
    if promo.regions and not any(cell.startswith(r) for r in promo.regions):
        raise PromoRejected("WRONG_REGION", f"{promo.code} does not apply in this area")
    if promo.kind is DiscountKind.FIXED and promo.currency != currency:
        raise PromoRejected("WRONG_CURRENCY", f"{promo.code} is for {promo.currency} orders")
    _check_usage(promo, usage)
    if subtotal_minor < promo.min_subtotal_minor:
        raise PromoRejected(
            "MINIMUM_NOT_MET",
            f"{promo.code} needs a subtotal of at least {promo.min_subtotal_minor} "
            f"({currency} minor units); this cart is {subtotal_minor}",
        )
    if promo.kind is DiscountKind.PERCENT:
        off = apply_bps(subtotal_minor, promo.percent_bps)
    else:
        off = promo.amount_off_minor
    if promo.max_discount_minor:
        off = min(off, promo.max_discount_minor)
    return max(0, min(off, subtotal_minor))
