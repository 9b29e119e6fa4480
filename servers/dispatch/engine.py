"""The live dispatcher: batches per led region, offer expiry, events in, calls out.

Background loops (each one task, stopped with ``stop_tasks``):

- **lead**: every ``batch_interval_s`` (2 s) claim the lease of every region with
  orders waiting, and for the regions led run one planning round: available drivers
  from Location's ``FindNearbyDrivers`` around each restaurant, profiles and the
  trips under way from the store, ``trips.plan_trips`` (the planner replay runs,
  fed by ``live.live_state``) in a worker thread; the plans due now are offered one
  by one (each may lose a race; then it is simply not made) and pushed to the
  drivers, the others held until their release;
- **expire**: offers past their 20 s lapse and the order returns to the pool;
- **order calls**: tell the Order service who carries an order (AssignDriver),
  from the ``order_calls`` queue committed with each change, retried until done;
- **orders in**: a durable JetStream consumer of ``orders.v1.>`` puts confirmed
  orders in the pool and ends cancelled ones (deduplicated by event id);
- **presence in**: a durable consumer of ``location.v1.presence``: a driver who
  went offline before pickup loses the order to the front of the pool.

NATS, Redis or PostgreSQL away: each loop logs, waits and tries again; nothing
is committed half-way, so matching pauses and resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from foodmesh.core.events import (
    DRIVER_PRESENCE,
    EVENT_LOST_REASSIGNED,
    LOCATION,
    ORDER_EVENTS,
    ORDERS,
)
from foodmesh.core.geo import geohash_encode
from foodmesh.core.nats import Subjects, ensure_stream
from foodmesh.core.settings import env_float, env_int
from foodmesh.core.telemetry import consumer_span
from foodmesh.v1 import (
    common_pb2,
    dispatch_pb2,
    location_pb2,
    order_pb2,
)
from servers.dispatch import convert
from servers.dispatch.demand import Forecasts
from servers.dispatch.escalation import Escalation
from servers.dispatch.live import LiveState, live_state, paced, proposal_of
from servers.dispatch.matching import Candidate, MatchConfig, PendingOrder, Proposal
from servers.dispatch.model import Assignment, OfferRow
from servers.dispatch.offers import OfferRules
from servers.dispatch.roadtimes import RoadTimes, RoadTimesConfig, TravelPort
from servers.dispatch.scoring import DETOUR, SPEED_MPS
from servers.dispatch.sessions import SessionHub
from servers.dispatch.store import Fleet, NewOrder
from servers.dispatch.trips import TravelRule, TripConfig, TripPlan, TripRound, plan_trips
from servers.runtime.retry import retry

__all__ = ["Engine", "EngineConfig", "LocationPort", "OrderPort", "TravelPort", "plan_off_loop"]


async def plan_off_loop(
    state: LiveState,
    *,
    now: float,
    interval_s: float,
    travel: TravelRule,
    config: TripConfig,
    to_pickup_s: Mapping[tuple[str, str], float] | None = None,
) -> TripRound:
    """``trips.plan_trips`` in a worker thread, away from the event loop.

    numpy and scipy release the GIL for most of it (``assignment.solve``).
    ``to_pickup_s``: ETA's road times of driver→restaurant pairs (``roadtimes``).
    """
    call = functools.partial(
        plan_trips, state.orders, state.drivers, now=now, interval_s=interval_s, travel=travel,
        config=config, open_trips=state.open_trips, to_pickup_s=to_pickup_s,
    )  # fmt: skip
    return await asyncio.to_thread(call)


_log = logging.getLogger("foodmesh.dispatch")
DS = common_pb2.DriverStatus


class LocationPort(Protocol):
    async def find_nearby_drivers(
        self, request: location_pb2.FindNearbyDriversRequest, *, deadline_s: float | None = ...
    ) -> location_pb2.FindNearbyDriversResponse: ...

    async def set_driver_status(
        self, request: location_pb2.SetDriverStatusRequest, *, deadline_s: float | None = ...
    ) -> location_pb2.SetDriverStatusResponse: ...


class OrderPort(Protocol):
    async def assign_driver(
        self, request: order_pb2.AssignDriverRequest, *, deadline_s: float | None = ...
    ) -> order_pb2.AssignDriverResponse: ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    match: MatchConfig = field(default_factory=MatchConfig)
    rules: OfferRules = field(default_factory=OfferRules)
    batch_interval_s: float = 2.0
    lease_s: float = 6.0
    region_precision: int = 4
    expire_every_s: float = 0.5
    candidates_per_order: int = 100
    #: Kitchen-timed offers: an order is offered only once its best driver must set off to
    #: be at the restaurant this many seconds before the food is ready (the prep
    #: estimate); None offers every order as soon as it is matched.
    release_margin_s: float | None = None
    #: ... plus this share of the order's prep estimate (its uncertainty grows with it).
    release_spread: float = 0.0
    #: K: orders a driver carries at once (stacked orders of one restaurant); 1: none.
    max_orders: int = 1
    #: Straight-line speed the planner assumes (a car's street speed over the detour).
    speed_mps: float = SPEED_MPS[0] / DETOUR
    #: The planner's other knobs (K and the release come from the fields above).
    trips: TripConfig = field(default_factory=lambda: TripConfig(max_orders=1, cover_s=0.0))
    #: ETA's driver→restaurant road times in the planner (when ETA is wired); off: the
    #: straight line at ``speed_mps`` alone.
    road_times: bool = True
    road: RoadTimesConfig = field(default_factory=RoadTimesConfig)

    def trip_config(self) -> TripConfig:
        """The planner's config: K, and the kitchen's release (None: every order at once)."""
        return replace(
            self.trips,
            max_orders=self.max_orders,
            release_at_once=self.release_margin_s is None,
            release_margin_s=self.release_margin_s or 0.0,
            release_spread=self.release_spread,
            cover_s=0.0,
            # Live, the order's search radius bounds the drive to the restaurant.
            max_to_pickup_s=math.inf,
        )

    def travel(self) -> TravelRule:
        return TravelRule(speed_mps=self.speed_mps)

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> EngineConfig:
        p = "FOODMESH_DISPATCH_"
        match = MatchConfig(
            radius_miles=env_float(extra, p + "RADIUS_MILES", 5.0, lo=0.1),
            wide_radius_miles=env_float(extra, p + "WIDE_RADIUS_MILES", 10.0, lo=0.1),
            escalated_radius_miles=env_float(extra, p + "ESCALATED_RADIUS_MILES", 15.0, lo=0.1),
        )
        rules = OfferRules(
            expiry_s=env_float(extra, p + "OFFER_EXPIRY_S", 20.0, lo=0.1),
            max_attempts=env_int(extra, p + "MAX_ATTEMPTS", 3, lo=1, hi=100),
        )
        return cls(
            match=match,
            rules=rules,
            batch_interval_s=env_float(extra, p + "BATCH_INTERVAL_S", 2.0, lo=0.01),
            lease_s=env_float(extra, p + "LEASE_S", 6.0, lo=0.5),
            region_precision=env_int(extra, p + "REGION_PRECISION", 4, lo=1, hi=8),
            expire_every_s=env_float(extra, p + "EXPIRE_EVERY_S", 0.5, lo=0.01),
            max_orders=env_int(extra, p + "MAX_ORDERS", 1, lo=1, hi=10),
            speed_mps=env_float(extra, p + "SPEED_MPS", SPEED_MPS[0] / DETOUR, lo=0.5),
            trips=TripConfig(
                max_orders=1,
                cover_s=0.0,
                pickup_service_s=env_float(extra, p + "PICKUP_SERVICE_S", 120.0, lo=0.0),
                dropoff_service_s=env_float(extra, p + "DROPOFF_SERVICE_S", 120.0, lo=0.0),
                promise_s=env_float(extra, p + "PROMISE_S", 2400.0, lo=60.0),
            ),
            road_times=extra.get(p + "ROAD_TIMES", "1").strip().lower() not in ("0", "false", "no"),
            road=RoadTimesConfig(
                deadline_s=env_float(extra, p + "ETA_DEADLINE_S", 1.0, lo=0.05),
                cache_s=env_float(extra, p + "ROAD_TIMES_CACHE_S", 30.0, lo=0.0),
            ),
            release_margin_s=(
                env_float(extra, p + "KITCHEN_RELEASE_S", 120.0, lo=0.0)
                if extra.get(p + "KITCHEN_RELEASE_S", "").strip()
                else None
            ),
            release_spread=env_float(extra, p + "KITCHEN_RELEASE_SPREAD", 0.0, lo=0.0, finite=True),
        )


def pending_of(a: Assignment) -> PendingOrder:
    return PendingOrder(
        order_id=a.order_id,
        pickup_lat=a.pickup_lat,
        pickup_lon=a.pickup_lon,
        dropoff_lat=a.dropoff_lat,
        dropoff_lon=a.dropoff_lon,
        ready_at=a.ready_at.timestamp(),
        radius_miles=a.radius_miles,
        excluded=frozenset(a.excluded),
        front=a.front or a.status.value == "escalated",
    )


@dataclass(slots=True)
class BatchReport:
    regions: int = 0
    pending: int = 0
    drivers: int = 0
    offers: int = 0
    decide_s: float = 0.0
    #: Matched but held until the kitchen's time.
    held: int = 0


class Engine:
    """Matching and everything around it, for the regions this replica leads."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        hub: SessionHub,
        location: LocationPort,
        orders: OrderPort,
        travel: TravelPort | None,
        leases: Any,
        js: Callable[[], JetStreamContext],
        subjects: Subjects,
        config: EngineConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.hub = hub
        self.location = location
        self.orders = orders
        self.travel = travel
        #: ETA's road times to the restaurants, per round (``roadtimes``).
        self.road_times = RoadTimes(travel if config.road_times else None, config=config.road)
        self.leases = leases
        self._js = js
        self.subjects = subjects
        self.config = config
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._calls_wake = asyncio.Event()
        self._calls_lock = asyncio.Lock()
        self.batches = 0
        self.offers_made = 0
        #: No driver found / driver lost after pickup (``escalation.py``), when wired.
        self.escalation: Escalation | None = None
        #: The opportunity term's demand (Pricing's ForecastDemand when wired).
        self.forecasts = Forecasts(None)
        self._k_set = False
        #: The last round's inputs and plans (``live_state``, ``plan_trips``).
        self.last_round: tuple[LiveState, TripRound] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        loops = {
            "lead": self._lead_loop,
            "leases": self._lease_loop,
            "expire": self._expire_loop,
            "order-calls": self._calls_loop,
            "orders-in": self._orders_loop,
            "presence-in": self._presence_loop,
            "hub": self._hub_loop,
        }
        if self.escalation is not None:
            loops["escalation"] = self.escalation.run
        self._tasks = [asyncio.create_task(f(), name=f"dispatch-{n}") for n, f in loops.items()]

    async def stop(self) -> None:
        from foodmesh.core.tasks import stop_tasks

        await stop_tasks(self._tasks)
        self._tasks = []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.leases.release_all()

    async def _forever(self, name: str, every_s: float, once: Callable[[], Any]) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dependency away: try again, quietly after the first
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("dispatch %s failed (%d in a row): %s", name, failures, exc)
            wait = every_s - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, wait) + min(2.0, 0.05 * failures))

    async def _hub_loop(self) -> None:
        await retry("driver session hub", self.hub.listen, first_s=0.2, max_s=1.0, quiet_s=5.0,
                    log=_log)  # fmt: skip

    # -- matching ------------------------------------------------------------------

    async def _lead_loop(self) -> None:
        await self._forever("batch", self.config.batch_interval_s, self.lead_once)

    async def _lease_loop(self) -> None:
        # Renewal runs on its own beat (a third of the lease), whatever the batch interval.
        await self._forever("lease renewal", self.config.lease_s / 3, self.renew_leases)

    async def renew_leases(self) -> None:
        for r in sorted(self.leases.held):
            await self.leases.claim(r)

    async def lead_once(self) -> BatchReport:
        regions = await self.fleet.assignments.regions_with_work()
        led: list[str] = [r for r in regions if r in self.leases.held]
        for r in sorted(set(regions) - self.leases.held):
            if await self.leases.claim(r):
                led.append(r)
        if not led:
            return BatchReport()
        return await self.match_regions(led)

    async def candidates(
        self, orders: Sequence[PendingOrder]
    ) -> tuple[list[Candidate], dict[str, tuple[float, float]]]:
        """Available drivers around the orders' restaurants (Location), with their profiles."""
        sem = asyncio.Semaphore(16)
        cfg = self.config.match

        async def around(o: PendingOrder) -> location_pb2.FindNearbyDriversResponse:
            async with sem:
                return await self.location.find_nearby_drivers(
                    location_pb2.FindNearbyDriversRequest(
                        center=common_pb2.LatLng(lat=o.pickup_lat, lon=o.pickup_lon),
                        radius_miles=max(o.radius_miles, cfg.wide_radius_miles),
                        statuses=[DS.DRIVER_STATUS_AVAILABLE],
                        limit=self.config.candidates_per_order,
                    ),
                    deadline_s=2.0,
                )

        found = await asyncio.gather(*(around(o) for o in orders), return_exceptions=True)
        failed = [r for r in found if isinstance(r, BaseException)]
        if failed and len(failed) == len(found):
            raise failed[0]
        if failed:
            _log.warning(
                "%d of %d candidate searches failed: %s", len(failed), len(found), failed[0]
            )
        where: dict[str, tuple[float, float]] = {}
        for resp in found:
            if isinstance(resp, BaseException):
                continue
            for nd in resp.drivers:
                where[nd.position.driver_id] = (nd.position.lat, nd.position.lon)
        profiles = await self.fleet.drivers.available(where)
        out = [
            Candidate(
                driver_id=d.driver_id,
                lat=where[d.driver_id][0],
                lon=where[d.driver_id][1],
                vehicle_type=d.vehicle_type,
                rating=d.rating,
                deliveries=d.completed,
                acceptance=d.acceptance,
            )
            for d in profiles.values()
        ]
        out.sort(key=lambda c: c.driver_id)
        return out, where

    async def plan(
        self,
        pool: Sequence[Assignment],
        drivers: Sequence[Candidate],
        on_trips: Sequence[Assignment],
        *,
        now: float,
        config: TripConfig,
        demand: Mapping[str, float] | None = None,
    ) -> tuple[LiveState, TripRound]:
        """The planner's round on the live state, timed by ETA: each driver's road time to
        the restaurant and their vehicle's pace to the doors (``roadtimes``)."""
        travel = self.config.travel()
        busy = {a.driver_id for a in on_trips if a.driver_id} - {c.driver_id for c in drivers}
        state = live_state(pool, drivers, on_trips, now=now, config=config,
                           expiry_s=self.config.rules.expiry_s, demand=demand,
                           vehicles=await self.fleet.drivers.vehicles(busy))  # fmt: skip
        # Side by side: a slow ETA holds the round for one deadline, not two.
        paces, road = await asyncio.gather(
            self.road_times.paces(state.orders, state.drivers, travel),
            self.road_times.pickup_times(state.orders, state.drivers),
        )
        state = paced(state, paces)
        rnd = await plan_off_loop(state, now=now, interval_s=self.config.batch_interval_s,
                                  travel=travel, config=config, to_pickup_s=road)  # fmt: skip
        return state, rnd

    async def demand(self, pending: Sequence[PendingOrder]) -> dict[str, float]:
        """Orders expected around each dropoff: Pricing's forecast, else the pool itself."""
        return await self.forecasts.demand(pending)

    async def match_regions(self, regions: Sequence[str]) -> BatchReport:
        """One planning round (``trips.plan_trips``) over the regions led, and its offers."""
        if not self._k_set:
            await self.fleet.assignments.set_max_orders(self.config.max_orders)
            self._k_set = True
        pool = await self.fleet.assignments.pool_of(regions)
        report = BatchReport(regions=len(regions), pending=len(pool))
        if not pool:
            return report
        pending = [pending_of(a) for a in pool]
        drivers, where = await self.candidates(pending)
        on_trips = await self.fleet.assignments.on_trips(regions)
        now = self.clock()
        cfg = self.config.trip_config()
        state, rnd = await self.plan(pool, drivers, on_trips, now=now, config=cfg,
                                     demand=await self.demand(pending))  # fmt: skip
        report.drivers = len(state.drivers)
        self.last_round = (state, rnd)
        report.decide_s = rnd.decide_s
        due = [p for p in rnd.plans if p.commit]
        # Held for the kitchen (or for a driver about to be free, or to accept): planned
        # again next round; until its release it waits for nobody (escalation).
        held = {
            oid: max(p.why.release_at, now + self.config.batch_interval_s)
            for p in rnd.plans if not p.commit for oid in p.new_order_ids
        }  # fmt: skip
        # Food ready beyond the planner's horizon: planned once it is within it.
        seen = {oid for p in rnd.plans for oid in p.order_ids} | set(rnd.waiting)
        later = {o.order_id: o.ready_at - cfg.horizon_s for o in state.orders
                 if o.order_id not in seen}  # fmt: skip
        await self.fleet.assignments.hold(held | later, now=now)
        report.held = sum(len(p.new_order_ids) for p in rnd.plans if not p.commit)
        made = await asyncio.gather(*(self.offer_plan(p, now=now, where=where) for p in due))
        report.offers = sum(1 for m in made if m)
        await self.fleet.assignments.widen(rnd.waiting, self.config.match.wide_radius_miles)
        self.batches += 1
        self.offers_made += report.offers
        if report.offers or rnd.waiting:
            _log.info(
                "round: %d regions, %d pending, %d drivers, %d offers, %d held, %d waiting,"
                " %.1f ms",
                len(regions),
                len(pool),
                len(state.drivers),
                report.offers,
                report.held,
                len(rnd.waiting),
                rnd.decide_s * 1000,
            )
        return report

    async def offer_plan(
        self, plan: TripPlan, *, now: float, where: Mapping[str, tuple[float, float]]
    ) -> bool:
        """The plan's first new order offered (the others join the trip next rounds)."""
        p = proposal_of(plan, plan.new_order_ids[0], now=now, config=self.config.trip_config(),
                        driver_at=where.get(plan.driver_id))  # fmt: skip
        return await self.offer(p, stack=bool(plan.joins))

    async def offer(self, p: Proposal, *, stack: bool = False) -> bool:
        made = await self.fleet.offers.make(
            p, offer_id="of_" + uuid.uuid4().hex[:20], now=self.clock(), rules=self.config.rules,
            stack=stack,
        )  # fmt: skip
        if made is None:
            return False
        a, o = made
        await self.hub.push(
            p.driver_id, dispatch_pb2.DriverSessionResponse(offer=convert.offer_to_pb(o, a))
        )
        if not stack:  # on a trip, the driver stays on_delivery for Location
            await self.tell_location(p.driver_id, DS.DRIVER_STATUS_OFFERED)
        return True

    async def tell_location(
        self,
        driver_id: str,
        status: int,
        *,
        order_id: str = "",
        stop: tuple[float, float] | None = None,
    ) -> None:
        """Best effort: Location's index filters by this status (its own copy)."""
        req = location_pb2.SetDriverStatusRequest(
            driver_id=driver_id,
            status=status,  # type: ignore[arg-type]
            order_id=order_id,
        )
        if stop is not None:
            req.next_stop.lat, req.next_stop.lon = stop
        try:
            await self.location.set_driver_status(req, deadline_s=1.0)
        except Exception as exc:
            _log.debug("Location did not take driver %s's status: %s", driver_id, exc)

    # -- offers lapse --------------------------------------------------------------

    async def _expire_loop(self) -> None:
        await self._forever("expiry", self.config.expire_every_s, self.expire_once)

    async def expire_once(self) -> int:
        m = self.config.match
        lapsed = await self.fleet.offers.expire_due(
            now=self.clock(),
            rules=self.config.rules,
            wide=m.wide_radius_miles,
            escalated_radius=m.escalated_radius_miles,
        )
        for _a, o in lapsed:
            await self.withdrawn(o, "expired: no answer within the offer's time")
        return len(lapsed)

    async def withdrawn(self, o: OfferRow, reason: str) -> None:
        await self.hub.push(
            o.driver_id,
            dispatch_pb2.DriverSessionResponse(
                offer_withdrawn=dispatch_pb2.OfferWithdrawn(offer_id=o.offer_id, reason=reason)
            ),
        )
        await self.tell_location(o.driver_id, DS.DRIVER_STATUS_AVAILABLE)

    # -- the Order service ---------------------------------------------------------

    def poke_calls(self) -> None:
        self._calls_wake.set()

    async def _calls_loop(self) -> None:
        while True:
            self._calls_wake.clear()
            try:
                n = await self.calls_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("order calls pass failed: %s", exc)
                n = 0
            if n == 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._calls_wake.wait()

    async def calls_once(self, order_id: str | None = None) -> int:
        """Sends the calls owed to the Order service; returns how many went through."""
        async with self._calls_lock:
            done = 0
            for call in await self.fleet.calls.due():
                if order_id is not None and call.order_id != order_id:
                    continue
                req = order_pb2.AssignDriverRequest(
                    order_id=call.order_id, driver_id=call.driver_id, reason=call.reason
                )
                if call.est_delivery_at is not None:
                    req.estimated_delivery_time.FromDatetime(call.est_delivery_at)
                try:
                    await self.orders.assign_driver(req, deadline_s=2.0)
                except Exception as exc:
                    code = getattr(exc, "code", lambda: None)()
                    if code is not None and code.name in (
                        "FAILED_PRECONDITION",
                        "NOT_FOUND",
                        "INVALID_ARGUMENT",
                    ):
                        # The order ended (cancelled, delivered): nothing left to tell.
                        await self.fleet.calls.done(call.id)
                        continue
                    await self.fleet.calls.done(call.id, error=str(exc))
                    continue
                await self.fleet.calls.done(call.id)
                done += 1
            return done

    # -- events in -----------------------------------------------------------------

    async def _consume(
        self,
        stream: str,
        subject: str,
        durable: str,
        handle: Callable[[Any], Any],
        create: StreamConfig | None,
    ) -> None:

        async def subscribe() -> JetStreamContext.PullSubscription:
            js = self._js()
            if create is not None:
                await ensure_stream(js, create)
            return await js.pull_subscribe(
                subject,
                durable=durable,
                stream=stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=30,
                    max_ack_pending=1000,
                ),
            )

        sub = await retry(f"consumer {durable}", subscribe, first_s=0.3, max_s=1.0, quiet_s=5.0,
                          log=_log)  # fmt: skip
        try:
            while True:
                try:
                    msgs = await sub.fetch(100, timeout=1.0)
                except asyncio.CancelledError:
                    raise
                except Exception:  # nothing to fetch (timeout), or NATS away
                    await asyncio.sleep(0.01)
                    continue
                for msg in msgs:
                    try:
                        # The handling continues the trace of whoever published the event.
                        with consumer_span(f"{durable} process", msg.headers, subject=msg.subject):
                            await handle(msg)
                        await msg.ack()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # redelivered after ack_wait
                        _log.warning("consumer %s: event not handled yet: %s", durable, exc)
                        with contextlib.suppress(Exception):
                            await msg.nak(delay=1.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _orders_loop(self) -> None:
        await self._consume(
            self.subjects.stream(ORDERS.name),
            self.subjects.subject(ORDER_EVENTS.all),
            "dispatch-orders",
            self._on_order,
            ORDERS.config(self.subjects),
        )

    async def _on_order(self, msg: Any) -> None:
        kind = msg.subject.rsplit(".", 1)[-1]
        if self.escalation is not None and kind == EVENT_LOST_REASSIGNED:
            await self.escalation.on_order(kind, ORDER_EVENTS.decode(msg.data).order)
            return
        if kind not in ("confirmed", "cancelled", "ready_for_pickup"):
            return
        ev = ORDER_EVENTS.decode(msg.data)
        o = ev.order
        now = self.clock()
        if kind == "ready_for_pickup":  # the driver's wait for the food ends here
            marks = [e.timestamp.ToNanoseconds() / 1e9 for e in o.timeline
                     if e.status == common_pb2.ORDER_STATUS_READY_FOR_PICKUP]  # fmt: skip
            await self.fleet.assignments.food_ready(o.order_id, at=marks[-1] if marks else now)
            return
        if kind == "confirmed":
            new = order_to_new(o, precision=self.config.region_precision, now=now)
            await self.fleet.assignments.add_order(
                new, now=now, consumer="dispatch-orders", event_id=ev.event_id
            )
            return
        before, offer = await self.fleet.assignments.cancel_order(
            o.order_id,
            now=now,
            reason=o.cancellation_reason,
            consumer="dispatch-orders",
            event_id=ev.event_id,
        )
        if offer is not None:
            await self.withdrawn(offer, "the order was cancelled")
        elif (
            before is not None
            and before.driver_id
            and before.status.value
            in (
                "assigned",
                "at_restaurant",
                "picked_up",
                "at_customer",
            )
        ):
            await self.hub.push(
                before.driver_id,
                dispatch_pb2.DriverSessionResponse(
                    order_cancelled=dispatch_pb2.OrderCancelled(
                        order_id=o.order_id, reason=o.cancellation_reason or "cancelled"
                    )
                ),
            )
            await self.tell_location(before.driver_id, DS.DRIVER_STATUS_AVAILABLE)

    async def _presence_loop(self) -> None:
        await self._consume(
            self.subjects.stream(LOCATION.name),
            self.subjects.subject(DRIVER_PRESENCE.name),
            "dispatch-presence",
            self._on_presence,
            None,
        )

    async def _on_presence(self, msg: Any) -> None:
        ev = DRIVER_PRESENCE.decode(msg.data)
        if self.escalation is not None:
            await self.escalation.on_presence(ev)  # a delivery after pickup: flagged
        if ev.online:
            return
        await self.driver_lost(ev.driver_id, "the driver went offline (no location for a while)")

    async def driver_lost(self, driver_id: str, reason: str) -> Assignment | None:
        """Offline before pickup: the order goes back to the front of the pool."""
        m = self.config.match
        now = self.clock()
        # An offer the driver holds lapses at once rather than in 20 s.
        d, offer, _ = await self.fleet.sessions.state(driver_id)
        if offer is not None:
            with contextlib.suppress(Exception):
                await self.fleet.offers.reject(
                    offer.offer_id,
                    driver_id,
                    reason,
                    now=now,
                    rules=self.config.rules,
                    wide=m.wide_radius_miles,
                    escalated_radius=m.escalated_radius_miles,
                )
        a = await self.fleet.assignments.lose_driver(driver_id, reason, now=now)
        if a is not None:
            _log.info("order %s back in the pool: %s (%s)", a.order_id, reason, driver_id)
            self.poke_calls()
        if d is not None and d.session_id:
            await self.hub.push(
                driver_id,
                dispatch_pb2.DriverSessionResponse(
                    state=dispatch_pb2.SessionState(status=DS.DRIVER_STATUS_OFFLINE)
                ),
            )
        return a


def order_to_new(o: order_pb2.Order, *, precision: int, now: float) -> NewOrder:
    rl = o.restaurant_location
    addr = o.delivery_address
    ready = o.ready_time.ToNanoseconds() / 1e9 if o.HasField("ready_time") else now + 15 * 60
    return NewOrder(
        order_id=o.order_id,
        region=geohash_encode(rl.lat, rl.lon, precision),
        pickup_lat=rl.lat,
        pickup_lon=rl.lon,
        pickup_label=o.restaurant_name,
        dropoff_lat=addr.lat,
        dropoff_lon=addr.lon,
        dropoff_label=addr.street,
        ready_at=ready,
        tip_minor=o.pricing.tip.amount_minor if o.HasField("pricing") else 0,
        currency=o.pricing.total.currency_code or "USD" if o.HasField("pricing") else "USD",
    )
