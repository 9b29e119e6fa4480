"""Requests to plain data and back; every check on input lives here, naming its field."""

from __future__ import annotations

import math
import re

from google.protobuf.timestamp_pb2 import Timestamp

from foodmesh.core.errors import InvalidArgument, Violations
from foodmesh.core.geo import valid_lat_lon
from foodmesh.v1 import common_pb2, pricing_pb2
from servers.pricing.promo import DiscountKind, Promo, normalize
from servers.pricing.surge import Event, Weather
from servers.runtime.ids import check_id

__all__ = [
    "CELL",
    "check_id",
    "check_promo_code",
    "events_from_pb",
    "money",
    "promo_from_pb",
    "promo_to_pb",
    "weather_from_pb",
    "PromoInvalid",
]

_CODE = re.compile(r"^[A-Z0-9_-]{2,32}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
CELL = re.compile(r"^[0-9b-hjkmnp-z]{1,12}$")


class PromoInvalid(InvalidArgument):
    """A promo code that does not apply: INVALID_ARGUMENT on its field, with the reason."""

    def __init__(self, field: str, description: str, reason: str) -> None:
        super().__init__(InvalidArgument.field(field, description).violations)
        self.reason = f"PROMO_{reason}"


def money(amount: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency_code=currency)


def check_promo_code(v: Violations, value: str, path: str) -> str:
    code = normalize(value)
    v.check(bool(_CODE.match(code)), path, "must be 2-32 letters, digits, '_' or '-'")
    return code


def _ts(t: Timestamp, present: bool) -> float | None:
    return t.ToNanoseconds() / 1e9 if present else None


def promo_from_pb(p: pricing_pb2.PromoCode) -> Promo:
    """A promo code from an UpsertPromoCode request; raises InvalidArgument naming fields."""
    v = Violations()
    code = check_promo_code(v, p.code, "promo.code")
    kind: DiscountKind | None = None
    if p.discount_type == pricing_pb2.DISCOUNT_TYPE_PERCENT:
        kind = DiscountKind.PERCENT
        v.check(math.isfinite(p.percent_off) and 0 < p.percent_off <= 100, "promo.percent_off",
                "must be more than 0 and at most 100")  # fmt: skip
    elif p.discount_type == pricing_pb2.DISCOUNT_TYPE_FIXED:
        kind = DiscountKind.FIXED
        v.check(0 < p.amount_off.amount_minor <= 1_000_000, "promo.amount_off.amount_minor",
                "must be 1 to 1000000")  # fmt: skip
    else:
        v.add("promo.discount_type", "must be DISCOUNT_TYPE_PERCENT or DISCOUNT_TYPE_FIXED")
    currencies = {m.currency_code for m in (p.amount_off, p.min_subtotal, p.max_discount)
                  if m.currency_code}  # fmt: skip
    v.check(len(currencies) <= 1, "promo.amount_off.currency_code",
            "amounts must share one currency")  # fmt: skip
    currency = next(iter(currencies), "USD")
    v.check(bool(_CURRENCY.match(currency)), "promo.amount_off.currency_code",
            "must be an ISO 4217 code such as USD")  # fmt: skip
    v.check(p.min_subtotal.amount_minor >= 0, "promo.min_subtotal.amount_minor", "must be >= 0")
    v.check(p.max_discount.amount_minor >= 0, "promo.max_discount.amount_minor", "must be >= 0")
    v.check(p.per_customer_limit >= 0, "promo.per_customer_limit", "must be >= 0 (0: unlimited)")
    v.check(p.total_limit >= 0, "promo.total_limit", "must be >= 0 (0: unlimited)")
    start = _ts(p.start_time, p.HasField("start_time"))
    end = _ts(p.end_time, p.HasField("end_time"))
    if start is not None and end is not None:
        v.check(end > start, "promo.end_time", "must be after start_time")
    for i, r in enumerate(p.regions):
        v.check(bool(CELL.match(r)), f"promo.regions[{i}]", "must be a geohash prefix")
    v.raise_if_any()
    assert kind is not None
    return Promo(
        code=code,
        kind=kind,
        percent_bps=round(p.percent_off * 100) if kind is DiscountKind.PERCENT else 0,
        amount_off_minor=p.amount_off.amount_minor if kind is DiscountKind.FIXED else 0,
        currency=currency,
        min_subtotal_minor=p.min_subtotal.amount_minor,
        max_discount_minor=p.max_discount.amount_minor,
        first_order_only=p.first_order_only,
        per_customer_limit=p.per_customer_limit,
        total_limit=p.total_limit,
        start_ts=start,
        end_ts=end,
        regions=tuple(p.regions),
    )


def promo_to_pb(p: Promo) -> pricing_pb2.PromoCode:
    out = pricing_pb2.PromoCode(
        code=p.code,
        discount_type=pricing_pb2.DISCOUNT_TYPE_PERCENT
        if p.kind is DiscountKind.PERCENT
        else pricing_pb2.DISCOUNT_TYPE_FIXED,
        percent_off=p.percent_bps / 100,
        amount_off=money(p.amount_off_minor, p.currency),
        min_subtotal=money(p.min_subtotal_minor, p.currency),
        max_discount=money(p.max_discount_minor, p.currency),
        first_order_only=p.first_order_only,
        per_customer_limit=p.per_customer_limit,
        total_limit=p.total_limit,
        regions=list(p.regions),
    )
    if p.start_ts is not None:
        out.start_time.FromNanoseconds(int(p.start_ts * 1e9))
    if p.end_ts is not None:
        out.end_time.FromNanoseconds(int(p.end_ts * 1e9))
    return out


def events_from_pb(v: Violations, events: list[pricing_pb2.LocalEvent]) -> list[Event]:
    out: list[Event] = []
    seen: set[str] = set()
    for i, e in enumerate(events):
        path = f"events[{i}]"
        if check_id(v, e.event_id, f"{path}.event_id"):
            v.check(e.event_id not in seen, f"{path}.event_id", "appears twice")
            seen.add(e.event_id)
        where = e.HasField("location") and valid_lat_lon(e.location.lat, e.location.lon)
        ok = v.check(where, f"{path}.location", "is required: lat -90..90, lon -180..180")
        v.check(0 <= e.attendance <= 10_000_000, f"{path}.attendance", "must be 0 to 10000000")
        start = _ts(e.start_time, e.HasField("start_time"))
        end = _ts(e.end_time, e.HasField("end_time"))
        if start is not None and end is not None:
            v.check(end > start, f"{path}.end_time", "must be after start_time")
        if ok:
            out.append(Event(e.event_id, e.location.lat, e.location.lon, e.attendance, start, end))
    return out


def weather_from_pb(v: Violations, weather: list[pricing_pb2.WeatherCondition]) -> list[Weather]:
    out: list[Weather] = []
    seen: set[str] = set()
    for i, w in enumerate(weather):
        path = f"weather[{i}]"
        if v.check(bool(CELL.match(w.area)), f"{path}.area", "must be a geohash prefix (1-12)"):
            v.check(w.area not in seen, f"{path}.area", "appears twice")
            seen.add(w.area)
        v.check(w.kind in common_pb2.WeatherKind.values(), f"{path}.kind", "unknown weather kind")
        out.append(Weather(w.area, int(w.kind)))
    return out
