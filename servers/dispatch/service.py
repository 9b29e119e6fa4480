"""DispatchService: decode, call the domain, encode. The work is in engine, store and offers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

import grpc

from foodmesh.core.auth import bearer, mint_service_token
from foodmesh.core.errors import (
    FailedPrecondition,
    FoodmeshError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from foodmesh.core.geo import valid_lat_lon
from foodmesh.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, order_pb2
from servers.dispatch import convert, metrics
from servers.dispatch.engine import Engine, order_to_new, pending_of
from servers.dispatch.live import proposal_of
from servers.dispatch.model import Assignment, Driver
from servers.dispatch.navigator import Navigator
from servers.dispatch.offers import ACTIVE, Action, AssignmentStatus
from servers.dispatch.sessions import Session
from servers.dispatch.stacking import next_stop, plan_stops
from servers.dispatch.store import Fleet
from servers.runtime.auth import require

__all__ = ["DispatchServicer", "OrderSteps"]

_log = logging.getLogger("foodmesh.dispatch.service")
AS = dispatch_pb2.AssignmentStatus
DS = common_pb2.DriverStatus
OS = common_pb2.OrderStatus
Ctx = grpc.aio.ServicerContext[Any, Any]
_MAX_ID = 128


class OrderSteps(Protocol):
    """The Order service as the driver's steps need it (its typed client)."""

    async def update_order_status(
        self,
        request: order_pb2.UpdateOrderStatusRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Any = ...,
    ) -> order_pb2.UpdateOrderStatusResponse: ...

    async def get_order(
        self,
        request: order_pb2.GetOrderRequest,
        *,
        deadline_s: float | None = ...,
        metadata: Any = ...,
    ) -> order_pb2.GetOrderResponse: ...


