"""A quote's amounts and receipt lines from priced inputs. Pure.

Every amount is an integer of minor units; the lines a receipt shows are exactly
the components, so they always sum to the total (``Breakdown.total``).
"""

from __future__ import annotations

from dataclasses import dataclass

from foodmesh.core.fees import FeeSchedule
from foodmesh.core.tax import TaxRule, tax_minor

__all__ = ["Breakdown", "Line", "compute_breakdown"]


@dataclass(frozen=True, slots=True)
class Line:
    kind: str
    label: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Breakdown:
    subtotal_minor: int
    delivery_fee_minor: int
    service_fee_minor: int
    small_order_fee_minor: int
    tax_minor: int
    #: Negative or zero.
    discount_minor: int
    lines: tuple[Line, ...]

    @property
    def total_minor(self) -> int:
        return (
            self.subtotal_minor
            + self.delivery_fee_minor
            + self.service_fee_minor
            + self.small_order_fee_minor
            + self.tax_minor
            + self.discount_minor
        )


def _money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def compute_breakdown(
    *,
    subtotal_minor: int,
    zone_fee_minor: int,
    distance_m: float,
    surge_tenths: int,
    discount_off_minor: int,
    tax_rule: TaxRule,
    fees: FeeSchedule,
    promo_code: str = "",
) -> Breakdown:
    """The bill: fees from the schedule, surge on the delivery fee, tax, then the discount."""
    if subtotal_minor < 0 or discount_off_minor < 0 or surge_tenths < 10:
        raise ValueError("negative subtotal or discount, or a surge under 1.0")
    off = min(discount_off_minor, subtotal_minor)
    base = fees.delivery_base(zone_fee_minor, distance_m)
    delivery = fees.delivery_fee(zone_fee_minor, distance_m, surge_tenths)
    service = fees.service_fee(subtotal_minor)
    small = fees.small_order_fee(subtotal_minor)
    tax = tax_minor(
        tax_rule,
        food_minor=subtotal_minor,
        discount_minor=off,
        delivery_fee_minor=delivery,
        service_fee_minor=service,
        small_order_fee_minor=small,
    )
    band = fees.band(distance_m).label
    lines = [Line("subtotal", "Subtotal", subtotal_minor)]
    if surge_tenths > 10:
        label = f"Delivery fee ({band}, {_money(base)} x {surge_tenths / 10:.1f} busy-area surge)"
    else:
        label = f"Delivery fee ({band})"
    lines.append(Line("delivery_fee", label, delivery))
    lines.append(Line("service_fee", "Service fee", service))
    if small:
        under = _money(fees.small_order_below_minor)
        lines.append(Line("small_order_fee", f"Small order fee (under {under})", small))
    lines.append(Line("tax", f"Tax ({tax_rule.jurisdiction}, {tax_rule.percent})", tax))
    if off:
        lines.append(Line("discount", f"Promo {promo_code}", -off))
    return Breakdown(
        subtotal_minor=subtotal_minor,
        delivery_fee_minor=delivery,
        service_fee_minor=service,
        small_order_fee_minor=small,
        tax_minor=tax,
        discount_minor=-off,
        lines=tuple(lines),
    )
