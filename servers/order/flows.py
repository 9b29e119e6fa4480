"""The Order RPCs of restaurants that hear about orders and nothing left waiting.

A mixin of ``OrderServicer`` (which holds the store, the events and the payments):
the restaurant's live feed (``WatchRestaurantOrders``), its order-taking settings,
alerts on orders in flight (``FlagOrder``: no driver found, driver lost, back) and
what ops do with a lost delivery (``ResolveLostDelivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from foodmesh.core.auth import Principal
from foodmesh.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from foodmesh.core.events import (
    EVENT_ALERT_CLEARED,
    EVENT_DRIVER_BACK,
    EVENT_DRIVER_LOST,
    EVENT_LOST_REASSIGNED,
    EVENT_NO_DRIVER,
)
from foodmesh.v1 import order_pb2
from servers.order import convert
from servers.order.confirm import MAX_TIMEOUT_S, ConfirmSettings
from servers.order.deadlines import get_settings, put_settings
from servers.order.feed import FeedWaker, feed_head, feed_oldest, feed_since
from servers.order.model import Change, Order
from servers.order.store import ListFilter, OrderStore
from servers.order.transitions import CANCELLABLE, FINAL, ROAD, Status
from servers.runtime.auth import require
from servers.runtime.cache import TtlCache
from servers.runtime.outbox import OutboxEvent

__all__ = ["RestaurantFlows", "free_cancel"]

Ctx = grpc.aio.ServicerContext[Any, Any]
_OPEN = tuple(s for s in Status if s not in FINAL)
_ALERT_NAMES = {
    order_pb2.ORDER_ALERT_KIND_NO_DRIVER: "no_driver",
    order_pb2.ORDER_ALERT_KIND_DRIVER_LOST: "driver_lost",
}


def free_cancel(o: Order, now: dt.datetime) -> bool:
    """True when the customer may cancel free of charge: no driver found for long enough."""
    return (
        o.status in CANCELLABLE
        and o.free_cancel_after is not None
        and now >= o.free_cancel_after
        and bool(o.alert)
        and (o.alert or {}).get("kind") == "no_driver"
    )


def _own_restaurant(p: Principal, restaurant_id: str) -> None:
    if p.role == "restaurant" and p.subject != restaurant_id:
        raise PermissionDenied(
            f"restaurant {p.subject!r} may see only its own orders and settings",
            reason="NOT_OWNER",
        )


def _settings_pb(s: ConfirmSettings) -> order_pb2.RestaurantOrderSettings:
    return order_pb2.RestaurantOrderSettings(
        restaurant_id=s.restaurant_id,
        auto_confirm=s.auto_confirm,
        auto_confirm_hours=[order_pb2.AutoConfirmWindow(start_minute=a, end_minute=b)
                            for a, b in s.hours],
        confirm_timeout_seconds=s.timeout_s,
    )  # fmt: skip


class RestaurantFlows:
    """The mixin; ``OrderServicer`` provides what is declared here."""

    store: OrderStore
    feed_waker: FeedWaker
    feed_poll_s: float
    lost_resolve_after_s: float
    settings_cache: TtlCache
    on_deadline: Callable[[], None]
    _event: Callable[..., OutboxEvent]
    _poke: Callable[[], None]
    settle: Callable[[Order], Awaitable[Order]]

    async def confirm_settings(self, restaurant_id: str) -> ConfirmSettings:
        """A restaurant's settings, cached for a moment (PlaceOrder reads them)."""
        return await self.settings_cache.get(
            restaurant_id, lambda: get_settings(self.store.pool, restaurant_id)
        )

    # -- the restaurant's feed -------------------------------------------------------

    async def WatchRestaurantOrders(  # noqa: N802
        self, request: order_pb2.WatchRestaurantOrdersRequest, context: Ctx
    ) -> AsyncIterator[order_pb2.WatchRestaurantOrdersResponse]:
        convert.require_id(request.restaurant_id, "restaurant_id")
        p = require()
        rid = request.restaurant_id
        _own_restaurant(p, rid)
        pool = self.store.pool
        with self.feed_waker.watch(rid) as wake:
            head = await feed_head(pool, rid)
            after = request.after_seq
            if not 0 <= after <= head:
                raise InvalidArgument.field(
                    "after_seq", f"must be 0 to the feed's last position {head}"
                )
            if after and after + 1 < await feed_oldest(pool, rid):
                after = 0  # the positions after it were pruned: start afresh
            if after == 0:
                snapshot = await self.store.list_orders(
                    ListFilter(restaurant_id=rid, statuses=_OPEN), before_id="", limit=100
                )
                for o in reversed(snapshot):
                    yield order_pb2.WatchRestaurantOrdersResponse(
                        seq=head, order=convert.order_to_pb(o)
                    )
                after = head
            while True:
                entries = await feed_since(pool, rid, after)
                seen: dict[str, Order | None] = {}
                for e in entries:
                    if e.order_id not in seen:
                        seen[e.order_id] = await self.store.get(e.order_id)
                    found = seen[e.order_id]
                    after = e.seq
                    if found is None:  # pragma: no cover - orders are never deleted
                        continue
                    change = next((t for t in found.timeline if t.seq == e.order_seq), None)
                    yield order_pb2.WatchRestaurantOrdersResponse(
                        seq=e.seq,
                        order=convert.order_to_pb(found),
                        change=convert.entry_to_pb(change) if change else None,
                        event=e.event,
                    )
                if len(entries) >= 200:
                    continue  # more waiting: no pause
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.feed_poll_s):
                        await wake.wait()
                wake.clear()

    # -- settings ----------------------------------------------------------------------

    async def GetRestaurantOrderSettings(  # noqa: N802
        self, request: order_pb2.GetRestaurantOrderSettingsRequest, context: Ctx
    ) -> order_pb2.GetRestaurantOrderSettingsResponse:
        convert.require_id(request.restaurant_id, "restaurant_id")
        p = require()
        _own_restaurant(p, request.restaurant_id)
        s = await get_settings(self.store.pool, request.restaurant_id)
        return order_pb2.GetRestaurantOrderSettingsResponse(settings=_settings_pb(s))

    async def SetRestaurantOrderSettings(  # noqa: N802
        self, request: order_pb2.SetRestaurantOrderSettingsRequest, context: Ctx
    ) -> order_pb2.SetRestaurantOrderSettingsResponse:
        s = request.settings
        v = Violations()
        convert.check_id(v, s.restaurant_id, "settings.restaurant_id")
        for i, w in enumerate(s.auto_confirm_hours):
            v.check(0 <= w.start_minute < w.end_minute <= 1440,
                    f"settings.auto_confirm_hours[{i}]",
                    "start_minute 0 to 1439, end_minute after it, at most 1440")  # fmt: skip
        v.check(0 <= s.confirm_timeout_seconds <= MAX_TIMEOUT_S,
                "settings.confirm_timeout_seconds",
                f"0 (the default) to {MAX_TIMEOUT_S} seconds")  # fmt: skip
        v.raise_if_any()
        p = require()
        _own_restaurant(p, s.restaurant_id)
        stored = ConfirmSettings(
            s.restaurant_id, s.auto_confirm,
            tuple((w.start_minute, w.end_minute) for w in s.auto_confirm_hours),
            s.confirm_timeout_seconds,
        )  # fmt: skip
        await put_settings(self.store.pool, stored)
        self.settings_cache.forget(lambda k: k == s.restaurant_id)
        return order_pb2.SetRestaurantOrderSettingsResponse(settings=_settings_pb(stored))

    # -- alerts --------------------------------------------------------------------------

    async def FlagOrder(  # noqa: N802
        self, request: order_pb2.FlagOrderRequest, context: Ctx
    ) -> order_pb2.FlagOrderResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        v.check(request.kind in (0, *_ALERT_NAMES), "kind", "unknown alert kind")
        v.check(len(request.reason) <= 500, "reason", "at most 500 characters")
        if request.driver_id:
            convert.check_id(v, request.driver_id, "driver_id")
        v.raise_if_any()
        p = require()
        now = dt.datetime.now(dt.UTC)
        kind = _ALERT_NAMES.get(request.kind, "")

        def decide(o: Order) -> Change | None:
            current = (o.alert or {}).get("kind", "")
            if o.status in FINAL:
                if not kind:
                    return None  # nothing to clear on a finished order
                raise FailedPrecondition(f"order {o.order_id} is {o.status.value}",
                                         reason="ILLEGAL_TRANSITION")  # fmt: skip
            if kind == current:
                return None  # raised already: a retry
            if not kind:
                if not current:
                    return None
                event = EVENT_DRIVER_BACK if current == "driver_lost" else EVENT_ALERT_CLEARED
                why = request.reason or (
                    "the driver is back: the delivery continues" if current == "driver_lost"
                    else "the alert was cleared")  # fmt: skip
                return Change(status=o.status, actor=p.subject, reason=why, event=event,
                              set_alert=True, alert=None, free_cancel_after=None)  # fmt: skip
            if kind == "driver_lost" and o.status not in ROAD:
                raise FailedPrecondition("a driver is lost only after pickup",
                                         reason="NOT_PICKED_UP")  # fmt: skip
            alert: dict[str, Any] = {"kind": kind, "since": now.isoformat(),
                                     "reason": request.reason}  # fmt: skip
            if request.HasField("last_known_location"):
                alert["lat"] = request.last_known_location.lat
                alert["lon"] = request.last_known_location.lon
            if request.driver_id:
                alert["driver_id"] = request.driver_id
            if request.HasField("driver_bonus"):
                alert["bonus_minor"] = request.driver_bonus.amount_minor
            free = (request.free_cancel_after.ToDatetime(dt.UTC)
                    if request.HasField("free_cancel_after") else None)  # fmt: skip
            event = EVENT_NO_DRIVER if kind == "no_driver" else EVENT_DRIVER_LOST
            why = request.reason or (
                "no driver has taken the order yet: we are looking further and offering a bonus"
                if kind == "no_driver" else "we lost contact with your driver")  # fmt: skip
            return Change(status=o.status, actor=p.subject, reason=why, event=event,
                          set_alert=True, alert=alert, free_cancel_after=free)  # fmt: skip

        done = await self.store.apply(request.order_id, decide, self._event)
        if done is None:
            raise NotFound(f"no order {request.order_id!r}", reason="ORDER_NOT_FOUND")
        o, changed = done
        if changed:
            self._poke()
        return order_pb2.FlagOrderResponse(order=convert.order_to_pb(o))

    async def ResolveLostDelivery(  # noqa: N802
        self, request: order_pb2.ResolveLostDeliveryRequest, context: Ctx
    ) -> order_pb2.ResolveLostDeliveryResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        action = request.action
        v.check(action in (order_pb2.LOST_DELIVERY_ACTION_REASSIGN,
                           order_pb2.LOST_DELIVERY_ACTION_REFUND), "action",
                "LOST_DELIVERY_ACTION_REASSIGN or LOST_DELIVERY_ACTION_REFUND")  # fmt: skip
        v.check(len(request.reason) <= 500, "reason", "at most 500 characters")
        v.raise_if_any()
        p = require()

        def decide(o: Order) -> Change | None:
            lost = (o.alert or {}).get("kind") == "driver_lost"
            if action == order_pb2.LOST_DELIVERY_ACTION_REFUND and o.status is Status.CANCELLED:
                return None  # a retry
            if (
                action == order_pb2.LOST_DELIVERY_ACTION_REASSIGN
                and not lost
                and o.timeline[-1].reason.endswith("taken from the lost driver")
            ):
                return None  # a retry
            if not lost:
                raise FailedPrecondition(
                    f"order {o.order_id} has no lost driver to resolve", reason="NOT_LOST"
                )
            since = dt.datetime.fromisoformat(str((o.alert or {}).get("since")))
            wait = self.lost_resolve_after_s - (dt.datetime.now(dt.UTC) - since).total_seconds()
            if wait > 0:
                # Drivers drop off the network for a moment (a tunnel): give them the time to
                # come back before the food is written off.
                raise FailedPrecondition(
                    f"the driver of order {o.order_id} was lost only just now: they may come back;"
                    f" resolve it in {math.ceil(wait)} s",
                    reason="DRIVER_MAY_COME_BACK",
                )
            why = request.reason or "its driver was lost after pickup"
            if action == order_pb2.LOST_DELIVERY_ACTION_REFUND:
                return Change(
                    status=Status.CANCELLED, actor=p.subject,
                    reason=f"{why} (full refund)", cancellation_reason=f"driver_lost: {why}",
                    payment_pending={"op": "refund", "amount": o.total_minor, "kept": 0,
                                     "key": f"cancel:{o.order_id}"},
                    set_alert=True, alert=None, free_cancel_after=None,
                )  # fmt: skip
            # The food left with the lost driver: the kitchen makes it again (back to
            # preparing, the one step back the state machine allows, and only here), and
            # Dispatch puts the order at the front of its pool (``orders.v1.lost_reassigned``);
            # the driver it finds is assigned, and steps it on, as usual.
            return Change(
                status=Status.PREPARING, actor=p.subject, driver_id="",
                reason=f"{why}: taken from the lost driver",
                event=EVENT_LOST_REASSIGNED, set_alert=True, alert=None, free_cancel_after=None,
            )  # fmt: skip

        done = await self.store.apply(request.order_id, decide, self._event)
        if done is None:
            raise NotFound(f"no order {request.order_id!r}", reason="ORDER_NOT_FOUND")
        o, changed = done
        if changed:
            self._poke()
        o = await self.settle(o)
        return order_pb2.ResolveLostDeliveryResponse(order=convert.order_to_pb(o))
