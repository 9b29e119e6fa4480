"""Delivery, service and small-order fees. Pure.

- delivery fee: the delivery zone's fee (from the Catalog) plus a distance band
  surcharge, times the surge (in tenths), rounded half up;
- service fee: a percentage of the subtotal, between a minimum and a maximum
  (the design's $1.50 on $23.98);
- small-order fee: a flat fee when the subtotal is under a threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from foodmesh.core.geo import METERS_PER_MILE
from foodmesh.core.money import apply_bps, apply_tenths, clamp

__all__ = ["DistanceBand", "FeeSchedule"]


@dataclass(frozen=True, slots=True)
class DistanceBand:
    """Trips up to ``up_to_m`` metres pay ``surcharge_minor`` on top of the zone's fee."""

    up_to_m: float
    surcharge_minor: int
    label: str


_BANDS = (
    DistanceBand(2 * METERS_PER_MILE, 0, "up to 2 mi"),
    DistanceBand(4 * METERS_PER_MILE, 100, "2-4 mi"),
    DistanceBand(7 * METERS_PER_MILE, 200, "4-7 mi"),
    DistanceBand(math.inf, 400, "over 7 mi"),
)


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    bands: tuple[DistanceBand, ...] = _BANDS
    service_fee_bps: int = 500
    service_fee_min_minor: int = 150
    service_fee_max_minor: int = 500
    small_order_below_minor: int = 1000
    small_order_fee_minor: int = 200

    def band(self, distance_m: float) -> DistanceBand:
        for b in self.bands:
            if distance_m <= b.up_to_m:
                return b
        return self.bands[-1]

    def delivery_base(self, zone_fee_minor: int, distance_m: float) -> int:
        """The delivery fee before surge."""
        return max(0, zone_fee_minor) + self.band(distance_m).surcharge_minor

    def delivery_fee(self, zone_fee_minor: int, distance_m: float, surge_tenths: int) -> int:
        return apply_tenths(self.delivery_base(zone_fee_minor, distance_m), surge_tenths)

    def service_fee(self, subtotal_minor: int) -> int:
        if subtotal_minor <= 0:
            return 0
        return clamp(
            apply_bps(subtotal_minor, self.service_fee_bps),
            self.service_fee_min_minor,
            self.service_fee_max_minor,
        )

    def small_order_fee(self, subtotal_minor: int) -> int:
        return self.small_order_fee_minor if subtotal_minor < self.small_order_below_minor else 0
