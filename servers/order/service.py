"""OrderServicer: decode the request, call Catalog, pricing, ETA, payments and the store, encode.

The domain lives in ``transitions`` (state machine, refunds), ``cart`` (menu
pricing), ``pricing``/``eta`` (ports with fallbacks) and ``payments``/``sandbox``;
PlaceOrder's steps are ``placement``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Callable
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
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import catalog_pb2, dispatch_pb2, order_pb2
from foodmesh.v1 import order_pb2_grpc as pb_grpc
from servers.order import convert
from servers.order.confirm import DEFAULT_TIMEOUT_S
from servers.order.design import placed_response
from servers.order.eta import EtaPort
from servers.order.feed import FeedWaker
from servers.order.flows import RestaurantFlows, free_cancel
from servers.order.methods import MethodStore, PaymentMethodsServicer
from servers.order.model import Change, Entry, Order
from servers.order.payments import (
    HoldLookup,
    MethodVault,
    PaymentError,
    PaymentProvider,
)
from servers.order.placement import NO_HOOKS, MaybeLeftBehind, Placement, PlacementHooks
from servers.order.pricing import PricingPort
from servers.order.store import MAX_PIN_ATTEMPTS, ListFilter, OrderStore, PinCheck
from servers.order.transitions import (
    FINAL,
    ROAD,
    Actor,
    IllegalTransition,
    NotAllowed,
    Refund,
    Status,
    cancel_refund,
    check_cancel,
    check_step,
)
from servers.order.watch import ChangeFeed
from servers.runtime.auth import require
from servers.runtime.cache import TtlCache
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
    #: Where customers' cards and wallets are saved (the sandbox's vault); None: nowhere.
    vault: MethodVault | None = None


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


def _not_found(order_id: str) -> NotFound:
    return NotFound(f"no order {order_id!r}", reason="ORDER_NOT_FOUND")


def _illegal(exc: IllegalTransition) -> FailedPrecondition:
    return FailedPrecondition(str(exc), reason="ILLEGAL_TRANSITION")


class OrderServicer(PaymentMethodsServicer, RestaurantFlows, pb_grpc.OrderServiceServicer):
    def __init__(
        self,
        store: OrderStore,
        ports: Ports,
        *,
        subjects: Subjects,
        feed: ChangeFeed,
        relay: OutboxRelay | None = None,
        watch_poll_s: float = 5.0,
        hooks: PlacementHooks = NO_HOOKS,
        feed_waker: FeedWaker | None = None,
        confirm_timeout_s: float = DEFAULT_TIMEOUT_S,
        settings_cache_s: float = 2.0,
        lost_resolve_after_s: float = 120.0,
    ) -> None:
        self._placing: set[asyncio.Task[order_pb2.Order]] = set()
        self.store = store
        self.ports = ports
        self.subjects = subjects
        self.feed = feed
        self.relay = relay
        self.watch_poll_s = watch_poll_s
        self.methods = MethodStore(store.pool)
        self.vault = ports.vault
        self.feed_waker = feed_waker or FeedWaker(store.pool)
        # Feed streams are woken by the waker's poll; reading on their own is only a backstop
        # (hundreds of tablets re-reading every few seconds would cost more than it saves).
        self.feed_poll_s = max(30.0, watch_poll_s)
        self.settings_cache = TtlCache(ttl_s=settings_cache_s)
        self.lost_resolve_after_s = lost_resolve_after_s
        self.on_deadline: Callable[[], None] = lambda: None
        self.placement = Placement(store, ports, event=self._event, hooks=hooks,
                                   methods=self.methods,
                                   confirm_settings=self.confirm_settings,
                                   confirm_timeout_s=confirm_timeout_s)  # fmt: skip

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

    async def forward_restaurant_ratings(self) -> int:
        """Hands the Catalog the ratings a RateOrder stored but could not deliver (the
        Catalog away, the caller gone); the Catalog takes each once per order, so one
        delivered twice counts once. Returns how many were taken."""
        n = 0
        pending = await self.store.unforwarded_restaurant_ratings()
        for oid, cid, rid, rating, text, food, at in pending:
            review = catalog_pb2.Review(order_id=oid, restaurant_id=rid, customer_id=cid,
                                        rating=rating, text=text, food_rating=food)  # fmt: skip
            review.create_time.FromDatetime(at)
            try:
                await self.ports.catalog.add_review(
                    catalog_pb2.AddReviewRequest(review=review), deadline_s=2.0
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND):
                    _log.warning("rating of %s not forwarded: %s", oid, exc.code().name)
                    break  # the Catalog is away: next pass
            await self.store.mark_forwarded(oid, restaurant=True, driver=False)
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
        claim = await self.placement.claim_key(request, p, digest)
        if isinstance(claim, Order):
            return placed_response(_pb(claim, p))
        # Once the key is ours the placement runs to its end even if the caller gives up
        # (deadline, cancel): a card may be held by then, and the caller's retry must find
        # the order (or the attempt's outcome), not a half-done attempt cancelled midway.
        task = asyncio.create_task(self._place_claimed(request, p, claim, digest, now))
        self._placing.add(task)
        task.add_done_callback(self._placed)
        placed = await asyncio.shield(task)
        return placed_response(placed)

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
            placed = await self.placement.place(req, p, order_id, digest, now)
        except MaybeLeftBehind as exc:
            # The card may be held, or the order committed unconfirmed: the same request
            # retried takes the claim over at once, with the same order id and the same
            # authorization key, and finds or finishes this attempt.
            await asyncio.shield(self._expire_key(p.subject, key))
            raise exc.error from None
        except BaseException:
            await asyncio.shield(self._give_back(p.subject, key, order_id))
            raise
        self._poke()
        self.on_deadline()  # an auto-confirmed order is due at once
        return _pb(placed, p)

    async def _give_back(self, customer_id: str, key: str, order_id: str) -> None:
        """Releases the key of a placement that failed; expires it if a card hold is left.

        A placement stopped after the card hold (shutdown, a bug) keeps its claim so that a
        retry finishes it, or the holds sweeper voids the hold once the claim has lapsed.
        """
        pay = self.ports.payments
        try:
            held = isinstance(pay, HoldLookup) and any(
                h.status == "authorized" for h in await pay.holds_for(reference=order_id)
            )
        except Exception:  # the ledger away: keep the claim, the sweeper will look again
            held = True
        if held:
            await self._expire_key(customer_id, key)
        else:
            await self.store.release_key(customer_id, key)

    async def _expire_key(self, customer_id: str, key: str) -> None:
        try:
            await self.store.expire_key(customer_id, key)
        except Exception as exc:  # PostgreSQL away: the claim lapses at its own expiry
            _log.warning("idempotency claim %s of %s left to expire: %s", key, customer_id, exc)

    def _placed(self, task: asyncio.Task[order_pb2.Order]) -> None:
        self._placing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller may have gone (the error was answered)

    async def wait_placing(self, timeout_s: float) -> None:
        """Lets placements whose callers gave up finish (at shutdown), then cancels them."""
        if self._placing:
            await asyncio.wait(set(self._placing), timeout=timeout_s)
        await stop_tasks(list(self._placing))

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
                if p.role == "customer" and free_cancel(o, _now()):
                    refund = Refund(o.total_minor, 0, "no driver found: free cancellation")
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
            # A driver found ends a no-driver alert (and the free cancellation with it).
            found = bool(request.driver_id) and (o.alert or {}).get("kind") == "no_driver"
            return Change(status=o.status, actor=p.subject, reason=why,
                          driver_id=request.driver_id, estimated_delivery_time=eta,
                          event=event, set_alert=found)  # fmt: skip

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
        v.check(0 <= request.food_rating <= 5, "food_rating", "must be 0 (skip) to 5")
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
        mine = (request.restaurant_rating, request.restaurant_review, request.driver_rating,
                request.food_rating)  # fmt: skip
        if not await self.store.add_rating(o, restaurant_rating=mine[0], review=mine[1],
                                           driver_rating=mine[2], food_rating=mine[3]):  # fmt: skip
            stored = await self.store.get_rating(o.order_id)
            if stored != mine:
                raise AlreadyExists("this order was already rated", reason="ALREADY_RATED")
        review = catalog_pb2.Review(
            order_id=o.order_id,
            restaurant_id=o.restaurant_id,
            customer_id=o.customer_id,
            rating=mine[0],
            text=mine[1],
            food_rating=mine[3],
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
            restaurant_rating=added.rating,
            restaurant_review_count=added.review_count,
            food_rating=added.food_rating,
            food_rating_count=added.food_rating_count,
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
