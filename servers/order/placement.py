"""PlaceOrder's steps: claim the key, load the restaurant, price, promise, authorize, commit.

Each step is one small method of :class:`Placement`, run in that order by
:meth:`Placement.place`; a step raises the typed error that answers the caller.
``hooks`` see the points between the steps that matter to failure tests (after the
card hold, after the commit); in production they do nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc

from foodmesh.core.auth import Principal
from foodmesh.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from foodmesh.core.geo import METERS_PER_MILE, geohash_encode
from foodmesh.v1 import catalog_pb2, common_pb2, order_pb2
from servers.order import convert, metrics
from servers.order.cart import price_lines
from servers.order.confirm import DEFAULT_TIMEOUT_S, ConfirmPlan, ConfirmSettings, plan_confirm
from servers.order.eta import Estimate, EtaInput
from servers.order.ids import new_order_id
from servers.order.methods import MethodStore, display_name
from servers.order.model import Entry, Line, Order
from servers.order.payments import Authorization, PaymentDeclined, PaymentError, ProviderUnavailable
from servers.order.pricing import PriceInput, PromoUnavailable, Quote
from servers.order.schedule import open_at
from servers.order.store import ClaimKind, OrderStore
from servers.order.transitions import Status
from servers.runtime.context import time_left
from servers.runtime.outbox import OutboxEvent

if TYPE_CHECKING:
    from servers.order.service import Ports

__all__ = [
    "NO_HOOKS",
    "CellConditions",
    "MaybeLeftBehind",
    "Placement",
    "PlacementHooks",
    "cell_conditions",
]

_log = logging.getLogger("foodmesh.order")

#: A claimed idempotency key is held this long past the request's deadline (the placement
#: runs on after a caller gives up; its calls have floors of 0.2 s each) ...
_CLAIM_MARGIN_S = 5.0
#: ... and never longer than this: then a retry takes a dead request's claim over.
_CLAIM_HOLD_MAX_S = 60.0

#: Builds the outbox event of an order's entry: (order, entry, event name, snapshot).
#: A restaurant's order-taking settings by its id.
SettingsOf = Callable[[str], Awaitable[ConfirmSettings]]
EventOf = Callable[[Order, Entry, str, "order_pb2.Order | None"], OutboxEvent]


class PlacementHooks(Protocol):
    """Told when a placement passes a point: ``authorized`` (card held, nothing written)
    and ``placed`` (committed, not yet published)."""

    def reached(self, point: str) -> None: ...


class _NoHooks:
    def reached(self, point: str) -> None:
        pass


NO_HOOKS: PlacementHooks = _NoHooks()


class MaybeLeftBehind(Exception):  # noqa: N818 - a carrier, not an error of its own
    """A placement failed after the card was authorized: ``error`` goes to the caller,
    and the key is kept (expired) so that a retry completes this attempt."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Venue:
    """What the Catalog says about the restaurant, its menu and the delivery address."""

    restaurant: catalog_pb2.Restaurant
    menu: catalog_pb2.Menu
    where: catalog_pb2.CheckDeliveryResponse


@dataclass(frozen=True, slots=True)
class Cart:
    """The menu-priced lines, checked against the zone's minimum, and the tip."""

    currency: str
    lines: tuple[Line, ...]
    subtotal_minor: int
    tip_minor: int


@dataclass(frozen=True, slots=True)
class Promise:
    """When the order is ready and arrives; ``release_at`` for a scheduled order."""

    arrival: dt.datetime
    ready: dt.datetime
    release_at: dt.datetime | None
    confidence: float
    #: The estimate behind it (recorded as the placement stage's).
    estimate: Estimate | None = None


@dataclass(frozen=True, slots=True)
class CellConditions:
    """The restaurant's cell at placement, from the quote's surge (None: unknown)."""

    drivers_nearby: int | None = None
    weather: int | None = None
    event_multiplier: float | None = None


