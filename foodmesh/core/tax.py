"""Sales tax by jurisdiction: a table keyed by the address's state and zip. Pure.

A zip-level entry (5 digits, or a 3-digit prefix) wins over its state's entry;
an address without a known state falls back to ``DEFAULT`` (the Order service's
fallback rate, so both agree). Each jurisdiction says which parts of the bill are
taxable: prepared food always; delivery and service fees where the state taxes
them (California does not tax a separately stated delivery fee; New York and
Texas do). A promo discount lowers the taxable food (it is a price reduction).
Tax is rounded once, half up, on the taxable sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from foodmesh.core.money import apply_ppm

__all__ = ["DEFAULT", "TABLE", "TaxRule", "TaxTable", "tax_minor"]


@dataclass(frozen=True, slots=True)
class TaxRule:
    """One jurisdiction: its rate (parts per million) and what it taxes."""

    jurisdiction: str
    rate_ppm: int
    food: bool = True
    delivery_fee: bool = False
    service_fee: bool = False

    @property
    def percent(self) -> str:
        return f"{self.rate_ppm / 10_000:.4f}".rstrip("0").rstrip(".") + "%"


DEFAULT = TaxRule("default", 87_500)

#: state → (zip or zip prefix → rule); key "" is the state's own rule.
TABLE: Mapping[str, Mapping[str, TaxRule]] = {
    "CA": {
        "": TaxRule("CA", 72_500),
        "941": TaxRule("CA San Francisco", 86_250),
        "900": TaxRule("CA Los Angeles", 95_000),
        "946": TaxRule("CA Oakland", 102_500),
    },
    "NY": {
        "": TaxRule("NY", 40_000, delivery_fee=True, service_fee=True),
        "100": TaxRule("NY New York City", 88_750, delivery_fee=True, service_fee=True),
        "112": TaxRule("NY Brooklyn", 88_750, delivery_fee=True, service_fee=True),
    },
    "TX": {
        "": TaxRule("TX", 62_500, delivery_fee=True, service_fee=True),
        "787": TaxRule("TX Austin", 82_500, delivery_fee=True, service_fee=True),
    },
    "WA": {
        "": TaxRule("WA", 65_000, delivery_fee=True),
        "981": TaxRule("WA Seattle", 103_500, delivery_fee=True),
    },
    "IL": {
        "": TaxRule("IL", 62_500, service_fee=True),
        "606": TaxRule("IL Chicago", 102_500, service_fee=True),
    },
    "OR": {"": TaxRule("OR", 0)},
}


class TaxTable:
    """Looks up the rule of an address: zip (5 digits, then 3) within the state, then state."""

    def __init__(
        self, table: Mapping[str, Mapping[str, TaxRule]] = TABLE, *, default: TaxRule = DEFAULT
    ) -> None:
        self.table = table
        self.default = default

    def rule(self, state: str, zip_code: str) -> TaxRule:
        by_zip = self.table.get(state.strip().upper())
        if by_zip is None:
            return self.default
        z = zip_code.strip()[:5]
        for key in (z, z[:3]):
            if key and key in by_zip:
                return by_zip[key]
        return by_zip.get("", self.default)


def tax_minor(
    rule: TaxRule,
    *,
    food_minor: int,
    discount_minor: int,
    delivery_fee_minor: int,
    service_fee_minor: int,
    small_order_fee_minor: int,
) -> int:
    """The tax on a bill (``discount_minor`` ≥ 0, taken off the food); never negative."""
    base = 0
    if rule.food:
        base += max(0, food_minor - discount_minor)
    if rule.delivery_fee:
        base += delivery_fee_minor
    if rule.service_fee:
        base += service_fee_minor + small_order_fee_minor
    return max(0, apply_ppm(base, rule.rate_ppm))
