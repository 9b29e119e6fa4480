"""OrderServicer: decode the request, call Catalog, pricing, ETA, payments and the store, encode.

The domain lives in ``transitions`` (state machine, refunds), ``cart`` (menu
pricing), ``pricing``/``eta`` (ports with fallbacks) and ``payments``/``sandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from clients.catalog import CatalogPort
from foodmesh.core.auth import Principal
from foodmesh.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from foodmesh.core.events import ORDER_EVENTS
from foodmesh.core.geo import METERS_PER_MILE
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import catalog_pb2, common_pb2, dispatch_pb2, order_pb2
from foodmesh.v1 import order_pb2_grpc as pb_grpc
from servers.order import convert, metrics
from servers.order.cart import price_lines
from servers.order.eta import EtaInput, EtaPort
from servers.order.ids import new_order_id
from servers.order.model import Change, Entry, Order
from servers.order.payments import (
    PaymentDeclined,
    PaymentError,
    PaymentProvider,
    ProviderUnavailable,
)
from servers.order.pricing import PriceInput, PricingPort, PromoUnavailable
from servers.order.schedule import open_at
from servers.order.store import MAX_PIN_ATTEMPTS, ClaimKind, ListFilter, OrderStore, PinCheck
from servers.order.transitions import (
    FINAL,
    ROAD,
    Actor,
    IllegalTransition,
    NotAllowed,
    Status,
    cancel_refund,
    check_cancel,
    check_step,
)
from servers.order.watch import ChangeFeed
from servers.runtime.auth import require
from servers.runtime.context import time_left
from servers.runtime.outbox import OutboxEvent, OutboxRelay

__all__ = ["CatalogPort", "DriverRatings", "OrderServicer", "Ports"]

_log = logging.getLogger("foodmesh.order")
_PIN = re.compile(r"[0-9]{4}")
Ctx = grpc.aio.ServicerContext[Any, Any]


class DriverRatings(Protocol):
    """Dispatch's RateDriver (``clients.DispatchClient`` fits)."""

    async def rate_driver(
        self, request: dispatch_pb2.RateDriverRequest, *, deadline_s: float | None = ...
    ) -> dispatch_pb2.RateDriverResponse: ...


@dataclass(slots=True)
class Ports:
    catalog: CatalogPort
    pricing: PricingPort
    eta: EtaPort
    payments: PaymentProvider
    drivers: DriverRatings | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _visible(o: Order, p: Principal) -> bool:
    if p.role in ("ops", "service"):
        return True
    if p.role == "customer":
        return o.customer_id == p.subject
    if p.role == "restaurant":
        return o.restaurant_id == p.subject
    if p.role == "driver":
        return bool(o.driver_id) and o.driver_id == p.subject
    return False


def _pb(o: Order, p: Principal) -> order_pb2.Order:
    """The order as ``p`` sees it: the delivery PIN only in its own customer's view."""
    return convert.order_to_pb(o, with_pin=p.role == "customer" and o.customer_id == p.subject)


def _new_pin() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def _not_found(order_id: str) -> NotFound:
    return NotFound(f"no order {order_id!r}", reason="ORDER_NOT_FOUND")


def _illegal(exc: IllegalTransition) -> FailedPrecondition:
    return FailedPrecondition(str(exc), reason="ILLEGAL_TRANSITION")


def _catalog_error(exc: grpc.aio.AioRpcError, what: str, restaurant_id: str) -> Exception:
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"no restaurant {restaurant_id!r}", reason="RESTAURANT_NOT_FOUND")
    return Unavailable(f"the catalog did not answer {what} ({exc.code().name}): retry")


#: A claimed idempotency key is held this long past the request's deadline (the placement
#: runs on after a caller gives up; its calls have floors of 0.2 s each) ...
_CLAIM_MARGIN_S = 5.0
#: ... and never longer than this: then a retry takes a dead request's claim over.
_CLAIM_HOLD_MAX_S = 60.0


