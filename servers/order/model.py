"""The Order service's plain data: an order, its lines, its timeline, a change to it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from servers.order.transitions import Status

__all__ = ["Change", "Entry", "Line", "Order"]


@dataclass(frozen=True, slots=True)
class Line:
    item_id: str
    name: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int
    customizations: tuple[str, ...] = ()
    special_instructions: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    status: Status
    at: dt.datetime
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    customer_id: str
    restaurant_id: str
    restaurant_name: str
    restaurant_lat: float
    restaurant_lon: float
    driver_id: str
    status: Status
    delivery_address: dict[str, Any]
    delivery_option: int
    scheduled_time: dt.datetime | None
    currency: str
    subtotal_minor: int
    delivery_fee_minor: int
    service_fee_minor: int
    small_order_fee_minor: int
    tax_minor: int
    discount_minor: int
    tip_minor: int
    total_minor: int
    surge_multiplier: float
    quote_id: str
    promo_code: str
    payment_provider: str
    payment_id: str
    payment_status: str
    refunded_minor: int
    payment_pending: dict[str, Any] | None
    estimated_delivery_time: dt.datetime
    eta_confidence: float
    ready_time: dt.datetime
    #: When a scheduled order goes to the kitchen (None: at once).
    release_at: dt.datetime | None
    #: False while a scheduled order waits for ``release_at``.
    released: bool
    cancellation_reason: str
    last_seq: int
    created_at: dt.datetime
    updated_at: dt.datetime
    items: tuple[Line, ...] = ()
    timeline: tuple[Entry, ...] = ()
    #: The delivery time promised at placement (``estimated_delivery_time`` moves on with
    #: later estimates); None for orders placed before it was kept.
    promised_delivery_time: dt.datetime | None = None
    #: The 4-digit proof-of-delivery PIN shown to the customer only ('' before it was issued).
    delivery_pin: str = ""
    #: Wrong PINs given so far; at ``MAX_PIN_ATTEMPTS`` the PIN is locked (ops decide).
    pin_attempts: int = 0
    #: The customer asked to leave it at the door: a photo reference proves delivery.
    leave_at_door: bool = False
    #: What paid: the saved method's id or the one-off token, and how it is shown
    #: ("Apple Pay · Visa •••• 4242"); '' for orders placed before they were kept.
    payment_method: str = ""
    payment_method_name: str = ""
    #: What is wrong with the order in flight (``{"kind": "no_driver" | "driver_lost",
    #: "since", "reason", "lat", "lon", "driver_id", "bonus_minor"}``), or None.
    alert: dict[str, Any] | None = None
    #: From when its customer may cancel free of charge (no driver found), or None.
    free_cancel_after: dt.datetime | None = None
    #: The restaurant's cell at placement (Pricing's surge): free drivers, the WeatherKind
    #: in force, the event factor; each None when unknown. Sent with every ETA estimate.
    eta_drivers_nearby: int | None = None
    eta_weather: int | None = None
    eta_event_multiplier: float | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """What a status step, a cancellation or a driver assignment does to an order."""

    status: Status
    actor: str
    reason: str = ""
    driver_id: str | None = None
    cancellation_reason: str | None = None
    #: A payment operation to record as pending (done after the commit, retried until done).
    payment_pending: dict[str, Any] | None = None
    estimated_delivery_time: dt.datetime | None = None
    #: The event's subject suffix (``orders.v1.<event>``); the new status by default.
    event: str | None = None
    #: Replace the order's alert with ``alert`` (None clears it); untouched otherwise.
    set_alert: bool = False
    alert: dict[str, Any] | None = None
    free_cancel_after: dt.datetime | None = None
