"""Routes for the drivers on delivery whose sessions are on this replica.

The servicer calls :meth:`Navigator.follow` when a driver's leg starts (the
assignment confirmed, the food picked up) and when a session opens (the route
already sent, kept in ``fleet.routes``, is returned to be resent after the state,
whichever replica sent it). :meth:`Navigator.release` forgets the driver when their
session here ends.

One task does the rest, for every active leg here (see :mod:`.routes` for the
rules): the leg's first route from the ETA service's ``Route`` (steps included),
with a straight-line stand-in when the ETA service is not configured or does not
answer in time; then, as the driver's fixes come in on core NATS
``location.v1.driver.<id>`` (one subscription per driver with an active leg here,
whose callback only overwrites a "latest fix" slot), ``CheckReroute`` at most every
``every_s`` per driver, and a new route when it says so. Work is bounded: legs only
for this replica's sessions, ``concurrency`` calls at a time, each with a deadline,
and the session's bounded queue (a driver who does not read is dropped by it).

Before each step the assignment is read again, so a leg ended elsewhere (the order
cancelled, the driver lost it, another replica's session) is dropped, not rerouted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from foodmesh.core.events import DRIVER_LOCATIONS
from foodmesh.core.nats import Subjects
from foodmesh.core.settings import env_float, env_int
from foodmesh.v1 import common_pb2, dispatch_pb2, eta_pb2, location_pb2
from servers.dispatch import metrics
from servers.dispatch.model import Assignment
from servers.dispatch.routes import (
    Leg,
    LegState,
    Next,
    arriving,
    leg_of,
    leg_state,
    next_step,
    reason_of,
    seconds_left,
    straight_line,
    update_from_reroute,
    update_from_route,
)
from servers.dispatch.sessions import Session
from servers.dispatch.store import Fleet

__all__ = ["Navigator", "NavigatorConfig", "PositionPort", "RoutePort"]

_log = logging.getLogger("foodmesh.dispatch.navigator")
R = dispatch_pb2.RouteUpdateReason
ES = eta_pb2.EstimateSource


class RoutePort(Protocol):
    """The ETA service as routing needs it (its typed client)."""

    async def route(
        self, request: eta_pb2.RouteRequest, *, deadline_s: float | None = ...
    ) -> eta_pb2.RouteResponse: ...

    async def check_reroute(
        self, request: eta_pb2.CheckRerouteRequest, *, deadline_s: float | None = ...
    ) -> eta_pb2.CheckRerouteResponse: ...


class PositionPort(Protocol):
    """The Location service's last known position of a driver (its typed client)."""

    async def get_driver_location(
        self, request: location_pb2.GetDriverLocationRequest, *, deadline_s: float | None = ...
    ) -> location_pb2.GetDriverLocationResponse: ...


@dataclass(frozen=True, slots=True)
class NavigatorConfig:
    #: A driver's route is checked at most this often (and a stand-in retried).
    every_s: float = 12.0
    #: Deadline of each call to the ETA service.
    deadline_s: float = 2.0
    #: Calls in flight at once, across drivers.
    concurrency: int = 16

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> NavigatorConfig:
        p = "FOODMESH_DISPATCH_"
        return cls(
            every_s=env_float(extra, p + "REROUTE_CHECK_S", 12.0, lo=0.05),
            deadline_s=env_float(extra, p + "ROUTE_DEADLINE_S", 2.0, lo=0.05),
            concurrency=env_int(extra, p + "ROUTE_CONCURRENCY", 16, lo=1, hi=1000),
        )


@dataclass(eq=False, slots=True)
class _Tracked:
    session: Session
    st: LegState


def _ll(p: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=p[0], lon=p[1])


