"""Requests to plain data and back: every check on input lives here, each naming its field."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import re

from google.protobuf.timestamp_pb2 import Timestamp

from foodmesh.core.errors import InvalidArgument, Violations
from foodmesh.v1 import common_pb2, order_pb2
from servers.order.model import Entry, Order
from servers.order.transitions import Status
from servers.runtime.ids import check_id
from servers.runtime.limits import max_items

__all__ = [
    "MAX_LINES",
    "MAX_TIP_MINOR",
    "check_id",
    "check_place",
    "decode_cursor",
    "encode_cursor",
    "entry_to_pb",
    "order_to_pb",
    "page_size",
    "request_hash",
    "status_from_pb",
    "status_to_pb",
]

OS = common_pb2.OrderStatus
MAX_LINES = max_items(order_pb2.PlaceOrderRequest.DESCRIPTOR, "items")
#: A tip is at most this (minor units), and at most the subtotal or ``TIP_FLOOR_MINOR``,
#: whichever is more (checked once the menu prices the lines, before any card hold).
MAX_TIP_MINOR = 100_000
TIP_FLOOR_MINOR = 2_000
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TEXT_MAX = 500
_ADDRESS_FIELDS = ("street", "unit", "city", "state", "zip", "country", "instructions")
SCHEDULE_MIN = dt.timedelta(minutes=30)
SCHEDULE_MAX = dt.timedelta(days=7)


def status_to_pb(s: Status) -> common_pb2.OrderStatus.ValueType:
    return OS.Value("ORDER_STATUS_" + s.value.upper())


def status_from_pb(value: int) -> Status | None:
    if value == OS.ORDER_STATUS_UNSPECIFIED or value not in OS.values():
        return None
    return Status(OS.Name(value).removeprefix("ORDER_STATUS_").lower())  # type: ignore[arg-type]


def require_id(value: str, path: str) -> None:
    v = Violations()
    check_id(v, value, path)
    v.raise_if_any()


def check_place(req: order_pb2.PlaceOrderRequest, now: dt.datetime) -> None:
    """Every shape check of a PlaceOrder request (menus, zones and hours come later)."""
    v = Violations()
    if not req.idempotency_key:
        v.add("idempotency_key", "is required (a client-chosen key; retry with the same one)")
    else:
        v.check(bool(_KEY.match(req.idempotency_key)), "idempotency_key",
                "must be 1-255 printable ASCII characters")  # fmt: skip
    check_id(v, req.restaurant_id, "restaurant_id")
    if not req.items:
        v.add("items", "at least one item is required")
    elif len(req.items) > MAX_LINES:  # the runtime refuses these first; never walk them here
        raise InvalidArgument.field("items", f"at most {MAX_LINES} items")
    for i, it in enumerate(req.items):
        p = f"items[{i}]"
        check_id(v, it.item_id, f"{p}.item_id")
        v.check(1 <= it.quantity <= 99, f"{p}.quantity", "must be 1 to 99")
        v.check(len(it.special_instructions) <= _TEXT_MAX, f"{p}.special_instructions",
                f"must be at most {_TEXT_MAX} characters")  # fmt: skip
        v.check(len(it.customizations) <= 50, f"{p}.customizations", "at most 50 options")
        if it.HasField("price"):
            v.check(it.price.amount_minor >= 0, f"{p}.price.amount_minor", "must not be negative")
            if it.price.currency_code:
                v.check(bool(_CURRENCY.match(it.price.currency_code)), f"{p}.price.currency_code",
                        "must be an ISO 4217 code such as USD")  # fmt: skip
    if not req.HasField("delivery_address"):
        v.add("delivery_address", "is required")
    else:
        a = req.delivery_address
        v.check(math.isfinite(a.lat) and -90 <= a.lat <= 90, "delivery_address.lat",
                "must be within [-90, 90]")  # fmt: skip
        v.check(math.isfinite(a.lon) and -180 <= a.lon <= 180, "delivery_address.lon",
                "must be within [-180, 180]")  # fmt: skip
        v.check(not (a.lat == 0 and a.lon == 0), "delivery_address",
                "lat and lon are required")  # fmt: skip
        for name in _ADDRESS_FIELDS:
            v.check(len(getattr(a, name)) <= _TEXT_MAX, f"delivery_address.{name}",
                    f"must be at most {_TEXT_MAX} characters")  # fmt: skip
    # Empty pays with the customer's default saved method (resolved at payment).
    v.check(len(req.payment_method_id) <= 255, "payment_method_id", "at most 255 characters")
    if req.HasField("tip"):
        v.check(0 <= req.tip.amount_minor <= MAX_TIP_MINOR, "tip.amount_minor",
                f"must be 0 to {MAX_TIP_MINOR} minor units")  # fmt: skip
        if req.tip.currency_code:
            v.check(bool(_CURRENCY.match(req.tip.currency_code)), "tip.currency_code",
                    "must be an ISO 4217 code such as USD")  # fmt: skip
    v.check(len(req.promo_code) <= 64, "promo_code", "at most 64 characters")
    if req.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED:
        if not req.HasField("scheduled_time"):
            v.add("scheduled_time", "is required for a scheduled order")
        else:
            when = req.scheduled_time.ToDatetime(dt.UTC)
            v.check(now + SCHEDULE_MIN <= when <= now + SCHEDULE_MAX, "scheduled_time",
                    "must be 30 minutes to 7 days ahead")  # fmt: skip
    elif req.delivery_option not in (
        order_pb2.DELIVERY_OPTION_UNSPECIFIED,
        order_pb2.DELIVERY_OPTION_STANDARD,
    ):
        v.add("delivery_option", "unknown option")
    elif req.HasField("scheduled_time"):
        v.add("scheduled_time", "only for delivery_option SCHEDULED")
    v.raise_if_any()


def request_hash(req: order_pb2.PlaceOrderRequest) -> str:
    """A digest of the request body without its key: same body, same digest."""
    body = order_pb2.PlaceOrderRequest()
    body.CopyFrom(req)
    body.ClearField("idempotency_key")
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def page_size(v: Violations, size: int) -> int:
    v.check(0 <= size <= 100, "page_size", "must be 0 (default 20) to 100")
    return size or 20


def encode_cursor(scope: str, last_id: str) -> str:
    raw = json.dumps([hashlib.sha256(scope.encode()).hexdigest()[:16], last_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, scope: str) -> str:
    """The last order id of the previous page; InvalidArgument if the token is not ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        digest, last_id = json.loads(raw)
        if digest == hashlib.sha256(scope.encode()).hexdigest()[:16] and isinstance(last_id, str):
            return last_id
    except (ValueError, TypeError):
        pass
    raise InvalidArgument.field("page_token", "malformed, or from a list with other filters")


