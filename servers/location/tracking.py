"""TrackOrder: the customer's live view of one order, merged from three sources.

- the Order service's ``WatchOrder`` stream: status, timeline, driver assignment;
- core NATS ``location.v1.driver.<id>``: each fix of the assigned driver;
- the ETA service (when configured): a fresh estimate at least every ``eta_every_s``.

Every change produces the design's snapshot again. A slow reader never slows ingest:
NATS callbacks only overwrite one "latest position" slot, so memory per tracker
stays constant however far behind the reader is. When the order is delivered or
cancelled the stream sends the final snapshot and ends; when the driver changes
it follows the new one and says so (``driver_changed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from foodmesh.core.auth import Principal
from foodmesh.core.errors import NotFound
from foodmesh.core.events import DRIVER_LOCATIONS
from foodmesh.core.nats import Subjects
from foodmesh.v1 import common_pb2, dispatch_pb2, eta_pb2, location_pb2, order_pb2
from servers.location.store import LiveStore

__all__ = ["DriverDirectory", "EtaSource", "OrderSource", "Tracker", "snapshot"]

_log = logging.getLogger("foodmesh.location.tracking")
Metadata = Sequence[tuple[str, str]]
OS = common_pb2.OrderStatus
_FINAL = {OS.ORDER_STATUS_DELIVERED, OS.ORDER_STATUS_CANCELLED}
_BEFORE_PICKUP = {
    OS.ORDER_STATUS_PLACED,
    OS.ORDER_STATUS_CONFIRMED,
    OS.ORDER_STATUS_PREPARING,
    OS.ORDER_STATUS_READY_FOR_PICKUP,
}


class OrderSource(Protocol):
    """The Order service as TrackOrder needs it (``clients.OrderClient`` fits)."""

    async def get_order(
        self,
        request: order_pb2.GetOrderRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Metadata = ...,
    ) -> order_pb2.GetOrderResponse: ...

    def watch_order(
        self,
        request: order_pb2.WatchOrderRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Metadata = ...,
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]: ...


class DriverDirectory(Protocol):
    """Driver profiles (``clients.DispatchClient`` fits)."""

    async def get_driver(
        self,
        request: dispatch_pb2.GetDriverRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Metadata = ...,
    ) -> dispatch_pb2.GetDriverResponse: ...


class EtaSource(Protocol):
    """Arrival estimates and routes (``clients.EtaClient`` fits)."""

    async def estimate_delivery(
        self,
        request: eta_pb2.EstimateDeliveryRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Metadata = ...,
    ) -> eta_pb2.EstimateDeliveryResponse: ...

    async def route(
        self,
        request: eta_pb2.RouteRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Metadata = ...,
    ) -> eta_pb2.RouteResponse: ...


def _status_name(status: int) -> str:
    return common_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_").lower()  # type: ignore[arg-type]


@dataclass(slots=True)
class _View:
    order: order_pb2.Order
    profile: dispatch_pb2.Driver | None = None
    position: location_pb2.DriverPosition | None = None
    eta: eta_pb2.EstimateDeliveryResponse | None = None
    polyline: str = ""
    driver_changed: bool = False


def snapshot(v: _View) -> location_pb2.TrackOrderResponse:
    """The design's tracking JSON as a message."""
    o = v.order
    out = location_pb2.TrackOrderResponse(
        order_id=o.order_id,
        status=_status_name(o.status),
        order_status=o.status,
        driver_changed=v.driver_changed,
        route_polyline=v.polyline,
    )
    for t in o.timeline:
        out.timeline.add(status=_status_name(t.status)).timestamp.CopyFrom(t.timestamp)
    if v.eta is not None and v.eta.HasField("estimated_delivery_time"):
        out.eta.CopyFrom(v.eta.estimated_delivery_time)
        out.eta_confidence = v.eta.eta_confidence
    elif o.HasField("estimated_delivery_time"):
        out.eta.CopyFrom(o.estimated_delivery_time)
        out.eta_confidence = o.eta_confidence
    if o.driver_id:
        d = out.driver
        d.driver_id = o.driver_id
        if v.profile is not None:
            d.name, d.rating, d.vehicle, d.photo_url = (
                v.profile.name,
                v.profile.rating,
                v.profile.vehicle,
                v.profile.photo_url,
            )
        if v.position is not None:
            loc = d.location
            loc.lat, loc.lon, loc.heading = v.position.lat, v.position.lon, v.position.heading
            loc.last_updated.CopyFrom(v.position.last_updated)
    return out


