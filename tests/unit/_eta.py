"""An ETA request's facts for the estimate's unit tests."""

from __future__ import annotations

import datetime as dt

from servers.eta.estimate import DeliveryInput
from servers.eta.routing import Leg

__all__ = ["delivery_input"]


def delivery_input(**kw: object) -> DeliveryInput:
    """An order placed just now at noon on a Tuesday (San Francisco), no driver yet;
    ``kw`` replaces any field."""
    now = dt.datetime(2026, 1, 6, 20, 0, tzinfo=dt.UTC)
    base: dict[str, object] = {
        "restaurant_id": "rest_00001",
        "item_count": 2,
        "subtotal": 30.0,
        "order_time": now,
        "now": now,
        "order_hour": 12,
        "order_dow": 1,
        "hour": 12,
        "dow": 1,
        "status": 0,
        "weather": 1,
        "restaurant_load": 3,
        "vehicle": 0,
        "driver_id": "",
        "driver_known": False,
        "delivery_leg": Leg(3000, 600, 400, False),
        "delivery_to": (37.78, -122.41),
        "pickup_leg": None,
        "restaurant": (37.77, -122.42),
    }
    base.update(kw)
    return DeliveryInput(**base)  # type: ignore[arg-type]
