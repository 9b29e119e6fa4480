"""The offer and assignment lifecycle: expiry, failures, escalation, the driver's steps. Pure.

An order's assignment goes::

    pending ──offer──▶ offered ──accept──▶ assigned → at_restaurant → picked_up
       ▲  ▲               │                   │            → at_customer → delivered
       │  └──reject/lapse─┘ (driver excluded) │
       └──────── driver lost before pickup ───┘ (front of the pool)

An offer lapses ``expiry_s`` (20 s) after it is made. After ``max_attempts`` (3)
failed offers the order is *escalated*: it stays in the pool, with a wider
radius, a higher payout hint, and ops see it in ListAssignments. The store
enforces the invariants (one open offer per driver and per order, one active
order per driver) with PostgreSQL constraints; this module decides, the store
commits only what these rules allow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from foodmesh.core.errors import FailedPrecondition

__all__ = [
    "ACTIVE",
    "HELD",
    "POOL",
    "Action",
    "AssignmentStatus",
    "Failure",
    "OfferRules",
    "step",
]


class AssignmentStatus(enum.StrEnum):
    PENDING = "pending"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    AT_RESTAURANT = "at_restaurant"
    PICKED_UP = "picked_up"
    AT_CUSTOMER = "at_customer"
    DELIVERED = "delivered"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"


S = AssignmentStatus
#: Waiting for a driver (matching picks from these).
POOL = frozenset({S.PENDING, S.ESCALATED})
#: A driver holds the order.
HELD = frozenset({S.ASSIGNED, S.AT_RESTAURANT, S.PICKED_UP, S.AT_CUSTOMER})
#: Not finished: what ListAssignments shows by default.
ACTIVE = POOL | HELD | {S.OFFERED}


class Action(enum.StrEnum):
    ARRIVED_AT_RESTAURANT = "arrived_at_restaurant"
    PICKED_UP = "picked_up"
    ARRIVED_AT_CUSTOMER = "arrived_at_customer"
    DELIVERED = "delivered"


_STEP = {
    Action.ARRIVED_AT_RESTAURANT: ({S.ASSIGNED}, S.AT_RESTAURANT),
    Action.PICKED_UP: ({S.ASSIGNED, S.AT_RESTAURANT}, S.PICKED_UP),
    Action.ARRIVED_AT_CUSTOMER: ({S.PICKED_UP}, S.AT_CUSTOMER),
    Action.DELIVERED: ({S.PICKED_UP, S.AT_CUSTOMER}, S.DELIVERED),
}


def step(current: AssignmentStatus, action: Action) -> AssignmentStatus | None:
    """The status after the driver's ``action``; None when already there (a retry).

    Raises FailedPrecondition for a step out of order (delivered before picked up).
    Arriving is optional: a driver may pick up without saying they arrived.
    """
    allowed, to = _STEP[action]
    if current is to:
        return None
    if current not in allowed:
        raise FailedPrecondition(
            f"cannot mark {action.value.replace('_', ' ')}: the delivery is {current.value}",
            reason="OUT_OF_ORDER",
        )
    return to


@dataclass(frozen=True, slots=True)
class Failure:
    """What becomes of an order whose offer was declined or lapsed."""

    status: AssignmentStatus
    radius_miles: float
    escalated_now: bool


@dataclass(frozen=True, slots=True)
class OfferRules:
    """Offer timing, escalation and pay (``FOODMESH_DISPATCH_*``)."""

    expiry_s: float = 20.0
    max_attempts: int = 3
    base_pay_minor: int = 300
    per_mile_minor: int = 150
    #: Payout hint of an escalated order, over the normal pay.
    escalation_bonus: float = 0.5

    def after_failure(
        self,
        *,
        offers_made: int,
        status: AssignmentStatus,
        radius_miles: float,
        wide: float,
        escalated_radius: float,
    ) -> Failure:
        """The order goes back to the pool; escalated after ``max_attempts`` failures."""
        if status is S.ESCALATED or offers_made >= self.max_attempts:
            return Failure(
                S.ESCALATED, max(radius_miles, escalated_radius), status is not S.ESCALATED
            )
        return Failure(S.PENDING, radius_miles, False)

    def earnings_minor(self, trip_miles: float, *, escalated: bool) -> int:
        """What the driver is told they earn: a base plus distance, more when escalated."""
        pay = self.base_pay_minor + self.per_mile_minor * max(0.0, trip_miles)
        if escalated:
            pay *= 1.0 + self.escalation_bonus
        return int(round(pay))