def _ts(when: dt.datetime | None) -> Timestamp | None:
    if when is None:
        return None
    t = Timestamp()
    t.FromDatetime(when)
    return t


def _money(amount: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency_code=currency)


_PAYMENT = {
    "authorized": order_pb2.PAYMENT_STATUS_AUTHORIZED,
    "captured": order_pb2.PAYMENT_STATUS_CAPTURED,
    "partially_refunded": order_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    "refunded": order_pb2.PAYMENT_STATUS_REFUNDED,
    "voided": order_pb2.PAYMENT_STATUS_VOIDED,
}


def entry_to_pb(e: Entry) -> order_pb2.TimelineEntry:
    return order_pb2.TimelineEntry(seq=e.seq, status=status_to_pb(e.status),
                                   timestamp=_ts(e.at), actor=e.actor, reason=e.reason)  # fmt: skip


def order_to_pb(o: Order, *, with_pin: bool = False) -> order_pb2.Order:
    """The order as callers see it; ``with_pin`` only for its own customer (never events):
    the delivery PIN and what paid are in that view only."""
    c = o.currency
    a = o.delivery_address
    return order_pb2.Order(
        order_id=o.order_id,
        customer_id=o.customer_id,
        restaurant_id=o.restaurant_id,
        restaurant_name=o.restaurant_name,
        items=[
            order_pb2.OrderItem(
                item_id=ln.item_id,
                name=ln.name,
                quantity=ln.quantity,
                unit_price=_money(ln.unit_price_minor, c),
                line_total=_money(ln.line_total_minor, c),
                customizations=ln.customizations,
                special_instructions=ln.special_instructions,
            )
            for ln in o.items
        ],
        delivery_address=common_pb2.Address(
            lat=float(a.get("lat", 0.0)),
            lon=float(a.get("lon", 0.0)),
            **{k: str(a.get(k, "")) for k in _ADDRESS_FIELDS},
        ),
        delivery_option=o.delivery_option,  # type: ignore[arg-type]
        scheduled_time=_ts(o.scheduled_time),
        status=status_to_pb(o.status),
        pricing=order_pb2.Pricing(
            subtotal=_money(o.subtotal_minor, c),
            delivery_fee=_money(o.delivery_fee_minor, c),
            service_fee=_money(o.service_fee_minor, c),
            small_order_fee=_money(o.small_order_fee_minor, c),
            tax=_money(o.tax_minor, c),
            discount=_money(o.discount_minor, c),
            total=_money(o.total_minor, c),
            surge_multiplier=o.surge_multiplier,
            quote_id=o.quote_id,
            tip=_money(o.tip_minor, c),
        ),
        payment_status=_PAYMENT.get(o.payment_status, order_pb2.PAYMENT_STATUS_UNSPECIFIED),
        driver_id=o.driver_id,
        estimated_delivery_time=_ts(o.estimated_delivery_time),
        eta_confidence=o.eta_confidence,
        timeline=[entry_to_pb(e) for e in o.timeline],
        created_at=_ts(o.created_at),
        updated_at=_ts(o.updated_at),
        cancellation_reason=o.cancellation_reason,
        refunded=_money(o.refunded_minor, c),
        promo_code=o.promo_code,
        restaurant_location=common_pb2.LatLng(lat=o.restaurant_lat, lon=o.restaurant_lon),
        ready_time=_ts(o.ready_time),
        delivery_pin=o.delivery_pin if with_pin else "",
        leave_at_door=o.leave_at_door,
        payment_method_id=o.payment_method if with_pin else "",
        payment_method_name=o.payment_method_name if with_pin else "",
        alert=alert_to_pb(o.alert, c),
        free_cancel_after=_ts(o.free_cancel_after),
    )


