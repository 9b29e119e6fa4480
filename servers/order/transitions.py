"""The order state machine: which status may follow which, who may make each step,
and what a cancellation refunds. Pure: plain values in, plain values out.

    placed → confirmed → preparing → ready_for_pickup → picked_up → in_transit → delivered
       ╰──────────┴───────────┴──────────────╯
                    cancelled (before pickup)

Steps belong to a side: the kitchen's (confirm, prepare, ready) to the order's
restaurant, the road's (pick up, in transit, deliver) to the order's assigned
driver, who makes them only through Dispatch's driver session (Dispatch then
steps the order as a service, for the driver, with the proof of delivery): a
driver's own token cannot make them here. Ops and internal services may make any
legal step. Customers make none but may cancel their own order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from foodmesh.core.money import split_refund

__all__ = [
    "CANCELLABLE",
    "FINAL",
    "Actor",
    "IllegalTransition",
    "NotAllowed",
    "ROAD",
    "Refund",
    "Status",
    "cancel_refund",
    "check_cancel",
    "check_step",
    "next_status",
]


class Status(enum.StrEnum):
    PLACED = "placed"
    CONFIRMED = "confirmed"
    PREPARING = "preparing"
    READY_FOR_PICKUP = "ready_for_pickup"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


_CHAIN = (
    Status.PLACED,
    Status.CONFIRMED,
    Status.PREPARING,
    Status.READY_FOR_PICKUP,
    Status.PICKED_UP,
    Status.IN_TRANSIT,
    Status.DELIVERED,
)
_NEXT = {a: b for a, b in zip(_CHAIN, _CHAIN[1:], strict=False)}
FINAL = frozenset({Status.DELIVERED, Status.CANCELLED})
CANCELLABLE = frozenset(
    {Status.PLACED, Status.CONFIRMED, Status.PREPARING, Status.READY_FOR_PICKUP}
)
_KITCHEN = frozenset({Status.CONFIRMED, Status.PREPARING, Status.READY_FOR_PICKUP})
ROAD = frozenset({Status.PICKED_UP, Status.IN_TRANSIT, Status.DELIVERED})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks, and how they relate to the order."""

    role: str
    subject: str


class IllegalTransition(Exception):
    """``to`` cannot follow ``current``."""

    def __init__(self, current: Status, to: Status) -> None:
        super().__init__(f"an order that is {current.value} cannot become {to.value}")
        self.current = current
        self.to = to


class NotAllowed(Exception):
    """The step is legal but not this caller's to make."""


def next_status(current: Status) -> Status | None:
    """The one status that may follow ``current`` on the happy path (None when final)."""
    return _NEXT.get(current)


def check_step(
    current: Status, to: Status, actor: Actor, *, restaurant_id: str, driver_id: str
) -> None:
    """Raises IllegalTransition or NotAllowed unless ``actor`` may move ``current`` → ``to``.

    Cancellation is not a step (it is illegal here): see :func:`check_cancel`.
    """
    if _NEXT.get(current) is not to:
        raise IllegalTransition(current, to)
    if actor.role in ("ops", "service"):
        return
    if to in _KITCHEN:
        if actor.role == "restaurant" and actor.subject == restaurant_id:
            return
        raise NotAllowed(f"only the order's restaurant may mark it {to.value}")
    if to in ROAD:
        if actor.role == "driver":
            raise NotAllowed(
                f"drivers mark an order {to.value} through their DriverSession"
                " (DispatchService), which checks the proof of delivery"
            )
        raise NotAllowed(f"only the order's assigned driver may mark it {to.value}")
    raise NotAllowed(f"nobody but ops may mark an order {to.value}")  # pragma: no cover


def check_cancel(current: Status, actor: Actor, *, customer_id: str, restaurant_id: str) -> None:
    """Raises IllegalTransition or NotAllowed unless ``actor`` may cancel now."""
    if current not in CANCELLABLE:
        raise IllegalTransition(current, Status.CANCELLED)
    if actor.role in ("ops", "service"):
        return
    if actor.role == "customer" and customer_id and actor.subject == customer_id:
        return
    if actor.role == "restaurant" and actor.subject == restaurant_id:
        return
    raise NotAllowed("only the order's customer, its restaurant or ops may cancel it")


@dataclass(frozen=True, slots=True)
class Refund:
    """What a cancellation gives back and keeps, in minor units."""

    refund_minor: int
    kept_minor: int
    why: str


def cancel_refund(
    current: Status, actor_role: str, *, total_minor: int, subtotal_minor: int, tax_minor: int
) -> Refund:
    """The refund of cancelling at ``current`` (the policy, stage by stage).

    - placed, confirmed: nothing was cooked: everything back.
    - cancelled by the restaurant, ops or a service: never the customer's fault: everything back.
    - preparing, by the customer: half the food (and its tax) is kept.
    - ready_for_pickup, by the customer: the food and its tax are kept; fees and tip come back.
    """
    if current not in CANCELLABLE:
        raise IllegalTransition(current, Status.CANCELLED)
    if current in (Status.PLACED, Status.CONFIRMED):
        r, k = split_refund(total_minor, 0)
        return Refund(r, k, "cancelled before cooking started: full refund")
    if actor_role != "customer":
        r, k = split_refund(total_minor, 0)
        return Refund(r, k, "cancelled by the restaurant or operations: full refund")
    if current is Status.PREPARING:
        r, k = split_refund(total_minor, (subtotal_minor + tax_minor + 1) // 2)
        return Refund(r, k, "cancelled while cooking: half the food and its tax kept")
    r, k = split_refund(total_minor, subtotal_minor + tax_minor)
    return Refund(r, k, "cancelled with the food ready: food and its tax kept")