def cell_conditions(quote: Quote, restaurant: tuple[float, float]) -> CellConditions:
    """The quote's surge conditions if they are the restaurant's cell, else unknown.

    Pricing prices the surge of the pickup (the restaurant's cell), so the quote's is
    reused as it is: no second call on the placement's path. A surge of another cell
    (a quote made before the restaurant moved) says nothing about this one.
    """
    cell = quote.surge_cell
    if not cell or geohash_encode(*restaurant, len(cell)) != cell:
        return CellConditions()
    return CellConditions(quote.drivers_nearby, quote.weather, quote.event_multiplier)


def _new_pin() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def _catalog_error(exc: grpc.aio.AioRpcError, what: str, restaurant_id: str) -> Exception:
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"no restaurant {restaurant_id!r}", reason="RESTAURANT_NOT_FOUND")
    return Unavailable(f"the catalog did not answer {what} ({exc.code().name}): retry")


class Placement:
    """The steps of placing one order, over the service's store and ports."""

    def __init__(
        self,
        store: OrderStore,
        ports: Ports,
        *,
        event: EventOf,
        hooks: PlacementHooks = NO_HOOKS,
        methods: MethodStore | None = None,
        confirm_settings: SettingsOf | None = None,
        confirm_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.ports = ports
        self.event = event
        self.hooks = hooks
        self.methods = methods if methods is not None else MethodStore(store.pool)
        self.confirm_settings = confirm_settings
        self.confirm_timeout_s = confirm_timeout_s

    async def claim_key(
        self, req: order_pb2.PlaceOrderRequest, p: Principal, digest: str
    ) -> str | Order:
        """Claims the request's idempotency key: the new order's id, or the order it made."""
        loop = asyncio.get_running_loop()
        left = time_left()
        give_up = loop.time() + max(0.0, left - 0.3)
        hold_s = min(_CLAIM_HOLD_MAX_S, max(0.0, left) + _CLAIM_MARGIN_S)
        while True:
            claim = await self.store.claim_key(p.subject, req.idempotency_key, digest,
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
                return done
            if claim.kind is ClaimKind.NEW:
                return claim.order_id
            # The same request is being served right now (a client retrying early):
            # wait for its outcome rather than charging twice.
            if loop.time() >= give_up:
                raise Aborted(
                    "a request with this idempotency_key is in progress: retry shortly",
                    reason="IDEMPOTENCY_KEY_IN_USE",
                )
            await asyncio.sleep(0.05)

    async def place(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        order_id: str,
        digest: str,
        now: dt.datetime,
    ) -> Order:
        """Places the order of a claimed key, step by step; returns the order written."""
        # A saved method, the default (none given: refused at once if there is none) or a
        # one-off token; a removed method is refused as the processor refuses an unknown one.
        method = await self.methods.resolve(p.subject, req.payment_method_id)
        venue = await self.load_restaurant_and_menu(req)
        cart = self.check_cart(req, venue)
        quote = await self.price(req, p, order_id, venue, cart)
        promise = await self.promise(req, venue, cart, now, quote=quote)
        total = quote.total(cart.tip_minor)
        auth = await self.authorize(req, p, digest, order_id, total, cart.currency,
                                    method=method)  # fmt: skip
        self.hooks.reached("authorized")
        order = self.build(req, p, order_id, now, venue, cart, quote, promise, auth, total,
                           method=method)  # fmt: skip
        written, fresh = await self.commit(order, req, await self.confirm_plan(venue, promise, now))
        if fresh:
            metrics.placed()
            self.hooks.reached("placed")
            stages = self.store.stages
            if stages is not None and promise.estimate is not None and order.released:
                stages.spawn(stages.record(order_id, "placement", now, promise.estimate))
        return written

    async def load_restaurant_and_menu(self, req: order_pb2.PlaceOrderRequest) -> Venue:
        """The restaurant, its menu and the delivery check, from the Catalog at once."""
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
        return Venue(restaurant=got.restaurant, menu=menu.menu, where=where)

    def check_cart(self, req: order_pb2.PlaceOrderRequest, venue: Venue) -> Cart:
        """Prices the lines from the menu; checks the zone, the minimum order and the tip."""
        rid = req.restaurant_id
        where = venue.where
        currency = venue.restaurant.minimum_order.currency_code or "USD"
        lines = price_lines(req.items, venue.menu, currency)
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
        return Cart(currency=currency, lines=tuple(lines), subtotal_minor=subtotal,
                    tip_minor=tip)  # fmt: skip

    async def price(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        order_id: str,
        venue: Venue,
        cart: Cart,
    ) -> Quote:
        """The receipt, from Pricing (or its fallback while it is away)."""
        where = venue.where
        try:
            return await self.ports.pricing.quote(
                PriceInput(
                    customer_id=p.subject, restaurant_id=req.restaurant_id,
                    currency=cart.currency, subtotal_minor=cart.subtotal_minor,
                    zone_delivery_fee_minor=where.delivery_fee.amount_minor,
                    items=tuple((ln.item_id, ln.quantity, ln.customizations) for ln in cart.lines),
                    delivery_address=req.delivery_address, promo_code=req.promo_code,
                    quote_id=req.quote_id, order_id=order_id,
                    distance_m=where.distance_miles * METERS_PER_MILE,
                ),
                timeout_s=max(0.2, time_left() * 0.3),
            )  # fmt: skip
        except PromoUnavailable:
            raise FailedPrecondition(
                "promo_code: promo codes cannot be checked while the pricing service is away",
                reason="PROMO_UNAVAILABLE",
            ) from None

    async def promise(
        self,
        req: order_pb2.PlaceOrderRequest,
        venue: Venue,
        cart: Cart,
        now: dt.datetime,
        *,
        quote: Quote | None = None,
    ) -> Promise:
        """The ETA; a scheduled order's release time; refuses a closed restaurant."""
        r = venue.restaurant
        rid = req.restaurant_id
        a = req.delivery_address
        c = (cell_conditions(quote, (r.address.lat, r.address.lon)) if quote is not None
             else CellConditions())  # fmt: skip
        estimate = await self.ports.eta.estimate(
            EtaInput(
                restaurant_id=rid, restaurant=(r.address.lat, r.address.lon),
                destination=(a.lat, a.lon), prep_minutes=r.avg_prep_time_min or 20,
                item_count=sum(ln.quantity for ln in cart.lines),
                subtotal_minor=cart.subtotal_minor, currency=cart.currency, start=now,
                drivers_nearby=c.drivers_nearby, weather=c.weather or 0,
                event_multiplier=c.event_multiplier,
            ),
            timeout_s=max(0.2, time_left() * 0.3),
        )  # fmt: skip
        release_at: dt.datetime | None = None
        arrival, ready = estimate.arrival, estimate.ready
        if req.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED:
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
        return Promise(arrival=arrival, ready=ready, release_at=release_at,
                       confidence=estimate.confidence, estimate=estimate)  # fmt: skip

    async def authorize(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        digest: str,
        order_id: str,
        total: int,
        currency: str,
        *,
        method: str,
    ) -> Authorization:
        """Holds ``total`` on ``method``, keyed by the request (a retry reuses the hold)."""
        if time_left() <= 0.0:
            # The caller is gone and nothing is held yet: stop here (the key is released)
            # rather than spend an overloaded service's time on an answer nobody reads.
            raise Unavailable("the request's deadline passed before payment: nothing was done",
                              reason="DEADLINE_PASSED")  # fmt: skip
        try:
            return await self.ports.payments.authorize(
                key=f"auth:{p.subject}:{req.idempotency_key}:{digest[:16]}",
                payment_method_id=method,
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

    def build(
        self,
        req: order_pb2.PlaceOrderRequest,
        p: Principal,
        order_id: str,
        now: dt.datetime,
        venue: Venue,
        cart: Cart,
        quote: Quote,
        promise: Promise,
        auth: Authorization,
        total: int,
        *,
        method: str = "",
    ) -> Order:
        """The order as it is written: placed, paid (authorized), its first timeline entry."""
        r = venue.restaurant
        scheduled = req.delivery_option == order_pb2.DELIVERY_OPTION_SCHEDULED
        c = cell_conditions(quote, (r.address.lat, r.address.lon))
        return Order(
            order_id=order_id,
            customer_id=p.subject,
            restaurant_id=req.restaurant_id,
            restaurant_name=r.name,
            restaurant_lat=r.address.lat,
            restaurant_lon=r.address.lon,
            driver_id="",
            status=Status.PLACED,
            delivery_address=convert.address_json(req.delivery_address),
            delivery_option=int(req.delivery_option) or order_pb2.DELIVERY_OPTION_STANDARD,
            scheduled_time=req.scheduled_time.ToDatetime(dt.UTC) if scheduled else None,
            currency=cart.currency,
            subtotal_minor=quote.subtotal_minor,
            delivery_fee_minor=quote.delivery_fee_minor,
            service_fee_minor=quote.service_fee_minor,
            small_order_fee_minor=quote.small_order_fee_minor,
            tax_minor=quote.tax_minor,
            discount_minor=quote.discount_minor,
            tip_minor=cart.tip_minor,
            total_minor=total,
            surge_multiplier=quote.surge_multiplier,
            quote_id=quote.quote_id,
            promo_code=req.promo_code,
            payment_provider=self.ports.payments.name,
            payment_id=auth.payment_id,
            payment_status="authorized",
            refunded_minor=0,
            payment_pending=None,
            estimated_delivery_time=promise.arrival,
            promised_delivery_time=promise.arrival,
            eta_confidence=promise.confidence,
            ready_time=promise.ready,
            release_at=promise.release_at,
            released=promise.release_at is None,
            cancellation_reason="",
            last_seq=1,
            created_at=now,
            updated_at=now,
            items=cart.lines,
            timeline=(Entry(1, Status.PLACED, now, p.subject),),
            delivery_pin=_new_pin(),
            leave_at_door=req.leave_at_door,
            payment_method=method,
            payment_method_name=(
                display_name(auth.kind, auth.brand, auth.last4, auth.wallet) if auth.brand else ""
            ),
            eta_drivers_nearby=c.drivers_nearby,
            eta_weather=c.weather,
            eta_event_multiplier=c.event_multiplier,
        )

    async def confirm_plan(self, venue: Venue, promise: Promise, now: dt.datetime) -> ConfirmPlan:
        """Who confirms the order and by when (the restaurant's settings, cached briefly)."""
        rid = venue.restaurant.restaurant_id
        settings = (await self.confirm_settings(rid) if self.confirm_settings is not None
                    else ConfirmSettings(rid))  # fmt: skip
        return plan_confirm(settings, now=now, time_zone=venue.restaurant.time_zone,
                            release_at=promise.release_at,
                            default_timeout_s=self.confirm_timeout_s)  # fmt: skip

    async def commit(
        self, order: Order, req: order_pb2.PlaceOrderRequest, confirm: ConfirmPlan
    ) -> tuple[Order, bool]:
        """Writes the order with its event; (the order, False) if a twin attempt wrote it."""
        first = order.timeline[0]
        snapshot = convert.order_to_pb(order)
        event = self.event(order, first, "" if order.released else "scheduled", snapshot)
        try:
            await self.store.insert_order(order, event, idempotency_key=req.idempotency_key,
                                          confirm=confirm)  # fmt: skip
        except BaseException as exc:
            # The hold stays: whether or not the insert committed, the retry of this request
            # uses it (same authorization key), so voiding it here could only void the
            # hold of an order that exists after all.
            if not isinstance(exc, Exception):  # cancelled (shutdown): nothing more to ask
                raise
            try:
                if await self.store.exists(order.order_id):  # a twin attempt (takeover) won
                    done = await self.store.get(order.order_id)
                    if done is not None:
                        return done, False
            except Exception:
                pass
            _log.warning("order %s not confirmed written: %s", order.order_id, exc)
            raise MaybeLeftBehind(Unavailable(
                "the order could not be confirmed written: retry with the same idempotency_key",
                reason="ORDER_NOT_CONFIRMED",
            )) from exc  # fmt: skip
        return order, True
