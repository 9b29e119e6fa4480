"""Simulated drivers: agents on gRPC streams, as the drivers' app is.

A driver on shift keeps two streams open with their own bearer token (role
``driver``, subject the driver's id): Location's ``StreamLocations`` with a fix
every 5 s while moving (slower when parked, as the server's acks ask), and
Dispatch's ``DriverSession``: go available, weigh each offer (accepted with a
probability from the driver's own base rate, the distance and the pay, after a
few seconds' thought, sometimes left to lapse), drive to the restaurant, arrive,
pick up once the food is ready, drive to the customer, arrive, deliver with a
photo. Some go silent for a while mid-delivery (the platform must notice and may
reassign); a bad actor's app sends malformed fixes and garbage actions, which
must come back refused, never crash anything.

:class:`DriverAgent` runs the shifts and deliveries and composes the rest, one
module per concern: ``driver_session`` (the two streams' protocols),
``driver_motion`` (movement along the road graph, :class:`Router`),
``driver_behaviour`` (shifts, accepting or declining, going silent) and
``driver_mischief`` (the deliberate misbehaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from clients import ClientOptions, DispatchClient, LocationClient
from foodmesh.core.geo import haversine_m
from foodmesh.core.tasks import stop_tasks
from foodmesh.sim import world
from foodmesh.sim.agents import SimConfig, Stats, Tokens
from foodmesh.sim.city import CENTER, DriverSpec
from foodmesh.sim.demand import distance_m
from foodmesh.sim.driver_behaviour import Behaviour, acceptance_probability, shift_windows
from foodmesh.sim.driver_mischief import Mischief
from foodmesh.sim.driver_motion import LatLon, Leg, Motion, Router, traffic_multiplier
from foodmesh.sim.driver_session import LocationFeed, Session, SessionLost
from foodmesh.sim.trace import TraceRecorder
from foodmesh.v1 import common_pb2, dispatch_pb2

__all__ = [
    "DriverAgent",
    "Fleet",
    "Leg",
    "Router",
    "acceptance_probability",
    "shift_windows",
    "traffic_multiplier",
]

AS = dispatch_pb2.AssignmentStatus
#: How long a (re)opened session waits for its first state before trying again.
_FIRST_STATE_S = 30.0
_ACTIVE = (AS.ASSIGNMENT_STATUS_ASSIGNED, AS.ASSIGNMENT_STATUS_AT_RESTAURANT,
           AS.ASSIGNMENT_STATUS_PICKED_UP, AS.ASSIGNMENT_STATUS_AT_CUSTOMER)  # fmt: skip


class _OrderGone(Exception):
    """The order carried was cancelled or taken away."""


class _Resync(SessionLost):
    """Dispatch says we hold a delivery we are not working on: open the session again."""


async def _no_pin(order_id: str, driver_id: str) -> str:
    return ""


class Fleet:
    """Every driver agent, the channels they share, and the shared settings."""

    def __init__(
        self,
        *,
        drivers: Sequence[DriverSpec],
        config: SimConfig,
        stats: Stats,
        tokens: Tokens,
        router: Router,
        recorder: TraceRecorder | None,
        clock: Callable[[], float],
        start: dt.datetime,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.stats = stats
        self.tokens = tokens
        self.router = router
        self.recorder = recorder
        self.clock = clock
        self.start = start
        self.stopping = False
        self._background: set[asyncio.Task[None]] = set()
        #: The food of an order is on the counter (set by the simulated kitchens).
        self.food_ready: Callable[[str], asyncio.Event | None] = lambda order_id: None
        #: The delivery PIN the order's customer tells at the door ('' if left at the door).
        self.pin_of: Callable[[str, str], Awaitable[str]] = _no_pin
        horizon = config.duration_s if config.duration_s > 0 else 7 * 86400.0
        self.horizon_s = horizon
        # 2,000 drivers logging on in the same 30 s would be a thundering herd no city sees
        self.ramp_s = max(config.ramp_s, len(drivers) / 20.0)
        options = ClientOptions(tracing=False, stream_deadline_s=horizon + 600, deadline_s=10.0)
        # HTTP/2 servers cap concurrent streams per connection (often at 100): beyond it
        # a new stream waits for a free slot, so a channel carries at most 90 drivers.
        n = max(1, math.ceil(len(drivers) / 90))
        self.locations = [LocationClient(config.location_target, options=options)
                          for _ in range(n)]  # fmt: skip
        self.dispatches = (
            [DispatchClient(config.dispatch_target, options=options) for _ in range(n)]
            if config.dispatch_target
            else []
        )
        self.agents = [
            DriverAgent(spec, fleet=self, index=i, rng=random.Random(f"{config.seed}:drv:{i}"),
                        bad=rng.random() < config.bad_share,
                        silent=rng.random() < config.silent_share)
            for i, spec in enumerate(drivers)
        ]  # fmt: skip

    def detach(self, task: asyncio.Task[None] | None) -> None:
        """Keeps a finishing stream reader alive until it ends (or the fleet closes)."""
        if task is None:
            return
        if task.done():
            self._reaped(task)
        else:
            self._background.add(task)
            task.add_done_callback(self._reaped)

    def _reaped(self, task: asyncio.Task[None]) -> None:
        # A reader ends with its stream's error (a reset, a cancel): the stream's owner has
        # dealt with it; reading it here keeps asyncio from logging it as never retrieved.
        self._background.discard(task)
        if not task.cancelled():
            task.exception()

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.clock())

    async def leave(self) -> None:
        """Every driver on shift goes offline politely, within a few seconds."""
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.gather(*(a.leave() for a in self.agents), return_exceptions=True)

    async def close(self) -> None:
        await stop_tasks(list(self._background), timeout_s=5.0)
        for c in (*self.locations, *self.dispatches):
            await c.close()


class DriverAgent:
    """One driver: shifts, two streams, offers, deliveries, and sometimes silence or mischief."""

    def __init__(
        self,
        spec: DriverSpec,
        *,
        fleet: Fleet,
        index: int,
        rng: random.Random,
        bad: bool = False,
        silent: bool = False,
    ) -> None:
        self.spec = spec
        self.fleet = fleet
        self.rng = rng
        self.bad = bad
        self.silent = silent
        self.id = spec.driver_id
        self.dispatch = (
            fleet.dispatches[index % len(fleet.dispatches)] if fleet.dispatches else None
        )
        pace = world.driver_pace(spec.driver_id, seed=fleet.config.seed)
        self.motion = Motion(fleet.router, home=spec.home, vehicle=spec.driver.vehicle_type,
                             now=fleet.now, rng=rng, pace=pace)  # fmt: skip
        self.behaviour = Behaviour(spec, rng, silent=silent)
        self.mischief = Mischief(rng, fleet.stats, bad=bad)
        self.feed = LocationFeed(
            fleet.locations[index % len(fleet.locations)], motion=self.motion,
            mischief=self.mischief, stats=fleet.stats, rng=rng, metadata=self._metadata,
            timeout_s=fleet.horizon_s + 600, detach=fleet.detach,
        )  # fmt: skip
        self._session: Session | None = None
        self._status: int = common_pb2.DRIVER_STATUS_OFFLINE
        self._busy = False
        self.order_id = ""
        #: Orders stacked onto the trip under way (same restaurant, not picked up yet).
        self._stacked: list[dispatch_pb2.Assignment] = []
        self._pickup: LatLon | None = None

    @property
    def pos(self) -> LatLon:
        return self.motion.pos

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", self.fleet.tokens.header("driver", self.id)),)

    def _on_status(self, status: int) -> None:
        self._status = status

    # ------------------------------------------------------------ the work session

    def _open_session(self) -> Session:
        assert self.dispatch is not None
        s = Session.open(self.dispatch, metadata=self._metadata,
                         timeout_s=self.fleet.horizon_s + 600, stats=self.fleet.stats,
                         on_status=self._on_status)  # fmt: skip
        self._session = s
        return s

    async def _close_session(self, *, polite: bool) -> None:
        s, self._session = self._session, None
        if s is not None:
            await s.close(polite=polite, detach=self.fleet.detach)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Works every shift of the run, then ends."""
        fleet = self.fleet
        windows = shift_windows(self.spec, start=fleet.start, horizon_s=fleet.horizon_s,
                                shifts=fleet.config.shifts, ramp_s=fleet.ramp_s,
                                rng=self.rng,
                                always_on_share=fleet.config.always_on_share)  # fmt: skip
        for on_s, off_s in windows:
            await asyncio.sleep(max(0.0, on_s - fleet.clock()))
            if fleet.stopping:
                return
            await self._shift(off_s)

    async def _shift(self, off_s: float) -> None:
        fleet, stats = self.fleet, self.fleet.stats
        stats.drivers_online += 1
        if fleet.recorder is not None:
            fleet.recorder.courier_on(self.id, self.pos[0], self.pos[1], fleet.clock())
        self.feed.start()
        try:
            failures = 0
            # Reconnects in a row after sessions that ended quickly: a server down, not a
            # rotated connection. They back off like an app's, so a restarting Dispatch is
            # not met by the whole fleet every second, then all at once.
            retries = 0
            while fleet.clock() < off_s and not fleet.stopping:
                if self.dispatch is None:
                    await self._wander_until(off_s)
                    continue
                opened = fleet.clock()
                try:
                    s = self._open_session()
                    await self._work(s, off_s)
                    failures = 0
                except SessionLost as lost:
                    s_code = self._session.ended_code if self._session else None
                    if fleet.stopping:
                        pass
                    elif isinstance(lost, _Resync):
                        stats.inc("resynced")
                        failures += 1  # backs off: a delivery refused again and again
                    elif s_code is grpc.StatusCode.UNAVAILABLE:
                        # a rotated connection or a restarting server: open the session
                        # again, which resends the driver's current state
                        stats.inc("stream_reconnects")
                        retries = retries + 1 if fleet.clock() - opened < 30.0 else 1
                    else:
                        failures += 1
                        # ended by the server without an error: a restart, or replaced
                        stats.error(f"session_lost_{s_code.name if s_code else 'ended'}")
                finally:
                    await self._close_session(polite=fleet.clock() >= off_s)
                if fleet.clock() < off_s and not fleet.stopping:
                    backoff = 2.0 ** max(failures, retries - 1)
                    await asyncio.sleep(min(30.0, backoff) * self.rng.uniform(0.5, 1.0))
        finally:
            stats.drivers_online -= 1
            if fleet.recorder is not None:
                fleet.recorder.courier_off(self.id, fleet.clock())
            await self.feed.stop(timeout_s=3.0)

    async def leave(self) -> None:
        """Goes offline now (end of the run): a polite GoOffline, then the streams close."""
        self.feed.online = False
        await self._close_session(polite=True)
        await self.feed.finish()

    async def _wander_until(self, off_s: float) -> None:
        """Without Dispatch: park, now and then drive somewhere near, fixes all along."""
        while self.fleet.clock() < off_s and not self.fleet.stopping:
            self._maybe_reposition()
            await asyncio.sleep(
                min(max(0.0, off_s - self.fleet.clock()), self.rng.uniform(30, 120))
            )

    def _maybe_reposition(self) -> None:
        if self.motion.leg is None and self.behaviour.repositions():
            self.motion.drive(self.motion.somewhere_near(self.rng), idle=True)
            self.fleet.stats.inc("repositions")

    async def _work(self, s: Session, off_s: float) -> None:
        """One session: go available, take offers, deliver, until the shift ends."""
        stats = self.fleet.stats
        # A Dispatch just restarted answers a whole fleet reconnecting at once: an app waits
        # its turn (giving up at 15 s had thousands cancel and come again, a storm of its own).
        first = await s.next(_FIRST_STATE_S)
        if first is None:
            stats.error("session_no_state")
            raise SessionLost()
        if first.WhichOneof("event") == "state":
            self._status = first.state.status
            await self._resume(s, first.state)
        await self._available(s)
        next_probe = self.fleet.clock() + self.rng.uniform(10, 60)
        while self.fleet.clock() < off_s and not self.fleet.stopping:
            ev = await s.next(min(max(0.0, off_s - self.fleet.clock()), 20.0))
            if ev is None:
                self._maybe_reposition()
                if self.bad and self.fleet.clock() >= next_probe:
                    next_probe = self.fleet.clock() + self.rng.uniform(30, 90)
                    await self.mischief.garbage(s)
                continue
            await self._handle(s, ev)

    async def _handle(self, s: Session, ev: dispatch_pb2.DriverSessionResponse) -> None:
        kind = ev.WhichOneof("event")
        if kind == "offer":
            await self._consider(s, ev.offer)
        elif kind == "assignment_confirmed":
            await self._deliver(s, ev.assignment_confirmed)
            await self._available(s)
        elif kind == "state":
            await self._resume(s, ev.state)
        elif kind == "session_replaced":
            raise SessionLost()
        elif kind == "route_update":
            self.fleet.stats.inc("route_updates")
        elif kind == "offer_withdrawn":
            self.fleet.stats.inc("offers_withdrawn")

    async def _resume(self, s: Session, state: dispatch_pb2.SessionState) -> None:
        """After a (re)connect: carry on with the trip held, or weigh the offer held.

        The state names one assignment (the one worked on next) and the trip's stops:
        a trip of several orders resumes whole, or its other bags would be left at the
        counter or in the car (the driver, still holding them, is never offered more).
        """
        if state.assignment.order_id and state.assignment.status in _ACTIVE:
            self._stacked = await self._rest_of_trip(state)
            await self._deliver(s, state.assignment)
        elif state.offer.offer_id:
            await self._consider(s, state.offer)

    async def _rest_of_trip(
        self, state: dispatch_pb2.SessionState
    ) -> list[dispatch_pb2.Assignment]:
        """The trip's other orders, in the plan's order, read from Dispatch as the app would."""
        assert self.dispatch is not None
        others: list[str] = []
        for stop in state.plan:
            if stop.order_id != state.assignment.order_id and stop.order_id not in others:
                others.append(stop.order_id)
        out = []
        for oid in others:
            try:
                got = await self.dispatch.get_assignment(
                    dispatch_pb2.GetAssignmentRequest(order_id=oid), deadline_s=5.0,
                    metadata=self._metadata(),
                )  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    continue  # taken away meanwhile
                raise SessionLost() from exc  # Dispatch away: the session opens again
            if got.assignment.driver_id == self.id and got.assignment.status in _ACTIVE:
                out.append(got.assignment)
        if out:
            self.fleet.stats.inc("trips_resumed")
        return out

    async def _available(self, s: Session) -> None:
        """Asks for offers, unless the last state says the driver is available already."""
        if self._status in (common_pb2.DRIVER_STATUS_AVAILABLE, common_pb2.DRIVER_STATUS_OFFERED):
            return
        for _ in range(3):
            ev = await s.act(go_available=dispatch_pb2.GoAvailable())
            if ev.WhichOneof("event") != "action_rejected":
                return
            if ev.action_rejected.code == "FAILED_PRECONDITION":
                # still holding something (an offer just arrived, a delivery left over from
                # an earlier run): the app shows it and asks again later, no error
                self.fleet.stats.inc("go_available_refused")
                if "a delivery" in ev.action_rejected.message:
                    # A delivery this app let go of (given up after refusals, or lost with
                    # an answer) is still ours on Dispatch: a fresh session resumes it,
                    # rather than a driver idle forever with an order nobody carries.
                    raise _Resync()
                return
            s.rejected(ev, "go_available")
            await asyncio.sleep(self.rng.uniform(2, 5))

    # ------------------------------------------------------------ offers

    async def _consider(self, s: Session, offer: dispatch_pb2.Offer) -> None:
        stats = self.fleet.stats
        stats.inc("offers")
        if self._busy:
            if self._pickup is not None and _near(self._pickup, offer.pickup.location):
                # Another order of the restaurant we are heading to: one trip, two doors.
                ev = await s.act(accept_offer=dispatch_pb2.AcceptOffer(offer_id=offer.offer_id))
                if ev.WhichOneof("event") == "assignment_confirmed":
                    stats.inc("offers_accepted")
                    stats.inc("stacked")
                    self._stacked.append(ev.assignment_confirmed)
                else:
                    stats.inc("offers_lost")
                return
            ev = await s.act(reject_offer=dispatch_pb2.RejectOffer(
                offer_id=offer.offer_id, reason=dispatch_pb2.REJECT_REASON_OTHER))  # fmt: skip
            stats.inc("offers_rejected")
            return
        if self.behaviour.looks_away():  # the offer lapses
            stats.inc("offers_ignored")
            return
        await asyncio.sleep(self.behaviour.reading_s())  # reading it
        if not self.behaviour.accepts(offer):
            ev = await s.act(reject_offer=dispatch_pb2.RejectOffer(
                offer_id=offer.offer_id, reason=self.behaviour.reject_reason(offer)))  # fmt: skip
            if not s.rejected(ev, "reject_offer"):
                stats.inc("offers_rejected")
            return
        ev = await s.act(accept_offer=dispatch_pb2.AcceptOffer(offer_id=offer.offer_id))
        if ev.WhichOneof("event") == "action_rejected":
            stats.inc("offers_lost")  # lapsed or withdrawn while we read it
            return
        stats.inc("offers_accepted")
        if ev.WhichOneof("event") == "assignment_confirmed":
            await self._deliver(s, ev.assignment_confirmed)
            return
        if ev.state.assignment.order_id == offer.order_id and ev.state.assignment.status in _ACTIVE:
            await self._deliver(s, ev.state.assignment)
            return
        # the assignment arrives as its own event
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            nxt = await s.next(deadline - time.monotonic())
            if nxt is None:
                break
            kind = nxt.WhichOneof("event")
            if (
                kind == "assignment_confirmed"
                and nxt.assignment_confirmed.order_id == offer.order_id
            ):
                await self._deliver(s, nxt.assignment_confirmed)
                return
            if kind == "state" and nxt.state.assignment.order_id == offer.order_id:
                await self._deliver(s, nxt.state.assignment)
                return
            await self._handle(s, nxt)
        stats.error("accepted_without_assignment")

    # ------------------------------------------------------------ deliveries

    async def _wait(self, s: Session, seconds: float, order_id: str) -> None:
        """Lets ``seconds`` pass on a delivery, reacting to what the session says."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ev = await s.next(left)
            if ev is None:
                return
            kind = ev.WhichOneof("event")
            if kind == "order_cancelled" and ev.order_cancelled.order_id == order_id:
                raise _OrderGone()
            if kind == "state" and not _holds(ev.state, order_id):
                raise _OrderGone()  # reassigned while we were away
            if kind == "offer":
                await self._consider(s, ev.offer)  # busy: declined at once
            elif kind == "session_replaced":
                raise SessionLost()
            elif kind == "route_update":
                self.fleet.stats.inc("route_updates")

    async def _go(self, s: Session, dest: LatLon, order_id: str) -> Session:
        """Drives to ``dest``; a driver who goes silent comes back on a new session."""
        leg = self.motion.drive(dest)
        if self.behaviour.goes_silent():
            await self._wait(s, self.behaviour.silent_after_s(leg.duration_s), order_id)
            s = await self._go_silent(s, order_id)
        await self._wait(s, self.motion.left_s(leg), order_id)
        self.motion.arrive(leg)
        return s

    async def _go_silent(self, s: Session, order_id: str) -> Session:
        """The phone loses the network: both streams drop, and come back 35 to 80 s later."""
        stats = self.fleet.stats
        stats.inc("went_silent")
        s.drop(self.fleet.detach)
        self._session = None
        await self.feed.stop(timeout_s=2.0)
        await asyncio.sleep(self.behaviour.silence_s())
        self.feed.start()
        s = self._open_session()
        first = await s.next(_FIRST_STATE_S)
        if first is None or first.WhichOneof("event") != "state":
            raise SessionLost()
        if not _holds(first.state, order_id):
            stats.inc("lost_after_silence")
            raise _OrderGone()
        return s

    async def _try_again_shortly(self, s: Session, order_id: str) -> None:
        """Dispatch said "try again shortly" (UNAVAILABLE): a moment, then the app tries again."""
        self.fleet.stats.inc("steps_retried")
        await self._wait(s, self.rng.uniform(1.0, 3.0), order_id)

    async def _step(self, s: Session, what: str, order_id: str) -> None:
        action: dict[str, Any] = {what: dispatch_pb2.OrderProgress(order_id=order_id)}
        for _ in range(5):
            ev = await s.act(**action)
            if ev.WhichOneof("event") != "action_rejected":
                return
            if ev.action_rejected.code != "UNAVAILABLE":  # "try again shortly": so we do
                break
            await self._try_again_shortly(s, order_id)
        s.rejected(ev, what)
        raise _OrderGone()

    async def _deliver(self, s: Session, a: dispatch_pb2.Assignment) -> None:
        stats = self.fleet.stats
        oid = a.order_id
        self._busy, self.order_id = True, oid
        stats.drivers_busy += 1
        stats.inc("assignments")
        # The city's stops (foodmesh.sim.world) at their default length when stop_s is 120 s.
        stop = self.fleet.config.stop_s / 120.0 * self.fleet.router.travel_scale
        try:
            status = a.status
            if status <= AS.ASSIGNMENT_STATUS_AT_RESTAURANT:
                self._pickup = (a.pickup.location.lat, a.pickup.location.lon)
            if status <= AS.ASSIGNMENT_STATUS_ASSIGNED:
                s = await self._go(s, (a.pickup.location.lat, a.pickup.location.lon), oid)
                await self._step(s, "arrived_at_restaurant", oid)
            if status <= AS.ASSIGNMENT_STATUS_AT_RESTAURANT:
                await self._pick_up(s, a, handover_s=world.handover_seconds(self.rng) * stop)
                self._pickup = None  # food in the bag: no more stacking onto this trip
                for extra in list(self._stacked):  # the trip's other bags, same counter
                    if extra.status > AS.ASSIGNMENT_STATUS_AT_RESTAURANT:
                        continue  # in the car already (a trip resumed after a reconnect)
                    try:
                        await self._pick_up(
                            s, extra, handover_s=world.handover_seconds(self.rng) * stop
                        )
                    except _OrderGone:
                        self._stacked.remove(extra)
                        stats.inc("deliveries_abandoned")
            s = await self._drop(s, a)
            while self._stacked:  # then the other doors, in the order accepted
                extra = self._stacked.pop(0)
                self.order_id = extra.order_id
                try:
                    s = await self._drop(s, extra)
                except _OrderGone:
                    stats.inc("deliveries_abandoned")
        except _OrderGone:
            stats.inc("deliveries_abandoned")
        finally:
            self._busy, self.order_id, self._pickup = False, "", None
            self._stacked.clear()
            stats.drivers_busy -= 1

    async def _drop(self, s: Session, a: dispatch_pb2.Assignment) -> Session:
        """Drives to the customer's door and hands the order over (PIN or photo)."""
        stats = self.fleet.stats
        oid = a.order_id
        # The city's stops (foodmesh.sim.world) at their default length when stop_s is 120 s.
        stop = self.fleet.config.stop_s / 120.0 * self.fleet.router.travel_scale
        if a.status <= AS.ASSIGNMENT_STATUS_PICKED_UP:
            s = await self._go(s, (a.dropoff.location.lat, a.dropoff.location.lon), oid)
            await self._step(s, "arrived_at_customer", oid)
        door = (a.dropoff.location.lat, a.dropoff.location.lon)
        zone_km = distance_m(door, CENTER) / 1000.0
        await self._wait(s, world.parking_seconds(self.rng, zone_km) * stop, oid)
        photo = f"photo-{oid}-{self.rng.randrange(10**6):06d}"
        pin = await self.fleet.pin_of(oid, self.id)  # the customer at the door tells it
        # Left at the door (nobody to tell a PIN): a photo of it is the proof.
        proof = (dispatch_pb2.Delivered(order_id=oid, pin=pin) if pin
                 else dispatch_pb2.Delivered(order_id=oid, photo_id=photo))  # fmt: skip
        # "Try again shortly" is tried again, as for every step: the order may be
        # delivered already with Dispatch's record behind (its answer was lost).
        for _ in range(5):
            ev = await s.act(delivered=proof)
            rejected = ev.action_rejected if ev.WhichOneof("event") == "action_rejected" else None
            if rejected is None or rejected.code != "UNAVAILABLE":
                break
            await self._try_again_shortly(s, oid)
        if not s.rejected(ev, "delivered"):
            stats.inc("delivered")
        return s

    async def _pick_up(self, s: Session, a: dispatch_pb2.Assignment, *, handover_s: float) -> None:
        """Waits at the counter until the food is there, takes it over, then picks it up.

        The driver sees the food: the simulated kitchen's ready signal when it cooks
        this order, else the assignment's expected ready time.
        """
        stats = self.fleet.stats
        ready = self.fleet.food_ready(a.order_id)
        if ready is not None and not ready.is_set():
            stats.inc("waits_for_food")
            t0 = time.monotonic()
            while not ready.is_set() and time.monotonic() - t0 < 3600:
                await self._wait(s, 5.0, a.order_id)
        elif ready is None and a.HasField("ready_time"):
            early = a.ready_time.ToNanoseconds() / 1e9 - time.time()
            if early > 0:
                stats.inc("waits_for_food")
                await self._wait(s, min(early, 3600.0), a.order_id)
        await self._wait(s, handover_s, a.order_id)
        give_up = time.monotonic() + 2 * 3600
        while time.monotonic() < give_up:
            ev = await s.act(picked_up=dispatch_pb2.OrderProgress(order_id=a.order_id))
            if ev.WhichOneof("event") != "action_rejected":
                stats.inc("picked")
                return
            if ev.action_rejected.code == "UNAVAILABLE":
                # "Try again shortly" (Dispatch's database restarting): the app tries again,
                # as for every step. Giving up here left the order at the counter, held by
                # this driver (the 30-minute soak's one stuck order, at the PostgreSQL restart).
                await self._try_again_shortly(s, a.order_id)
                continue
            if ev.action_rejected.code != "FAILED_PRECONDITION":
                s.rejected(ev, "picked_up")
                raise _OrderGone()
            stats.inc("waits_for_food")
            wait = 10.0
            if a.HasField("ready_time"):
                wait = a.ready_time.ToNanoseconds() / 1e9 - time.time()
            await self._wait(s, min(15.0, max(2.0, wait)), a.order_id)
        raise _OrderGone()


def _near(a: LatLon, b: Any, within_m: float = 150.0) -> bool:
    """Whether ``b`` (a LatLng) is the place ``a``, give or take a shopfront."""
    return haversine_m(a[0], a[1], b.lat, b.lon) <= within_m


def _holds(state: dispatch_pb2.SessionState, order_id: str) -> bool:
    """Whether the session still has us carry ``order_id`` (alone, or on a trip of several)."""
    if state.assignment.order_id == order_id:
        return True
    return any(stop.order_id == order_id for stop in state.plan)
