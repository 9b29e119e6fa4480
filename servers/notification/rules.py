"""Who gets what: the events followed, and for each the notices it makes (pure).

An event arrives as ``(source, payload)``: ``source`` is ``"<stream>.<kind>"``
(``orders.confirmed``, ``dispatch.offered``). :func:`facts_of` reads what every rule may
use from the payload; :data:`RULES` says, per source, which recipient gets which event
type on which channels by default. Adding an event type is one entry of ``RULES`` (and
its template in ``templates.py``); an order event of a new kind needs nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from foodmesh.v1 import dispatch_pb2, order_pb2

__all__ = [
    "CHANNELS",
    "EVENT_TYPES",
    "RULES",
    "ROLES",
    "Facts",
    "Notice",
    "Rule",
    "facts_of",
    "notices_for",
    "notification_id",
    "parse_recipient",
]

#: The channels, as stored.
CHANNELS = ("in_app", "email", "push", "sms")
#: The roles that receive notifications.
ROLES = ("customer", "restaurant", "driver")

IN_APP, EMAIL, PUSH, SMS = CHANNELS


@dataclass(frozen=True, slots=True)
class Rule:
    """One recipient of one event: the event type they get and its default channels."""

    event_type: str
    #: Whose id in :class:`Facts` names the recipient: customer, restaurant or driver.
    role: str
    channels: tuple[str, ...]
    #: What makes two notices the same (so the second is dropped): ``order`` (one of this
    #: type per order), ``offer`` (one per offer), ``driver`` (one per order and driver).
    once_per: str = "order"
    #: Sent in quiet hours too (an offer lapses in 20 s; waiting makes it useless).
    urgent: bool = False


#: source -> its rules.
RULES: Mapping[str, tuple[Rule, ...]] = {
    "orders.placed": (Rule("new_order", "restaurant", (IN_APP, EMAIL, PUSH)),),
    # 80 % of the confirmation timeout passed (Order's sweeper): the restaurant must act now.
    "orders.confirm_due_soon": (
        Rule("confirm_due_soon", "restaurant", (IN_APP, PUSH, EMAIL), urgent=True),
    ),
    # A stage's estimate slipped more than 10 min past the promise (Order's ETA stages).
    "orders.delayed": (Rule("delayed", "customer", (IN_APP, PUSH, EMAIL)),),
    "orders.confirmed": (Rule("order_confirmed", "customer", (IN_APP, PUSH, EMAIL)),),
    "orders.picked_up": (Rule("picked_up", "customer", (IN_APP, PUSH)),),
    "orders.delivered": (Rule("delivered", "customer", (IN_APP, PUSH, EMAIL)),),
    "orders.cancelled": (
        Rule("order_cancelled", "customer", (IN_APP, PUSH, EMAIL)),
        Rule("order_cancelled", "restaurant", (IN_APP, EMAIL, PUSH)),
        Rule("order_cancelled", "driver", (IN_APP, PUSH, SMS), urgent=True),
    ),
    "dispatch.assigned": (
        Rule("driver_assigned", "customer", (IN_APP, PUSH, EMAIL), once_per="driver"),
    ),
    "dispatch.offered": (
        Rule("new_offer", "driver", (IN_APP, PUSH, SMS), once_per="offer", urgent=True),
    ),
    # No driver took it in time: Dispatch escalated it (wider search, a bonus).
    "dispatch.escalated": (Rule("no_driver_yet", "customer", (IN_APP, PUSH, EMAIL)),),
    # The driver carrying the food is under 3 min away (Dispatch's navigator, live fixes).
    "dispatch.arriving": (Rule("arriving", "customer", (IN_APP, PUSH), urgent=True),),
    "dispatch.unassigned": (
        Rule("order_reassigned", "driver", (IN_APP, PUSH, SMS), once_per="driver", urgent=True),
    ),
}

#: Every event type some rule makes (what preferences may name).
EVENT_TYPES: frozenset[str] = frozenset(r.event_type for rs in RULES.values() for r in rs)


@dataclass(frozen=True, slots=True)
class Facts:
    """What an event says, as the rules and templates use it."""

    event_id: str
    order_id: str = ""
    customer_id: str = ""
    restaurant_id: str = ""
    driver_id: str = ""
    offer_id: str = ""
    when: dt.datetime | None = None
    #: Values for the templates (restaurant, total, refund, earnings, pickup, reason...).
    values: Mapping[str, str] = field(default_factory=dict)

    def recipient_id(self, role: str) -> str:
        return {"customer": self.customer_id, "restaurant": self.restaurant_id,
                "driver": self.driver_id}.get(role, "")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Notice:
    """One event for one recipient, before preferences pick its channels."""

    event_id: str
    recipient: str
    event_type: str
    order_id: str
    dedupe_key: str
    channels: tuple[str, ...]
    urgent: bool
    values: Mapping[str, str]

    @property
    def notification_id(self) -> str:
        return notification_id(self.event_id, self.recipient)


def notification_id(event_id: str, recipient: str) -> str:
    """The inbox id of an event for a recipient: the same on every redelivery."""
    return "n_" + hashlib.sha256(f"{event_id}|{recipient}".encode()).hexdigest()[:24]


def parse_recipient(recipient: str) -> tuple[str, str] | None:
    """``"customer:c-1"`` -> ``("customer", "c-1")``; None when it is not a recipient."""
    role, sep, ident = recipient.partition(":")
    if not sep or role not in ROLES or not ident or len(recipient) > 160:
        return None
    return role, ident


def _money(m: object) -> str:
    amount = getattr(m, "amount_minor", 0)
    currency = getattr(m, "currency_code", "") or "USD"
    return f"${amount / 100:.2f}" if currency == "USD" else f"{amount / 100:.2f} {currency}"


def _stamp(ts: object) -> dt.datetime | None:
    if ts is None or not getattr(ts, "seconds", 0):
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)  # type: ignore[attr-defined, no-any-return]


def _short(order_id: str) -> str:
    return order_id[-6:].upper() if order_id else ""


def facts_of(source: str, data: bytes) -> Facts | None:
    """What the event says; None for a source no rule follows (or a payload not decodable)."""
    if source not in RULES:
        return None
    stream, _, kind = source.partition(".")
    try:
        if stream == "orders":
            return _order_facts(order_pb2.OrderEvent.FromString(data))
        if stream == "dispatch":
            return _dispatch_facts(dispatch_pb2.DispatchEvent.FromString(data))
    except Exception:  # a payload that does not decode is not retried forever
        return None
    return None


def _order_facts(ev: order_pb2.OrderEvent) -> Facts:
    o = ev.order
    eta = _stamp(o.estimated_delivery_time)
    values = {
        "order": _short(o.order_id),
        "restaurant": o.restaurant_name or "the restaurant",
        "items": str(sum(i.quantity for i in o.items)),
        "total": _money(o.pricing.total) if o.HasField("pricing") else "",
        "refund": _money(o.refunded) if o.HasField("refunded") else "",
        "reason": o.cancellation_reason or ev.change.reason,
        "eta": eta.strftime("%H:%M UTC") if eta else "",
        "address": o.delivery_address.street if o.HasField("delivery_address") else "",
        "proof": "a photo at the door" if o.leave_at_door else "the PIN you gave",
    }
    return Facts(
        event_id=ev.event_id,
        order_id=o.order_id,
        customer_id=o.customer_id,
        restaurant_id=o.restaurant_id,
        driver_id=o.driver_id,
        when=_stamp(ev.event_time),
        values=values,
    )


def _dispatch_facts(ev: dispatch_pb2.DispatchEvent) -> Facts:
    a = ev.assignment
    eta = _stamp(a.estimated_delivery_time)
    values = {
        "order": _short(a.order_id),
        "pickup": a.pickup.label,
        "dropoff": a.dropoff.label,
        "eta": eta.strftime("%H:%M UTC") if eta else "",
        "reason": ev.reason,
    }
    driver_id = a.driver_id
    offer_id = ""
    if ev.HasField("offer"):
        offer_id = ev.offer.offer_id
        driver_id = driver_id or ev.offer.driver_id
        values["earnings"] = _money(ev.offer.expected_earnings)
        values["miles"] = f"{ev.offer.distance_miles:.1f}"
    return Facts(
        event_id=ev.event_id,
        order_id=a.order_id,
        driver_id=driver_id,
        offer_id=offer_id,
        when=_stamp(ev.event_time),
        values=values,
    )


def notices_for(source: str, facts: Facts) -> list[Notice]:
    """The notices an event makes: one per rule whose recipient the event names."""
    out: list[Notice] = []
    for rule in RULES.get(source, ()):
        ident = facts.recipient_id(rule.role)
        if not ident:
            continue
        if rule.once_per == "offer":
            key = f"offer:{facts.offer_id or facts.event_id}"
        elif rule.once_per == "driver":
            key = f"{facts.order_id}:{rule.event_type}:{facts.driver_id}"
        else:
            key = f"{facts.order_id or facts.event_id}:{rule.event_type}"
        out.append(
            Notice(
                event_id=facts.event_id,
                recipient=f"{rule.role}:{ident}",
                event_type=rule.event_type,
                order_id=facts.order_id,
                dedupe_key=key,
                channels=rule.channels,
                urgent=rule.urgent,
                values=facts.values,
            )
        )
    return out