def _check_id(v: Violations, value: str, field: str) -> None:
    if v.check(bool(value), field, "required"):
        v.check(
            len(value) <= _MAX_ID and value.isprintable(),
            field,
            f"at most {_MAX_ID} printable characters",
        )


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(
        self,
        *,
        fleet: Fleet,
        engine: Engine,
        navigator: Navigator,
        order_steps: OrderSteps,
        secret: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.engine = engine
        self.hub = engine.hub
        self.navigator = navigator
        self.order_steps = order_steps
        self.secret = secret
        self.clock = clock

    # -- the driver's session ------------------------------------------------------

    async def _state(self, driver_id: str, ack_seq: int = 0) -> dispatch_pb2.DriverSessionResponse:
        return (await self._state_of(driver_id, ack_seq))[0]

    async def _state_of(
        self, driver_id: str, ack_seq: int = 0
    ) -> tuple[dispatch_pb2.DriverSessionResponse, Assignment | None]:
        """The driver's state message, and their active assignment."""
        d, offer, a = await self.fleet.sessions.state(driver_id)
        st = dispatch_pb2.SessionState(
            status=convert.DRIVER_STATUS.get(d.status if d else "offline", DS.DRIVER_STATUS_OFFLINE)
        )
        if a is not None:
            st.assignment.CopyFrom(convert.assignment_to_pb(a))
            for stop in plan_stops(await self.fleet.assignments.held(driver_id=driver_id)):
                st.plan.append(convert.stop_to_pb(stop))
        if offer is not None:
            oa = await self.fleet.assignments.get(offer.order_id)
            if oa is not None:
                st.offer.CopyFrom(convert.offer_to_pb(offer, oa))
        return dispatch_pb2.DriverSessionResponse(ack_seq=ack_seq, state=st), a

    async def DriverSession(  # noqa: N802
        self,
        request_iterator: AsyncIterator[dispatch_pb2.DriverSessionRequest],
        context: Ctx,
    ) -> AsyncIterator[dispatch_pb2.DriverSessionResponse]:
        driver_id = require().subject
        session = await self.hub.open(driver_id)
        try:
            await self.fleet.sessions.open(driver_id, session.session_id, now=self.clock())
            await self.engine.tell_location(driver_id, DS.DRIVER_STATUS_AVAILABLE)
            state, active = await self._state_of(driver_id)
            yield state
            # A reconnect gets the route of the leg under way too, sent by whichever replica.
            route = await self.navigator.follow(session, active, resume=True)
            if route is not None:
                yield dispatch_pb2.DriverSessionResponse(route_update=route)
            reader = asyncio.create_task(self._read(session, request_iterator))
            try:
                while (msg := await session.queue.get()) is not None:
                    yield msg
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        finally:
            self.hub.close(session)
            with contextlib.suppress(Exception):
                await self.navigator.release(session)
            m = self.engine.config.match
            try:
                await self.fleet.sessions.close(
                    driver_id,
                    session.session_id,
                    now=self.clock(),
                    rules=self.engine.config.rules,
                    wide=m.wide_radius_miles,
                    escalated_radius=m.escalated_radius_miles,
                )
            except Exception as exc:
                _log.warning("closing driver %s's session: %s", driver_id, exc)

    async def _read(
        self, s: Session, requests: AsyncIterator[dispatch_pb2.DriverSessionRequest]
    ) -> None:
        try:
            async for req in requests:
                if s.closed:
                    break
                answers = await self._act(s, req)
                for out in answers:
                    s.put(out)
                refused = any(a.WhichOneof("event") == "action_rejected" for a in answers)
                if req.WhichOneof("action") == "go_offline" and not refused:
                    break
        except Exception as exc:  # the client went away: the session ends
            _log.debug("driver %s's stream ended: %s", s.driver_id, exc)
        s.end()

    async def _act(
        self, s: Session, req: dispatch_pb2.DriverSessionRequest
    ) -> list[dispatch_pb2.DriverSessionResponse]:
        """One action; a refusal is an ActionRejected message, never the end of the session."""
        try:
            return await self._do(s, req)
        except FoodmeshError as exc:
            code = exc.code.name if exc.code is not None else "UNKNOWN"
            return [
                dispatch_pb2.DriverSessionResponse(
                    ack_seq=req.seq,
                    action_rejected=dispatch_pb2.ActionRejected(
                        seq=req.seq, code=code, message=exc.message
                    ),
                )
            ]
        except Exception as exc:
            _log.warning("driver %s action failed: %r", s.driver_id, exc)
            return [
                dispatch_pb2.DriverSessionResponse(
                    ack_seq=req.seq,
                    action_rejected=dispatch_pb2.ActionRejected(
                        seq=req.seq, code="UNAVAILABLE", message="try again shortly"
                    ),
                )
            ]

    async def _do(
        self, s: Session, req: dispatch_pb2.DriverSessionRequest
    ) -> list[dispatch_pb2.DriverSessionResponse]:
        kind = req.WhichOneof("action")
        v = Violations()
        v.check(req.seq >= 0, "seq", "must not be negative")
        if not v.check(
            kind is not None,
            "action",
            "required: one of go_available, pause, "
            "accept_offer, reject_offer, arrived_at_restaurant, picked_up, "
            "arrived_at_customer, delivered, go_offline",
        ):
            v.raise_if_any()
        if kind == "accept_offer":
            _check_id(v, req.accept_offer.offer_id, "accept_offer.offer_id")
        elif kind == "reject_offer":
            _check_id(v, req.reject_offer.offer_id, "reject_offer.offer_id")
            v.check(
                req.reject_offer.reason in dispatch_pb2.RejectReason.values(),
                "reject_offer.reason",
                "unknown reason",
            )
        elif kind in ("arrived_at_restaurant", "picked_up", "arrived_at_customer"):
            _check_id(v, getattr(req, kind).order_id, f"{kind}.order_id")
        elif kind == "delivered":
            d = req.delivered
            _check_id(v, d.order_id, "delivered.order_id")
            v.check(bool(d.photo_id or d.pin), "delivered.pin",
                    "proof required: the customer's pin (or a photo_id for an order left at"
                    " the door)")  # fmt: skip
            v.check(not (d.photo_id and d.pin), "delivered", "either pin or photo_id, not both")
            v.check(len(d.photo_id) <= 200 and d.photo_id.isprintable(), "delivered.photo_id",
                    "at most 200 printable characters")  # fmt: skip
            v.check(not d.pin or (len(d.pin) == 4 and d.pin.isascii() and d.pin.isdigit()),
                    "delivered.pin", "the customer's 4 digits")  # fmt: skip
        v.raise_if_any()
        now = self.clock()
        driver = s.driver_id
        m = self.engine.config.match
        out: list[dispatch_pb2.DriverSessionResponse] = []
        leg: Assignment | None = None  # the assignment whose leg may have changed
        if kind in ("go_available", "pause", "go_offline"):
            status = {"go_available": "available", "pause": "paused", "go_offline": "offline"}
            await self.fleet.sessions.set_availability(driver, s.session_id, status[kind], now=now)
            await self.engine.tell_location(driver, convert.DRIVER_STATUS[status[kind]])
        elif kind == "accept_offer":
            a = leg = await self.fleet.offers.accept(req.accept_offer.offer_id, driver, now=now)
            metrics.assigned(a, now=now)
            self.engine.poke_calls()
            await self.engine.tell_location(
                driver,
                DS.DRIVER_STATUS_ON_DELIVERY,
                order_id=a.order_id,
                stop=(a.pickup_lat, a.pickup_lon),
            )
            out.append(
                dispatch_pb2.DriverSessionResponse(
                    ack_seq=req.seq, assignment_confirmed=convert.assignment_to_pb(a)
                )
            )
        elif kind == "reject_offer":
            reason = dispatch_pb2.RejectReason.Name(req.reject_offer.reason)
            await self.fleet.offers.reject(
                req.reject_offer.offer_id,
                driver,
                reason.removeprefix("REJECT_REASON_").lower(),
                now=now,
                rules=self.engine.config.rules,
                wide=m.wide_radius_miles,
                escalated_radius=m.escalated_radius_miles,
            )
            await self.engine.tell_location(driver, DS.DRIVER_STATUS_AVAILABLE)
        else:
            leg = await self._progress(driver, kind or "", req)
        out.append(await self._state(driver, req.seq))
        if leg is not None:
            # Last, with no wait after it: the answers go out before any route does.
            await self.navigator.follow(s, leg)
        return out

    async def _progress(
        self, driver: str, kind: str, req: dispatch_pb2.DriverSessionRequest
    ) -> Assignment | None:
        """A step of the delivery: the Order service's timeline first, then ours.

        Returns the assignment after the step (None for a step done already).
        """
        action = Action(kind)
        order_id = getattr(req, kind).order_id
        a = await self.fleet.assignments.get(order_id)
        if a is None or a.driver_id != driver:
            raise FailedPrecondition(
                f"order {order_id!r} is not your delivery", reason="NOT_YOUR_ORDER"
            )
        from servers.dispatch.offers import step

        if step(a.status, action) is None:  # a retried step: done already
            return None
        # Whoever carries the order must be on its record before moving it.
        await self.engine.calls_once(order_id)
        if action is Action.PICKED_UP:
            await self._order_to(order_id, driver, OS.ORDER_STATUS_PICKED_UP, "picked up")
            await self._order_to(order_id, driver, OS.ORDER_STATUS_IN_TRANSIT, "on the way")
        elif action is Action.DELIVERED:
            d = req.delivered
            proof = (order_pb2.DeliveryProof(pin=d.pin) if d.pin
                     else order_pb2.DeliveryProof(photo_reference=d.photo_id))  # fmt: skip
            await self._order_to(
                order_id, driver, OS.ORDER_STATUS_DELIVERED, "delivered", proof=proof
            )
        before = a
        a, _ = await self.fleet.assignments.progress(order_id, driver, action, now=self.clock())
        if action is Action.PICKED_UP:
            ready = await self.fleet.assignments.food_ready_at(order_id)
            metrics.picked_up(before, now=self.clock(), food_ready_at=ready)
        if action is Action.DELIVERED:
            nxt = next_stop(await self.fleet.assignments.held(driver_id=driver))
            if nxt is None:
                await self.engine.tell_location(driver, DS.DRIVER_STATUS_AVAILABLE)
            else:  # a trip of several orders: on to its next stop
                await self.engine.tell_location(
                    driver, DS.DRIVER_STATUS_ON_DELIVERY, order_id=nxt[0].order_id, stop=nxt[1]
                )
                return nxt[0]
        elif action is Action.PICKED_UP:
            await self.engine.tell_location(
                driver,
                DS.DRIVER_STATUS_ON_DELIVERY,
                order_id=order_id,
                stop=(a.dropoff_lat, a.dropoff_lon),
            )
        return a

    async def _order_to(
        self,
        order_id: str,
        driver: str,
        to: int,
        reason: str,
        *,
        proof: order_pb2.DeliveryProof | None = None,
    ) -> None:
        """Steps the order for ``driver`` (whose assignment this service has checked).

        As a service naming the driver: the Order service refuses road steps from a
        driver's own token, so they go through this session and its proof of delivery.
        """
        # A service token (the service key, aud foodmesh-service): the gateway never takes it.
        as_service = bearer(mint_service_token(self.secret, subject="dispatch", ttl_s=120))
        req = order_pb2.UpdateOrderStatusRequest(
            order_id=order_id,
            status=to,  # type: ignore[arg-type]
            reason=reason,
            driver_id=driver,
            delivery_proof=proof,
        )
        try:
            if to == OS.ORDER_STATUS_PICKED_UP:
                # The driver has the food, so it was ready, whether or not the kitchen said so.
                got = await self.order_steps.get_order(
                    order_pb2.GetOrderRequest(order_id=order_id),
                    deadline_s=2.0,
                    metadata=as_service,
                )
                status = got.order.status
                for step_to in (OS.ORDER_STATUS_PREPARING, OS.ORDER_STATUS_READY_FOR_PICKUP):
                    if status < step_to:
                        await self.order_steps.update_order_status(
                            order_pb2.UpdateOrderStatusRequest(
                                order_id=order_id,
                                status=step_to,
                                reason=f"driver {driver} has the food",
                            ),
                            deadline_s=2.0,
                            metadata=as_service,
                        )
                        status = step_to
            await self.order_steps.update_order_status(req, deadline_s=2.0, metadata=as_service)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and proof is not None:
                field = "delivered.pin" if proof.pin else "delivered.photo_id"
                raise InvalidArgument.field(field, exc.details() or "refused") from None
            if exc.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise FailedPrecondition(
                    f"the order service refused: {exc.details()}", reason="ORDER_REFUSED"
                ) from None
            raise Unavailable(f"the order service did not answer: {exc.code().name}") from None

    # -- unary RPCs ----------------------------------------------------------------

    async def MatchOrder(  # noqa: N802
        self, request: dispatch_pb2.MatchOrderRequest, context: Ctx
    ) -> dispatch_pb2.MatchOrderResponse:
        v = Violations()
        _check_id(v, request.order_id, "order_id")
        for name in ("restaurant_location", "delivery_location"):
            loc = getattr(request, name)
            if v.check(request.HasField(name), name, "required"):
                v.check(
                    valid_lat_lon(loc.lat, loc.lon),
                    name,
                    "lat must be in [-90, 90], lon in [-180, 180]",
                )
        v.raise_if_any()
        now = self.clock()
        ready = (
            request.ready_time.ToNanoseconds() / 1e9
            if request.HasField("ready_time")
            else now + 15 * 60
        )
        o = order_pb2.Order(
            order_id=request.order_id, restaurant_location=request.restaurant_location
        )
        o.delivery_address.lat = request.delivery_location.lat
        o.delivery_address.lon = request.delivery_location.lon
        o.ready_time.FromNanoseconds(int(ready * 1e9))
        new = order_to_new(o, precision=self.engine.config.region_precision, now=now)
        await self.fleet.assignments.add_order(new, now=now)
        a = await self.fleet.assignments.get(request.order_id)
        assert a is not None
        if a.status not in (AssignmentStatus.PENDING, AssignmentStatus.ESCALATED):
            raise FailedPrecondition(
                f"order {a.order_id} is {a.status.value} already", reason="NOT_PENDING"
            )
        pending = [pending_of(a)]
        drivers, where = await self.engine.candidates(pending)
        # The planner, asked for this order alone, now: one order, offered at once.
        cfg = replace(self.engine.config.trip_config(), max_orders=1, release_at_once=True)
        _, rnd = await self.engine.plan([a], drivers, [], now=now, config=cfg)
        for plan in rnd.plans:
            p = proposal_of(plan, request.order_id, now=now, config=cfg,
                            driver_at=where.get(plan.driver_id))  # fmt: skip
            if await self.engine.offer(p):
                d = await self.fleet.drivers.get(p.driver_id)
                cand = next(c for c in drivers if c.driver_id == p.driver_id)
                resp = dispatch_pb2.MatchOrderResponse(
                    driver_id=p.driver_id,
                    driver_name=d.name if d else "",
                    driver_location=common_pb2.LatLng(lat=cand.lat, lon=cand.lon),
                    rating=cand.rating,
                    vehicle=d.vehicle if d else "",
                    eta_to_restaurant=int(math.ceil(p.to_pickup_s / 60)),
                    estimated_pickup_time=convert.stamp(p.pickup_at),
                    estimated_delivery_time=convert.stamp(p.delivery_at),
                    match_score=p.score,
                )
                return resp
        raise FailedPrecondition(
            f"no available driver within {self.engine.config.match.wide_radius_miles:g} miles; "
            "the order stays in the pool and is retried with a wider radius",
            reason="NO_DRIVER_AVAILABLE",
        )

    async def GetAssignment(  # noqa: N802
        self, request: dispatch_pb2.GetAssignmentRequest, context: Ctx
    ) -> dispatch_pb2.GetAssignmentResponse:
        v = Violations()
        _check_id(v, request.order_id, "order_id")
        v.raise_if_any()
        p = require()
        a = await self.fleet.assignments.get(request.order_id)
        if a is None or (p.role == "driver" and a.driver_id != p.subject):
            raise NotFound(
                f"no assignment of order {request.order_id!r}", reason="ASSIGNMENT_NOT_FOUND"
            )
        return dispatch_pb2.GetAssignmentResponse(assignment=convert.assignment_to_pb(a))

    async def UpsertDriver(  # noqa: N802
        self, request: dispatch_pb2.UpsertDriverRequest, context: Ctx
    ) -> dispatch_pb2.UpsertDriverResponse:
        v = Violations()
        d = request.driver
        if v.check(request.HasField("driver"), "driver", "required"):
            _check_id(v, d.driver_id, "driver.driver_id")
            v.check(len(d.name) <= 200, "driver.name", "at most 200 characters")
            v.check(len(d.vehicle) <= 200, "driver.vehicle", "at most 200 characters")
            v.check(len(d.photo_url) <= 2000, "driver.photo_url", "at most 2000 characters")
            v.check(
                d.vehicle_type in common_pb2.VehicleType.values(),
                "driver.vehicle_type",
                "unknown vehicle type",
            )
        v.raise_if_any()
        stored = await self.fleet.drivers.upsert(
            Driver(
                driver_id=d.driver_id,
                name=d.name,
                vehicle_type=d.vehicle_type or common_pb2.VEHICLE_TYPE_CAR,
                vehicle=d.vehicle,
                photo_url=d.photo_url,
            )
        )
        return dispatch_pb2.UpsertDriverResponse(driver=convert.driver_to_pb(stored))

    async def GetDriver(  # noqa: N802
        self, request: dispatch_pb2.GetDriverRequest, context: Ctx
    ) -> dispatch_pb2.GetDriverResponse:
        v = Violations()
        _check_id(v, request.driver_id, "driver_id")
        v.raise_if_any()
        p = require()
        if p.role == "driver" and p.subject != request.driver_id:
            raise PermissionDenied("a driver may read only their own profile", reason="NOT_YOURS")
        d = await self.fleet.drivers.get(request.driver_id)
        if d is None:
            raise NotFound(f"no driver {request.driver_id!r}", reason="DRIVER_NOT_FOUND")
        return dispatch_pb2.GetDriverResponse(driver=convert.driver_to_pb(d))

    async def RateDriver(  # noqa: N802
        self, request: dispatch_pb2.RateDriverRequest, context: Ctx
    ) -> dispatch_pb2.RateDriverResponse:
        v = Violations()
        _check_id(v, request.order_id, "order_id")
        _check_id(v, request.driver_id, "driver_id")
        v.check(1 <= request.rating <= 5, "rating", "must be 1 to 5")
        v.raise_if_any()
        mean, count = await self.fleet.stats.rate(
            request.order_id, request.driver_id, request.rating
        )
        return dispatch_pb2.RateDriverResponse(rating=mean, rating_count=count)

    async def ListAssignments(  # noqa: N802
        self, request: dispatch_pb2.ListAssignmentsRequest, context: Ctx
    ) -> dispatch_pb2.ListAssignmentsResponse:
        v = Violations()
        statuses: list[str] = []
        for i, s in enumerate(request.statuses):
            if v.check(s in convert.STATUS_FROM_PB, f"statuses[{i}]", "unknown status"):
                statuses.append(convert.STATUS_FROM_PB[s].value)
        size = request.page_size or 50
        v.check(1 <= size <= 500, "page_size", "must be 1 to 500")
        v.check(len(request.region) <= 12, "region", "a geohash prefix, at most 12 characters")
        after = None
        if request.page_token:
            try:
                raw = base64.urlsafe_b64decode(request.page_token.encode()).decode()
                when, _, oid = raw.partition("|")
                after = (dt.datetime.fromisoformat(when), oid)
            except Exception:
                v.add("page_token", "not a token from a previous response")
        v.raise_if_any()
        rows = await self.fleet.assignments.page(
            statuses or [s.value for s in ACTIVE], request.region, after=after, limit=size + 1
        )
        resp = dispatch_pb2.ListAssignmentsResponse(
            assignments=[convert.assignment_to_pb(a) for a in rows[:size]]
        )
        if len(rows) > size:
            last = rows[size - 1]
            resp.next_page_token = base64.urlsafe_b64encode(
                f"{last.created_at.isoformat()}|{last.order_id}".encode()
            ).decode()
        return resp