class Navigator:
    """The active legs of this replica's drivers, and the one task that routes them."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        eta: RoutePort | None,
        location: PositionPort,
        nats: Callable[[], NATS],
        subjects: Subjects,
        config: NavigatorConfig | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.eta = eta
        self.location = location
        self._nats = nats
        self._subjects = subjects
        self.config = config or NavigatorConfig()
        self.clock = clock
        self.monotonic = monotonic
        self._legs: dict[str, _Tracked] = {}
        self._subs: dict[str, Subscription] = {}
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dispatch-navigator")

    async def stop(self) -> None:
        from foodmesh.core.tasks import stop_tasks

        await stop_tasks([self._task])
        self._task = None
        for driver_id in list(self._legs):
            await self._drop(driver_id)

    @property
    def active(self) -> int:
        """Drivers with an active leg here."""
        return len(self._legs)

    # -- the servicer's calls ------------------------------------------------------

    async def follow(
        self, session: Session, a: Assignment | None, *, resume: bool = False
    ) -> dispatch_pb2.RouteUpdate | None:
        """Makes ``a``'s leg (if any) the driver's active one, routed from here on.

        Returns the route already sent for this very leg, to be resent (with
        ``resume``, one a previous session was sent, on any replica, is looked up).
        Never raises: routes are a help to the driver, not a step of the delivery.
        """
        driver = session.driver_id
        leg = leg_of(a.status) if a is not None and a.driver_id == driver else None
        t = self._legs.get(driver)
        if leg is None or a is None:
            await self._drop(driver)
            return None
        if t is not None and t.st.order_id == a.order_id and t.st.leg is leg:
            t.session = session
            return t.st.update
        if t is not None:
            vehicle = t.st.vehicle_type
        else:
            vehicle = common_pb2.VEHICLE_TYPE_CAR
            with contextlib.suppress(Exception):  # never fails the driver's action
                if (d := await self.fleet.drivers.get(driver)) is not None:
                    vehicle = d.vehicle_type
        st = leg_state(a, leg, vehicle_type=vehicle)
        if t is not None:  # the same driver's fixes carry over to their next leg
            st.fix, st.fix_at = t.st.fix, t.st.fix_at
        if resume:
            st.update = await self._stored(driver, a.order_id, leg)
            if st.update is not None:
                st.stand_in = st.update.source == ES.ESTIMATE_SOURCE_STRAIGHT_LINE
                st.tried_at = st.checked_at = self.monotonic()
        self._legs[driver] = _Tracked(session, st)
        self._wake.set()
        return st.update

    async def release(self, session: Session) -> None:
        """The session ended: its driver's leg is no longer followed here."""
        t = self._legs.get(session.driver_id)
        if t is not None and t.session is session:
            await self._drop(session.driver_id)

    async def _stored(
        self, driver: str, order_id: str, leg: Leg
    ) -> dispatch_pb2.RouteUpdate | None:
        try:
            row = await self.fleet.routes.load(driver)
        except Exception as exc:
            _log.debug("driver %s's route not read: %s", driver, exc)
            return None
        if row is None or row[0] != order_id or row[1] != int(leg):
            return None
        u = dispatch_pb2.RouteUpdate()
        try:
            u.ParseFromString(row[2])
        except Exception:
            return None
        return u

    async def _drop(self, driver_id: str) -> None:
        self._legs.pop(driver_id, None)
        sub = self._subs.pop(driver_id, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- the loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        tick = min(1.0, max(0.05, self.config.every_s / 4))
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("routing pass failed (%d in a row): %s", failures, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    async def tick(self) -> int:
        """One pass over the active legs; returns how many steps were taken."""
        now = self.monotonic()
        can_route = self.eta is not None
        due = [
            (t, step)
            for t in list(self._legs.values())
            if (step := next_step(t.st, now=now, every_s=self.config.every_s, can_route=can_route))
            is not Next.WAIT
        ]
        if due:
            await asyncio.gather(*(self._step(t, step) for t, step in due))
        for t in [t for t in list(self._legs.values()) if arriving(t.st)]:
            await self._arriving(t)
        return len(due)

    async def _arriving(self, t: _Tracked) -> None:
        """Tells the customer (through ``dispatch.v1.arriving``) the food is minutes away."""
        st = t.st
        left = seconds_left(st) or 0.0
        why = f"your driver is about {max(1, round(left / 60))} min away"
        try:
            await self.fleet.assignments.arriving(st.order_id, st.driver_id, why, now=self.clock())
        except Exception as exc:  # tried again on the next pass
            _log.debug("arriving of %s not recorded: %s", st.order_id, exc)
            return
        st.arriving_said = True  # said now, or before (by this replica or another)

    def _current(self, t: _Tracked) -> bool:
        return self._legs.get(t.st.driver_id) is t

    async def _step(self, t: _Tracked, step: Next) -> None:
        async with self._sem:
            if not self._current(t):
                return
            st = t.st
            # Whatever happens next, this step is not retried before its time.
            if step is Next.ROUTE:
                st.tried_at = self.monotonic()
            else:
                st.checked_at = self.monotonic()
            try:
                a = await self.fleet.assignments.get(st.order_id)
                if a is None or a.driver_id != st.driver_id or leg_of(a.status) is not st.leg:
                    if self._current(t):
                        await self._drop(st.driver_id)
                    return
                await self._subscribe(st.driver_id)
                if step is Next.ROUTE:
                    await self._route(t)
                else:
                    await self._check(t)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.debug("driver %s's route step %s failed: %s", st.driver_id, step.value, exc)

    async def _subscribe(self, driver_id: str) -> None:
        if driver_id in self._subs:
            return

        async def on_fix(msg: Msg) -> None:
            t = self._legs.get(driver_id)
            if t is None:
                return
            ev = location_pb2.DriverLocationEvent()
            try:
                ev.ParseFromString(msg.data)
            except Exception:
                return
            t.st.fix, t.st.fix_at = (ev.position.lat, ev.position.lon), self.monotonic()
            if t.st.update is None or arriving(t.st):  # a route, or the customer, to tell
                self._wake.set()

        try:
            nc = self._nats()
            sub = await nc.subscribe(
                self._subjects.subject(DRIVER_LOCATIONS.subject(driver_id)),
                cb=on_fix,
                pending_msgs_limit=16,
            )
            # Registered with the server before the route goes out: fixes sent after
            # the driver has their route are seen.
            await nc.flush(timeout=1)
        except Exception as exc:  # NATS away: no rerouting until it is back
            _log.debug("no fixes of driver %s for now: %s", driver_id, exc)
            return
        if driver_id in self._legs and driver_id not in self._subs:
            self._subs[driver_id] = sub
        else:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _position(self, driver_id: str) -> tuple[float, float] | None:
        try:
            got = await self.location.get_driver_location(
                location_pb2.GetDriverLocationRequest(driver_id=driver_id), deadline_s=1.0
            )
        except Exception:
            return None
        return (got.position.lat, got.position.lon) if got.HasField("position") else None

    async def _ask(self, origin: tuple[float, float], st: LegState) -> eta_pb2.RouteResponse | None:
        if self.eta is None:
            return None
        try:
            return await self.eta.route(
                eta_pb2.RouteRequest(
                    origin=_ll(origin),
                    destination=_ll(st.dest),
                    vehicle_type=st.vehicle_type,  # type: ignore[arg-type]
                    include_steps=True,
                ),
                deadline_s=self.config.deadline_s,
            )
        except Exception as exc:
            _log.debug("no route for driver %s from the ETA service: %s", st.driver_id, exc)
            return None

    async def _route(self, t: _Tracked) -> None:
        """The leg's first route (or a road route in place of the stand-in)."""
        st = t.st
        origin = st.fix or await self._position(st.driver_id) or st.origin_hint
        if origin is None:  # no position known yet: tried again when a fix comes in
            return
        resp = await self._ask(origin, st)
        reason = R.ROUTE_UPDATE_REASON_INITIAL
        if resp is not None:
            await self._send(t, update_from_route(resp, st, reason=reason, now=self.clock()))
        elif st.update is None:
            u = straight_line(origin, st, reason=reason, now=self.clock())
            await self._send(t, u, stand_in=True)

    async def _check(self, t: _Tracked) -> None:
        """The ETA service's reroute rule on the driver's latest fix; a new route if due."""
        st = t.st
        if self.eta is None or st.fix is None or st.update is None:
            return
        fix = st.fix
        req = eta_pb2.CheckRerouteRequest(
            order_id=st.order_id,
            driver_location=_ll(fix),
            destination=_ll(st.dest),
            current_polyline=st.update.polyline,
            vehicle_type=st.vehicle_type,  # type: ignore[arg-type]
        )
        req.current_eta.CopyFrom(st.update.eta)
        answer = await self.eta.check_reroute(req, deadline_s=self.config.deadline_s)
        reason = reason_of(answer.reason)
        if reason is None or not self._current(t):
            return
        resp = await self._ask(fix, st)  # the same route again, now with its steps
        if resp is not None:
            u = update_from_route(resp, st, reason=reason, now=self.clock())
        else:
            u = update_from_reroute(answer, st, reason=reason)
        await self._send(t, u)

    async def _send(
        self, t: _Tracked, u: dispatch_pb2.RouteUpdate, *, stand_in: bool = False
    ) -> None:
        if not self._current(t):
            return
        st = t.st
        st.update, st.stand_in = u, stand_in
        st.checked_at = self.monotonic()
        # Kept before it goes out: a reconnect right after (to any replica) resends this
        # route, not the one before it (saved after, a CI run's reconnect got the old one).
        try:
            await self.fleet.routes.save(
                st.driver_id, st.order_id, int(st.leg), u.SerializeToString()
            )
        except Exception as exc:  # the route still goes out; only a resend elsewhere misses it
            _log.debug("driver %s's route not saved: %s", st.driver_id, exc)
        if not self._current(t):
            return
        t.session.put(dispatch_pb2.DriverSessionResponse(route_update=u))
        self.sent += 1
        metrics.route_sent(u)