class Tracker:
    """Runs TrackOrder streams; one instance per process, one ``track`` per stream."""

    def __init__(
        self,
        *,
        store: LiveStore,
        nats: Callable[[], NATS],
        subjects: Subjects,
        orders: OrderSource | None,
        drivers: DriverDirectory | None = None,
        eta: EtaSource | None = None,
        metadata: Metadata = (),
        eta_every_s: float = 30.0,
    ) -> None:
        self.store = store
        self._nats = nats
        self._subjects = subjects
        self.orders = orders
        self.drivers = drivers
        self.eta = eta
        self.metadata = tuple(metadata)
        self.eta_every_s = eta_every_s

    async def _profile(self, driver_id: str) -> dispatch_pb2.Driver | None:
        if self.drivers is None:
            return None
        try:
            reply = await self.drivers.get_driver(
                dispatch_pb2.GetDriverRequest(driver_id=driver_id),
                deadline_s=2.0,
                metadata=self.metadata,
            )
        except Exception as exc:  # the map still works without a name and a photo
            _log.debug("no profile for driver %s: %s", driver_id, exc)
            return None
        return reply.driver

    async def _estimate(self, v: _View) -> eta_pb2.EstimateDeliveryResponse | None:
        if self.eta is None:
            return None
        o = v.order
        req = eta_pb2.EstimateDeliveryRequest(
            restaurant_id=o.restaurant_id,
            order_id=o.order_id,
            driver_id=o.driver_id,
            order_status=o.status,
            item_count=sum(i.quantity for i in o.items),
        )
        req.restaurant_location.CopyFrom(o.restaurant_location)
        req.delivery_location.lat = o.delivery_address.lat
        req.delivery_location.lon = o.delivery_address.lon
        if o.HasField("created_at"):  # the kitchen's clock started then, not now
            req.order_time.CopyFrom(o.created_at)
        if o.HasField("pricing"):
            req.subtotal.CopyFrom(o.pricing.subtotal)
        if v.position is not None:
            req.driver_location.lat, req.driver_location.lon = v.position.lat, v.position.lon
        try:
            estimate = await self.eta.estimate_delivery(req, deadline_s=2.0, metadata=self.metadata)
        except Exception as exc:  # keep the last estimate; try again at the next tick
            _log.debug("ETA for %s failed: %s", o.order_id, exc)
            return v.eta
        if v.position is not None:
            v.polyline = await self._route(v) or v.polyline
        return estimate

    async def _route(self, v: _View) -> str:
        """The driver's remaining route: to the restaurant until pickup, then to the customer."""
        assert self.eta is not None and v.position is not None
        o = v.order
        req = eta_pb2.RouteRequest()
        req.origin.lat, req.origin.lon = v.position.lat, v.position.lon
        if o.status in _BEFORE_PICKUP:
            req.destination.CopyFrom(o.restaurant_location)
        else:
            req.destination.lat, req.destination.lon = (
                o.delivery_address.lat,
                o.delivery_address.lon,
            )
        try:
            return (await self.eta.route(req, deadline_s=2.0, metadata=self.metadata)).polyline
        except Exception as exc:  # the map shows the car without its route meanwhile
            _log.debug("route for %s failed: %s", o.order_id, exc)
            return ""

    async def _position(self, driver_id: str) -> location_pb2.DriverPosition | None:
        state = await self.store.get(driver_id)
        return state.position() if state is not None else None

    async def track(
        self, order_id: str, who: Principal
    ) -> AsyncIterator[location_pb2.TrackOrderResponse]:
        if self.orders is None:
            raise NotFound(
                "order tracking needs the Order service (FOODMESH_LOCATION_ORDER_TARGET)"
            )
        try:
            first = await self.orders.get_order(
                order_pb2.GetOrderRequest(order_id=order_id), deadline_s=2.0, metadata=self.metadata
            )
        except Exception as exc:
            code = getattr(exc, "code", lambda: None)()
            if code is not None and code.name == "NOT_FOUND":
                raise NotFound(f"order {order_id} not found") from None
            raise
        order = first.order
        # Someone else's order looks exactly like no order at all.
        if who.role == "customer" and order.customer_id != who.subject:
            raise NotFound(f"order {order_id} not found")

        changed = asyncio.Event()
        latest: dict[str, location_pb2.DriverPosition] = {}
        orders_q: asyncio.Queue[order_pb2.Order | None] = asyncio.Queue(maxsize=64)
        view = _View(order=order)
        sub: Subscription | None = None
        sub_driver = ""

        async def on_fix(msg: Msg) -> None:
            ev = location_pb2.DriverLocationEvent.FromString(msg.data)
            if ev.position.driver_id == sub_driver:
                latest["pos"] = ev.position  # newest wins: a slow reader costs nothing
                changed.set()

        async def follow(driver_id: str) -> None:
            nonlocal sub, sub_driver
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                sub = None
            sub_driver = driver_id
            latest.pop("pos", None)
            if driver_id:
                subject = self._subjects.subject(DRIVER_LOCATIONS.subject(driver_id))
                sub = await self._nats().subscribe(subject, cb=on_fix, pending_msgs_limit=16)
                view.profile = await self._profile(driver_id)
                view.position = await self._position(driver_id)

        async def watch() -> None:
            assert self.orders is not None
            stream = self.orders.watch_order(
                order_pb2.WatchOrderRequest(order_id=order_id), metadata=self.metadata
            )
            try:
                async for update in stream:
                    await orders_q.put(update.order)
                    changed.set()
            finally:
                await orders_q.put(None)
                changed.set()

        await follow(order.driver_id)
        view.eta = await self._estimate(view)
        watcher = asyncio.create_task(watch(), name=f"track-{order_id}")
        next_eta = time.monotonic() + self.eta_every_s
        try:
            first_msg = snapshot(view)
            last_sent = first_msg.SerializeToString(deterministic=True)
            yield first_msg
            while view.order.status not in _FINAL:
                timeout = max(0.0, next_eta - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await changed.wait()
                changed.clear()
                ended = False
                while not orders_q.empty():
                    o = orders_q.get_nowait()
                    if o is None:
                        ended = True
                        break
                    if o.driver_id != view.order.driver_id:
                        view.driver_changed = bool(view.order.driver_id)
                        view.order = o
                        await follow(o.driver_id)
                        view.eta = await self._estimate(view)
                        next_eta = time.monotonic() + self.eta_every_s
                    view.order = o
                if "pos" in latest:
                    view.position = latest.pop("pos")
                if time.monotonic() >= next_eta:
                    view.eta = await self._estimate(view)
                    next_eta = time.monotonic() + self.eta_every_s
                msg = snapshot(view)
                wire = msg.SerializeToString(deterministic=True)
                if wire != last_sent:  # e.g. WatchOrder's first message repeats GetOrder's
                    last_sent = wire
                    yield msg
                view.driver_changed = False
                if ended:
                    break
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
