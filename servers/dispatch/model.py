"""Plain records of the Dispatch service, as the store reads and writes them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from servers.dispatch.offers import AssignmentStatus

__all__ = ["Assignment", "Driver", "OfferRow", "OrderCall", "SessionState"]


@dataclass(frozen=True, slots=True)
class Driver:
    driver_id: str
    name: str = ""
    vehicle_type: int = 3
    vehicle: str = ""
    photo_url: str = ""
    status: str = "offline"
    region: str = ""
    session_id: str = ""
    rating: float = 5.0
    rating_count: int = 0
    completed: int = 0
    acceptance: float = 1.0


@dataclass(frozen=True, slots=True)
class Assignment:
    order_id: str
    region: str
    status: AssignmentStatus
    driver_id: str
    pickup_lat: float
    pickup_lon: float
    pickup_label: str
    dropoff_lat: float
    dropoff_lon: float
    dropoff_label: str
    ready_at: dt.datetime
    offers_made: int
    excluded: list[str]
    radius_miles: float
    front: bool
    tip_minor: int
    currency: str
    est_pickup_at: dt.datetime | None
    est_delivery_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def __post_init__(self) -> None:
        # Read from PostgreSQL (psycopg's class_row) the status is its text.
        if not isinstance(self.status, AssignmentStatus):
            object.__setattr__(self, "status", AssignmentStatus(self.status))


@dataclass(frozen=True, slots=True)
class OfferRow:
    offer_id: str
    order_id: str
    driver_id: str
    attempt: int
    status: str
    reason: str
    earnings_minor: int
    currency: str
    distance_miles: float
    score: float
    created_at: dt.datetime
    expire_at: dt.datetime
    answered_at: dt.datetime | None = None
    #: Why this driver (``Proposal.why``, JSON).
    why: str = ""


@dataclass(frozen=True, slots=True)
class OrderCall:
    id: int
    order_id: str
    driver_id: str
    reason: str
    est_delivery_at: dt.datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class SessionState:
    driver: Driver
    offer: OfferRow | None = None
    assignment: Assignment | None = None
    extra: dict[str, str] = field(default_factory=dict)