_ALERT_KINDS = {
    "no_driver": order_pb2.ORDER_ALERT_KIND_NO_DRIVER,
    "driver_lost": order_pb2.ORDER_ALERT_KIND_DRIVER_LOST,
}


def alert_to_pb(alert: dict[str, object] | None, currency: str) -> order_pb2.OrderAlert | None:
    """An order's alert (``model.Order.alert``) as the contract shows it; None when none."""
    if not alert:
        return None
    since = alert.get("since")
    return order_pb2.OrderAlert(
        kind=_ALERT_KINDS.get(str(alert.get("kind")), order_pb2.ORDER_ALERT_KIND_UNSPECIFIED),
        since=_ts(dt.datetime.fromisoformat(since)) if isinstance(since, str) else None,
        reason=str(alert.get("reason", "")),
        last_known_location=(
            common_pb2.LatLng(lat=float(alert["lat"]), lon=float(alert["lon"]))  # type: ignore[arg-type]
            if "lat" in alert
            else None
        ),
        driver_id=str(alert.get("driver_id", "")),
        driver_bonus=(
            _money(int(alert["bonus_minor"]), currency)  # type: ignore[call-overload]
            if alert.get("bonus_minor")
            else None
        ),
    )


def address_json(a: common_pb2.Address) -> dict[str, object]:
    out: dict[str, object] = {k: getattr(a, k) for k in _ADDRESS_FIELDS if getattr(a, k)}
    out["lat"], out["lon"] = a.lat, a.lon
    return out