class _MaybeLeftBehind(Exception):  # noqa: N818 - a carrier, not an error of its own
    """A placement failed after the card was authorized: ``error`` goes to the caller,
    and the key is kept (expired) so that a retry completes this attempt."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class OrderServicer(pb_grpc.OrderServiceServicer):
    def __init__(
        self,
        store: OrderStore,
        ports: Ports,
        *,
        subjects: Subjects,
        feed: ChangeFeed,
        relay: OutboxRelay | None = None,
        watch_poll_s: float = 5.0,
        crash_at: str = "",
    ) -> None:
        self.crash_at = crash_at
        self._placing: set[asyncio.Task[order_pb2.Order]] = set()
        self.store = store
        self.ports = ports
        self.subjects = subjects
        self.feed = feed
        self.relay = relay
        self.watch_poll_s = watch_poll_s

    # -- helpers -----------------------------------------------------------------------

    def _event(
        self, o: Order, e: Entry, name: str, snapshot: order_pb2.Order | None = None
    ) -> OutboxEvent:
        ev = order_pb2.OrderEvent(
            event_id=f"{o.order_id}.{e.seq}",
            order=snapshot if snapshot is not None else convert.order_to_pb(o),
            change=convert.entry_to_pb(e),
        )
        ev.event_time.FromDatetime(e.at)
        return OutboxEvent(
            subject=self.subjects.subject(ORDER_EVENTS.subject(name or e.status.value)),
            event_id=ev.event_id,
            payload=ev.SerializeToString(),
        )

    def _release_event(self, o: Order) -> OutboxEvent:
        """``orders.v1.placed`` of a scheduled order, sent when it is released."""
        ev = order_pb2.OrderEvent(
            event_id=f"{o.order_id}.released",
            order=convert.order_to_pb(o),
            change=convert.entry_to_pb(o.timeline[0]),
        )
        ev.event_time.GetCurrentTime()
        return OutboxEvent(
            subject=self.subjects.subject(ORDER_EVENTS.subject("placed")),
            event_id=ev.event_id,
            payload=ev.SerializeToString(),
        )

    async def release_due(self) -> list[str]:
        """Releases the scheduled orders whose time has come (one pass)."""
        released = await self.store.release_due(_now(), self._release_event)
        if released:
            self._poke()
        return released

    def _poke(self) -> None:
        if self.relay is not None:
            self.relay.poke()

    async def _visible_order(self, order_id: str, p: Principal) -> Order:
        o = await self.store.get(order_id)
        if o is None or not _visible(o, p):
            raise _not_found(order_id)  # someone else's order looks like no order at all
        return o

    async def settle(self, o: Order) -> Order:
        """Carries out the order's pending payment operation; leaves it pending on failure."""
        op = o.payment_pending
        if op is None:
            return o
        pay = self.ports.payments
        key, amount = str(op["key"]), int(op["amount"])
        try:
            if op["op"] == "capture":
                await pay.capture(key=key, payment_id=o.payment_id, amount_minor=amount)
                status, refunded = "captured", o.refunded_minor
            else:
                kept = int(op.get("kept", 0))
                if kept > 0:
                    await pay.capture(key=key + ":capture", payment_id=o.payment_id,
                                      amount_minor=o.total_minor)  # fmt: skip
                if amount > 0:
                    out = await pay.refund(key=key + ":refund", payment_id=o.payment_id,
                                           amount_minor=amount)  # fmt: skip
                    status, refunded = out.status, out.refunded_minor
                else:
                    status, refunded = "captured", 0
        except (PaymentError, OSError) as exc:
            _log.warning("payment %s of %s still pending: %s", op["op"], o.order_id, exc)
            return o
        settled = await self.store.settle_payment(o.order_id, op_key=key, payment_status=status,
                                                  refunded_minor=refunded)  # fmt: skip
        return settled or o

    async def settle_pending(self) -> int:
        """One pass over orders with a payment operation left pending; returns how many."""
        n = 0
        for order_id in await self.store.pending_payments():
            o = await self.store.get(order_id)
            if o is not None and (await self.settle(o)).payment_pending is None:
                n += 1
        return n

    async def forward_driver_ratings(self) -> int:
        """Hands stored driver ratings to Dispatch (once it is configured); returns how many."""
        if self.ports.drivers is None:
            return 0
        n = 0
        for order_id, driver_id, rating in await self.store.unforwarded_driver_ratings():
            try:
                await self.ports.drivers.rate_driver(
                    dispatch_pb2.RateDriverRequest(order_id=order_id, driver_id=driver_id,
                                                   rating=rating), deadline_s=2.0)  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    _log.warning("driver rating of %s not forwarded: %s", order_id,
                                 exc.code().name)  # fmt: skip
                    break  # Dispatch is away: next pass
            await self.store.mark_forwarded(order_id, restaurant=False, driver=True)
            n += 1
        return n

    # -- PlaceOrder --------------------------------------------------------------------

    async def PlaceOrder(  # noqa: N802
        self, request: order_pb2.PlaceOrderRequest, context: Ctx
    ) -> order_pb2.PlaceOrderResponse:
        p = require()
        now = _now()
        convert.check_place(request, now)
        digest = convert.request_hash(request)
        loop = asyncio.get_running_loop()
        left = time_left()
        give_up = loop.time() + max(0.0, left - 0.3)
        hold_s = min(_CLAIM_HOLD_MAX_S, max(0.0, left) + _CLAIM_MARGIN_S)
        while True:
            claim = await self.store.claim_key(p.subject, request.idempotency_key, digest,
                                               new_order_id(), hold_s=hold_s)  # fmt: skip
            if claim.kind is ClaimKind.CONFLICT:
                raise AlreadyExists(
                    "idempotency_key was already used for a different order request",
                    reason="IDEMPOTENCY_KEY_REUSED",
                )
            if claim.kind is ClaimKind.DONE:
                done = await self.store.get(claim.order_id)
                if done is None:  # pragma: no cover - keys are marked done with their order
                    raise Aborted("the order of this key is not readable yet: retry")
                return order_pb2.PlaceOrderResponse(order=_pb(done, p))
            if claim.kind is ClaimKind.NEW:
                break
            # The same request is being served right now (a client retrying early):
            # wait for its outcome rather than charging twice.
            if loop.time() >= give_up:
                raise Aborted(
                    "a request with this idempotency_key is in progress: retry shortly",
                    reason="IDEMPOTENCY_KEY_IN_USE",
                )
            await asyncio.sleep(0.05)
        # Once the key is ours the placement runs to its end even if the caller gives up
        # (deadline, cancel): a card may be held by then, and the caller's retry must find
        # the order (or the attempt's outcome), not a half-done attempt cancelled midway.
        task = asyncio.create_task(self._place_claimed(request, p, claim.order_id, digest, now))
        self._placing.add(task)
        task.add_done_callback(self._placed)
        placed = await asyncio.shield(task)
        return order_pb2.PlaceOrderResponse(order=placed)

    async def _place_claimed(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        order_id: str,
        digest: str,
        now: dt.datetime,
    ) -> order_pb2.Order:
        """Places the order of a claimed key; on failure gives the key back as fits."""
        key = req.idempotency_key
        try:
            placed = await self._place(req, p, order_id, digest, now)
        except _MaybeLeftBehind as exc:
            # The card may be held, or the order committed unconfirmed: the same request
            # retried takes the claim over at once, with the same order id and the same
            # authorization key, and finds or finishes this attempt.
            await asyncio.shield(self._expire_key(p.subject, key))
            raise exc.error from None
        except BaseException:
            await asyncio.shield(self.store.release_key(p.subject, key))
            raise
        self._poke()
        return placed

    async def _expire_key(self, customer_id: str, key: str) -> None:
        try:
            await self.store.expire_key(customer_id, key)
        except Exception as exc:  # PostgreSQL away: the claim lapses at its own expiry
            _log.warning("idempotency claim %s of %s left to expire: %s", key, customer_id, exc)

    def _placed(self, task: asyncio.Task[order_pb2.Order]) -> None:
        self._placing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller may have gone (the error was answered)

    def _crash(self, point: str) -> None:
        """Fault injection for the chaos tests (``FOODMESH_ORDER_CRASH_AT``): die here, now."""
        if self.crash_at == point:
            _log.error("FOODMESH_ORDER_CRASH_AT=%s: killing this process", point)
            os.kill(os.getpid(), signal.SIGKILL)

    async def wait_placing(self, timeout_s: float) -> None:
        """Lets placements whose callers gave up finish (at shutdown), then cancels them."""
        if self._placing:
            await asyncio.wait(set(self._placing), timeout=timeout_s)
        await stop_tasks(list(self._placing))

    async def _place(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        order_id: str,
        digest: str,
        now: dt.datetime,
    ) -> order_pb2.Order:
        cat = self.ports.catalog
        rid = req.restaurant_id
        a = req.delivery_address
        budget = max(0.2, time_left() * 0.4)
        try:
            got, menu, where = await asyncio.gather(
                cat.get_restaurant(catalog_pb2.GetRestaurantRequest(restaurant_id=rid),
                                   deadline_s=budget),
                cat.get_menu(catalog_pb2.GetMenuRequest(restaurant_id=rid), deadline_s=budget),
                cat.check_delivery(
                    catalog_pb2.CheckDeliveryRequest(
                        restaurant_id=rid, location=common_pb2.LatLng(lat=a.lat, lon=a.lon)),
                    deadline_s=budget),
            )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            raise _catalog_error(exc, "for the restaurant", rid) from None
        r = got.restaurant
        scheduled = req.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED
        currency = r.minimum_order.currency_code or "USD"
        lines = price_lines(req.items, menu.menu, currency)
        if not where.deliverable:
            raise FailedPrecondition(
                f"delivery_address: restaurant {rid!r} does not deliver there ({where.reason})",
                reason="OUTSIDE_DELIVERY_ZONE",
            )
        subtotal = sum(ln.line_total_minor for ln in lines)
        minimum = where.minimum_order.amount_minor
        if subtotal < minimum:
            raise FailedPrecondition(
                f"the subtotal {subtotal} is under the minimum order {minimum} ({currency} minor"
                " units) for this address",
                reason="BELOW_MINIMUM_ORDER",
            )
        tip = req.tip.amount_minor if req.HasField("tip") else 0
        if req.HasField("tip") and req.tip.currency_code not in ("", currency):
            raise InvalidArgument.field("tip.currency_code", f"must be {currency}")
        tip_cap = max(subtotal, convert.TIP_FLOOR_MINOR)
        if tip > tip_cap:
            raise InvalidArgument.field(
                "tip.amount_minor",
                f"must be at most the subtotal or {convert.TIP_FLOOR_MINOR}, whichever is more"
                f" ({tip_cap} {currency} minor units here)",
            )
        try:
            quote = await self.ports.pricing.quote(
                PriceInput(
                    customer_id=p.subject, restaurant_id=rid, currency=currency,
                    subtotal_minor=subtotal,
                    zone_delivery_fee_minor=where.delivery_fee.amount_minor,
                    items=tuple((ln.item_id, ln.quantity, ln.customizations) for ln in lines),
                    delivery_address=a, promo_code=req.promo_code, quote_id=req.quote_id,
                    order_id=order_id, distance_m=where.distance_miles * METERS_PER_MILE,
                ),
                timeout_s=max(0.2, time_left() * 0.3),
            )  # fmt: skip
        except PromoUnavailable:
            raise FailedPrecondition(
                "promo_code: promo codes cannot be checked while the pricing service is away",
                reason="PROMO_UNAVAILABLE",
            ) from None
        estimate = await self.ports.eta.estimate(
            EtaInput(
                restaurant_id=rid, restaurant=(r.address.lat, r.address.lon),
                destination=(a.lat, a.lon), prep_minutes=r.avg_prep_time_min or 20,
                item_count=sum(ln.quantity for ln in lines), subtotal_minor=subtotal,
                currency=currency, start=now,
            ),
            timeout_s=max(0.2, time_left() * 0.3),
        )  # fmt: skip
        release_at: dt.datetime | None = None
        arrival, ready = estimate.arrival, estimate.ready
        if scheduled:
            # Held until scheduled_time − (prep + travel), then released to the kitchen.
            arrival = req.scheduled_time.ToDatetime(dt.UTC)
            ready = arrival - dt.timedelta(minutes=estimate.travel_minutes)
            release_at = ready - dt.timedelta(minutes=estimate.prep_minutes)
            hours = [(h.weekday, h.open_minute, h.close_minute) for h in r.hours]
            if not open_at(max(release_at, now), r.time_zone, hours,
                           [c.date for c in r.closures]):  # fmt: skip
                raise FailedPrecondition(
                    f"scheduled_time: restaurant {rid!r} is closed when the order would be cooked",
                    reason="RESTAURANT_CLOSED",
                )
        elif not r.is_open:
            raise FailedPrecondition(
                f"restaurant {rid!r} is closed now", reason="RESTAURANT_CLOSED"
            )
        total = quote.total(tip)
        if time_left() <= 0.0:
            # The caller is gone and nothing is held yet: stop here (the key is released)
            # rather than spend an overloaded service's time on an answer nobody reads.
            raise Unavailable("the request's deadline passed before payment: nothing was done",
                              reason="DEADLINE_PASSED")  # fmt: skip
        try:
            auth = await self.ports.payments.authorize(
                key=f"auth:{p.subject}:{req.idempotency_key}:{digest[:16]}",
                payment_method_id=req.payment_method_id,
                amount_minor=total,
                currency=currency,
                reference=order_id,
                customer_id=p.subject,
            )
        except PaymentDeclined as exc:
            raise FailedPrecondition(f"payment_method_id: {exc.message}",
                                     reason=f"PAYMENT_{exc.code.upper()}") from None  # fmt: skip
        except ProviderUnavailable as exc:
            raise Unavailable(
                f"the payment provider did not answer: {exc}; retry with the same idempotency_key",
                reason="PAYMENT_UNAVAILABLE",
            ) from None
        except PaymentError as exc:
            raise FailedPrecondition(f"payment_method_id: {exc}", reason="PAYMENT_FAILED") from None
        self._crash("authorized")
        first = Entry(1, Status.PLACED, now, p.subject)
        order = Order(
            order_id=order_id,
            customer_id=p.subject,
            restaurant_id=rid,
            restaurant_name=r.name,
            restaurant_lat=r.address.lat,
            restaurant_lon=r.address.lon,
            driver_id="",
            status=Status.PLACED,
            delivery_address=convert.address_json(a),
            delivery_option=int(req.delivery_option) or order_pb2.DELIVERY_OPTION_STANDARD,
            scheduled_time=req.scheduled_time.ToDatetime(dt.UTC) if scheduled else None,
            currency=currency,
            subtotal_minor=quote.subtotal_minor,
            delivery_fee_minor=quote.delivery_fee_minor,
            service_fee_minor=quote.service_fee_minor,
            small_order_fee_minor=quote.small_order_fee_minor,
            tax_minor=quote.tax_minor,
            discount_minor=quote.discount_minor,
            tip_minor=tip,
            total_minor=total,
            surge_multiplier=quote.surge_multiplier,
            quote_id=quote.quote_id,
            promo_code=req.promo_code,
            payment_provider=self.ports.payments.name,
            payment_id=auth.payment_id,
            payment_status="authorized",
            refunded_minor=0,
            payment_pending=None,
            estimated_delivery_time=arrival,
            promised_delivery_time=arrival,
            eta_confidence=estimate.confidence,
            ready_time=ready,
            release_at=release_at,
            released=release_at is None,
            cancellation_reason="",
            last_seq=1,
            created_at=now,
            updated_at=now,
            items=tuple(lines),
            timeline=(first,),
            delivery_pin=_new_pin(),
            leave_at_door=req.leave_at_door,
        )
        snapshot = convert.order_to_pb(order)
        event = self._event(order, first, "" if order.released else "scheduled", snapshot)
        try:
            await self.store.insert_order(order, event, idempotency_key=req.idempotency_key)
        except BaseException as exc:
            # The hold stays: whether or not the insert committed, the retry of this request
            # uses it (same authorization key), so voiding it here could only void the
            # hold of an order that exists after all.
            if not isinstance(exc, Exception):  # cancelled (shutdown): nothing more to ask
                raise
            try:
                if await self.store.exists(order_id):  # a twin attempt (takeover) won
                    done = await self.store.get(order_id)
                    if done is not None:
                        return _pb(done, p)
            except Exception:
                pass
            _log.warning("order %s not confirmed written: %s", order_id, exc)
            raise _MaybeLeftBehind(Unavailable(
                "the order could not be confirmed written: retry with the same idempotency_key",
                reason="ORDER_NOT_CONFIRMED",
            )) from exc  # fmt: skip
        metrics.placed()
        self._crash("placed")
        return _pb(order, p)

    # -- reads -------------------------------------------------------------------------

    async def GetOrder(  # noqa: N802
        self, request: order_pb2.GetOrderRequest, context: Ctx
    ) -> order_pb2.GetOrderResponse:
        convert.require_id(request.order_id, "order_id")
        p = require()
        o = await self._visible_order(request.order_id, p)
        return order_pb2.GetOrderResponse(order=_pb(o, p))

    async def ListOrders(  # noqa: N802
        self, request: order_pb2.ListOrdersRequest, context: Ctx
    ) -> order_pb2.ListOrdersResponse:
        p = require()
        v = Violations()
        size = convert.page_size(v, request.page_size)
        statuses = []
        for i, s in enumerate(request.status):
            st = convert.status_from_pb(s)
            if v.check(st is not None, f"status[{i}]", "unknown status") and st is not None:
                statuses.append(st)
        for name in ("restaurant_id", "customer_id", "driver_id"):
            value = getattr(request, name)
            if value:
                convert.check_id(v, value, name)
        v.raise_if_any()
        f = ListFilter(customer_id=request.customer_id, restaurant_id=request.restaurant_id,
                       driver_id=request.driver_id, statuses=tuple(statuses))  # fmt: skip
        if p.role == "customer":
            f = ListFilter(customer_id=p.subject, restaurant_id=request.restaurant_id,
                           statuses=f.statuses)  # fmt: skip
        elif p.role == "driver":
            f = ListFilter(driver_id=p.subject, statuses=f.statuses)
        elif p.role == "restaurant":
            if request.restaurant_id and request.restaurant_id != p.subject:
                raise PermissionDenied(
                    f"restaurant {p.subject!r} may list only its own orders", reason="NOT_OWNER"
                )
            f = ListFilter(restaurant_id=p.subject, customer_id=request.customer_id,
                           statuses=f.statuses)  # fmt: skip
        scope = f"{f.customer_id}|{f.restaurant_id}|{f.driver_id}|{','.join(f.statuses)}"
        before = convert.decode_cursor(request.page_token, scope) if request.page_token else ""
        found = await self.store.list_orders(f, before_id=before, limit=size + 1)
        page = found[:size]
        token = convert.encode_cursor(scope, page[-1].order_id) if len(found) > size else ""
        return order_pb2.ListOrdersResponse(orders=[_pb(o, p) for o in page], next_page_token=token)

    # -- changes -----------------------------------------------------------------------

    async def _cancel(self, order_id: str, reason: str, p: Principal) -> Order:
        actor = Actor(p.role, p.subject)

        def decide(o: Order) -> Change | None:
            if not _visible(o, p):
                raise _not_found(order_id)
            if o.status is Status.CANCELLED:
                return None  # a retried cancellation: done already
            try:
                check_cancel(o.status, actor, customer_id=o.customer_id,
                             restaurant_id=o.restaurant_id)  # fmt: skip
                refund = cancel_refund(
                    o.status,
                    p.role,
                    total_minor=o.total_minor,
                    subtotal_minor=o.subtotal_minor,
                    tax_minor=o.tax_minor,
                )
            except IllegalTransition as exc:
                raise _illegal(exc) from None
            except NotAllowed as exc:
                raise PermissionDenied(str(exc), reason="NOT_ALLOWED") from None
            return Change(
                status=Status.CANCELLED,
                actor=p.subject,
                reason=f"{reason} ({refund.why})",
                cancellation_reason=reason,
                payment_pending={"op": "refund", "amount": refund.refund_minor,
                                 "kept": refund.kept_minor, "key": f"cancel:{o.order_id}"},
            )  # fmt: skip

        done = await self.store.apply(order_id, decide, self._event)
        if done is None:
            raise _not_found(order_id)
        o, changed = done
        if changed:
            self._poke()
        return await self.settle(o)

    async def CancelOrder(  # noqa: N802
        self, request: order_pb2.CancelOrderRequest, context: Ctx
    ) -> order_pb2.CancelOrderResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        v.check(bool(request.reason.strip()), "reason", "is required")
        v.check(len(request.reason) <= 500, "reason", "at most 500 characters")
        v.raise_if_any()
        p = require()
        o = await self._cancel(request.order_id, request.reason.strip(), p)
        return order_pb2.CancelOrderResponse(order=_pb(o, p))

    async def UpdateOrderStatus(  # noqa: N802
        self, request: order_pb2.UpdateOrderStatusRequest, context: Ctx
    ) -> order_pb2.UpdateOrderStatusResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        to = convert.status_from_pb(request.status)
        v.check(to is not None, "status", "is required (the status to enter)")
        v.check(to is not Status.PLACED, "status", "an order is placed only by PlaceOrder")
        v.check(len(request.reason) <= 500, "reason", "at most 500 characters")
        if request.driver_id:
            convert.check_id(v, request.driver_id, "driver_id")
        proof = request.delivery_proof.WhichOneof("kind")
        if proof == "pin":
            v.check(_PIN.fullmatch(request.delivery_proof.pin) is not None,
                    "delivery_proof.pin", "must be the customer's 4 digits")  # fmt: skip
        elif proof == "photo_reference":
            ref = request.delivery_proof.photo_reference
            v.check(0 < len(ref) <= 200 and ref.isprintable(), "delivery_proof.photo_reference",
                    "1 to 200 printable characters")  # fmt: skip
        if proof is not None:
            v.check(to is Status.DELIVERED, "delivery_proof", "only for ORDER_STATUS_DELIVERED")
        v.raise_if_any()
        assert to is not None
        p = require()
        if p.role == "driver" and to in ROAD:
            raise PermissionDenied(
                f"drivers mark an order {to.value} through their DriverSession"
                " (DispatchService), which checks the proof of delivery",
                reason="USE_DRIVER_SESSION",
            )
        if request.driver_id and p.role not in ("ops", "service"):
            raise PermissionDenied("driver_id is for a service acting for a driver",
                                   reason="NOT_ALLOWED")  # fmt: skip
        if to is Status.CANCELLED:
            if not request.reason.strip():
                raise InvalidArgument.field("reason", "is required to cancel")
            o = await self._cancel(request.order_id, request.reason.strip(), p)
            return order_pb2.UpdateOrderStatusResponse(order=convert.order_to_pb(o))
        actor = Actor(p.role, p.subject)
        if to is Status.DELIVERED and p.role == "service" and proof is None:
            raise InvalidArgument.field(
                "delivery_proof", "is required: the customer's pin, or a photo_reference for"
                " an order left at the door",
            )  # fmt: skip
        pin_ok = False
        if proof == "pin":
            pin_ok = await self._check_pin(request.order_id, request.delivery_proof.pin, p)

        def decide(o: Order) -> Change | None:
            if not _visible(o, p):
                raise _not_found(request.order_id)
            if o.status is to:
                return None  # a retried step: done already
            if not o.released and p.role == "restaurant":
                raise FailedPrecondition(
                    f"order {o.order_id} is scheduled: it reaches the kitchen at "
                    f"{o.release_at:%Y-%m-%d %H:%M} UTC",
                    reason="NOT_RELEASED",
                )
            if request.driver_id and to in ROAD and request.driver_id != o.driver_id:
                raise PermissionDenied(
                    f"driver {request.driver_id} does not carry order {o.order_id}",
                    reason="NOT_YOUR_ORDER",
                )
            try:
                check_step(o.status, to, actor, restaurant_id=o.restaurant_id,
                           driver_id=o.driver_id)  # fmt: skip
            except IllegalTransition as exc:
                raise _illegal(exc) from None
            except NotAllowed as exc:
                raise PermissionDenied(str(exc), reason="NOT_ALLOWED") from None
            pending = None
            reason = request.reason
            if to is Status.DELIVERED:
                pending = {"op": "capture", "amount": o.total_minor, "key": f"capture:{o.order_id}"}
                if proof == "pin":
                    if not pin_ok:  # the order came in transit after the check: ask again
                        raise Aborted("the order changed while its PIN was checked: retry")
                    shown = "the customer's PIN"
                elif proof == "photo_reference":
                    if not o.leave_at_door:
                        raise InvalidArgument.field(
                            "delivery_proof.photo_reference",
                            "a photo proves only an order left at the door: give the customer's"
                            " pin",
                        )  # fmt: skip
                    shown = f"photo {request.delivery_proof.photo_reference}"
                else:
                    shown = f"confirmed by {p.role} {p.subject} without proof"
                reason = (reason + " " if reason else "") + f"(proof: {shown})"
            who = request.driver_id if request.driver_id and to in ROAD else p.subject
            return Change(status=to, actor=who, reason=reason, payment_pending=pending)

        done = await self.store.apply(request.order_id, decide, self._event)
        if done is None:
            raise _not_found(request.order_id)
        o, changed = done
        if changed:
            self._poke()
        o = await self.settle(o)
        return order_pb2.UpdateOrderStatusResponse(order=convert.order_to_pb(o))

    async def _check_pin(self, order_id: str, pin: str, p: Principal) -> bool:
        """True for the customer's PIN of an order in transit; raises for a wrong or locked one.

        False when the order is not in transit (the step then answers for itself).
        """
        if p.role not in ("ops", "service"):  # a restaurant cannot try PINs either
            raise PermissionDenied("only Dispatch and ops check delivery PINs",
                                   reason="NOT_ALLOWED")  # fmt: skip
        outcome, left = await self.store.check_pin(order_id, pin)
        if outcome is PinCheck.OK:
            return True
        if outcome is PinCheck.WRONG:
            _log.info("wrong delivery PIN for %s (%d tries left)", order_id, left)
            raise InvalidArgument.field(
                "delivery_proof.pin",
                f"is not the customer's PIN ({left} of {MAX_PIN_ATTEMPTS} tries left)",
            )
        if outcome is PinCheck.LOCKED:
            raise FailedPrecondition(
                f"the delivery PIN of order {order_id} is locked after {MAX_PIN_ATTEMPTS} wrong"
                " tries: operations must confirm this delivery",
                reason="PIN_LOCKED",
            )
        if outcome is PinCheck.NO_PIN:
            raise FailedPrecondition(
                f"order {order_id} has no delivery PIN (placed before PINs): operations must"
                " confirm this delivery",
                reason="NO_PIN",
            )
        return False

    async def AssignDriver(  # noqa: N802
        self, request: order_pb2.AssignDriverRequest, context: Ctx
    ) -> order_pb2.AssignDriverResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        if request.driver_id:
            convert.check_id(v, request.driver_id, "driver_id")
        v.check(len(request.reason) <= 500, "reason", "at most 500 characters")
        v.raise_if_any()
        p = require()
        eta = (request.estimated_delivery_time.ToDatetime(dt.UTC)
               if request.HasField("estimated_delivery_time") else None)  # fmt: skip

        def decide(o: Order) -> Change | None:
            if o.status in FINAL:
                raise FailedPrecondition(
                    f"an order that is {o.status.value} cannot get a driver",
                    reason="ILLEGAL_TRANSITION",
                )
            if o.driver_id == request.driver_id:
                return None
            if request.driver_id:
                why = request.reason or f"driver {request.driver_id} assigned"
                event = "driver_assigned"
            else:
                why = request.reason or f"driver {o.driver_id} unassigned"
                event = "driver_unassigned"
            return Change(status=o.status, actor=p.subject, reason=why,
                          driver_id=request.driver_id, estimated_delivery_time=eta,
                          event=event)  # fmt: skip

        done = await self.store.apply(request.order_id, decide, self._event)
        if done is None:
            raise _not_found(request.order_id)
        o, changed = done
        if changed:
            self._poke()
        return order_pb2.AssignDriverResponse(order=convert.order_to_pb(o))

    # -- ratings -----------------------------------------------------------------------

    async def RateOrder(  # noqa: N802
        self, request: order_pb2.RateOrderRequest, context: Ctx
    ) -> order_pb2.RateOrderResponse:
        v = Violations()
        convert.check_id(v, request.order_id, "order_id")
        v.check(1 <= request.restaurant_rating <= 5, "restaurant_rating", "must be 1 to 5")
        v.check(0 <= request.driver_rating <= 5, "driver_rating", "must be 0 (skip) to 5")
        v.check(len(request.restaurant_review) <= 2000, "restaurant_review",
                "at most 2000 characters")  # fmt: skip
        v.raise_if_any()
        p = require()
        o = await self._visible_order(request.order_id, p)
        if o.status is not Status.DELIVERED:
            raise FailedPrecondition(
                f"only a delivered order can be rated; this one is {o.status.value}",
                reason="NOT_DELIVERED",
            )
        mine = (request.restaurant_rating, request.restaurant_review, request.driver_rating)
        if not await self.store.add_rating(o, restaurant_rating=mine[0], review=mine[1],
                                           driver_rating=mine[2]):  # fmt: skip
            stored = await self.store.get_rating(o.order_id)
            if stored is None or stored[:3] != mine:
                raise AlreadyExists("this order was already rated", reason="ALREADY_RATED")
        review = catalog_pb2.Review(
            order_id=o.order_id,
            restaurant_id=o.restaurant_id,
            customer_id=o.customer_id,
            rating=mine[0],
            text=mine[1],
        )
        try:
            added = await self.ports.catalog.add_review(
                catalog_pb2.AddReviewRequest(review=review), deadline_s=max(0.2, time_left() * 0.5)
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"the rating is saved but the catalog did not take it ({exc.code().name}): retry",
                reason="CATALOG_UNAVAILABLE",
            ) from None
        driver_done = False
        if mine[2] and o.driver_id and self.ports.drivers is not None:
            try:
                await self.ports.drivers.rate_driver(
                    dispatch_pb2.RateDriverRequest(order_id=o.order_id, driver_id=o.driver_id,
                                                   rating=mine[2]),
                    deadline_s=max(0.2, time_left() * 0.5),
                )  # fmt: skip
                driver_done = True
            except grpc.aio.AioRpcError as exc:  # kept; forwarded again on a retry
                _log.warning("driver rating of %s not forwarded: %s", o.order_id, exc.code().name)
        await self.store.mark_forwarded(o.order_id, restaurant=True, driver=driver_done)
        return order_pb2.RateOrderResponse(
            restaurant_rating=added.rating, restaurant_review_count=added.review_count
        )

    # -- WatchOrder --------------------------------------------------------------------

    async def WatchOrder(  # noqa: N802
        self, request: order_pb2.WatchOrderRequest, context: Ctx
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        convert.require_id(request.order_id, "order_id")
        p = require()
        with self.feed.watch(request.order_id) as wake:
            o = await self._visible_order(request.order_id, p)
            if not 0 <= request.after_seq <= o.last_seq:
                raise InvalidArgument.field(
                    "after_seq", f"must be 0 to the order's last timeline position {o.last_seq}"
                )
            last = request.after_seq
            if last == 0:
                yield order_pb2.WatchOrderResponse(order=_pb(o, p))
                last = o.last_seq
            while True:
                if o.last_seq > last:
                    snapshot = _pb(o, p)
                    for e in o.timeline:
                        if e.seq > last:
                            yield order_pb2.WatchOrderResponse(
                                order=snapshot, change=convert.entry_to_pb(e)
                            )
                            last = e.seq
                if o.status in FINAL and last >= o.last_seq:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.watch_poll_s):
                        await wake.wait()
                wake.clear()
                fresh = await self.store.get(request.order_id)
                if fresh is not None:
                    if not _visible(fresh, p):
                        # A driver taken off the order (reassigned) stops seeing it, at once.
                        raise _not_found(request.order_id)
                    o = fresh
