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

Movement goes through one function, :meth:`Router.leg`: along the road graph
(``foodmesh.roads``) at the traffic of the hour when that package is there,
else straight lines with a detour factor at a traffic-aware speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import grpc

from clients import ClientOptions, DispatchClient, LocationClient
from foodmesh.core.tasks import stop_tasks
from foodmesh.sim.agents import SimConfig, Stats, Tokens
from foodmesh.sim.city import DriverSpec
from foodmesh.sim.demand import distance_m
from foodmesh.sim.trace import TraceRecorder
from foodmesh.v1 import common_pb2, dispatch_pb2, location_pb2

__all__ = [
    "DriverAgent",
    "Fleet",
    "Leg",
    "Router",
    "acceptance_probability",
    "shift_windows",
    "traffic_multiplier",
]

_log = logging.getLogger("foodmesh.sim.drivers")
LatLon = tuple[float, float]
AS = dispatch_pb2.AssignmentStatus
_ACTIVE = (AS.ASSIGNMENT_STATUS_ASSIGNED, AS.ASSIGNMENT_STATUS_AT_RESTAURANT,
           AS.ASSIGNMENT_STATUS_PICKED_UP, AS.ASSIGNMENT_STATUS_AT_CUSTOMER)  # fmt: skip
#: Average moving speed in the city, lights and junctions included (m/s), by vehicle.
_SPEED_MPS: dict[int, float] = {
    common_pb2.VEHICLE_TYPE_CAR: 8.0,
    common_pb2.VEHICLE_TYPE_SCOOTER: 7.0,
    common_pb2.VEHICLE_TYPE_BICYCLE: 4.5,
}
#: Streets are not straight: a straight line's length times this is the drive.
_DETOUR = 1.35
_MPS_TO_MPH = 2.236936
_TZ = ZoneInfo("America/Los_Angeles")


def traffic_multiplier(when: dt.datetime) -> float:
    """The design's time-of-day table: weekday rush 1.5x, weekday lunch 1.2x, weekend 1.3x."""
    local = when.astimezone(_TZ)
    hour = local.hour
    if local.weekday() < 5:
        if 7 <= hour <= 9 or 17 <= hour <= 19:
            return 1.5
        return 1.2 if 12 <= hour <= 13 else 1.0
    return 1.3 if 11 <= hour <= 14 else 0.9


def acceptance_probability(base: float, distance_miles: float, earnings_minor: int) -> float:
    """How likely a driver takes an offer: their own rate, less for far or poorly paid work.

    Fair pay is about $2 plus $1.20 a mile; an offer paying that keeps ``base``,
    one paying half loses a third of it; past 4 miles every extra mile costs more.
    """
    d = max(0.0, distance_miles if math.isfinite(distance_miles) else 0.0)
    fair = 200.0 + 120.0 * d
    pay = min(1.15, max(0.2, 0.4 + 0.6 * max(0, earnings_minor) / fair))
    far = math.exp(-max(0.0, d - 4.0) / 5.0)
    return min(0.99, max(0.02, base * pay * far))


@dataclass(frozen=True, slots=True)
class Leg:
    """A drive: a polyline and how long it takes; :meth:`at` is where the car is."""

    path: tuple[LatLon, ...]
    cum_m: tuple[float, ...]
    duration_s: float

    @classmethod
    def of(cls, path: Sequence[LatLon], duration_s: float) -> Leg:
        pts = tuple(path) if path else ((0.0, 0.0),)
        cum = [0.0]
        for a, b in zip(pts, pts[1:], strict=False):
            cum.append(cum[-1] + distance_m(a, b))
        return cls(pts, tuple(cum), max(0.0, duration_s))

    @property
    def distance_m(self) -> float:
        return self.cum_m[-1]

    @property
    def end(self) -> LatLon:
        return self.path[-1]

    def at(self, elapsed_s: float) -> tuple[float, float, float]:
        """``(lat, lon, heading)`` after ``elapsed_s`` seconds, at a steady pace."""
        if self.duration_s <= 0 or elapsed_s >= self.duration_s or len(self.path) < 2:
            a, b = (self.path[-2], self.path[-1]) if len(self.path) > 1 else (self.end, self.end)
            return (*self.end, _bearing(a, b))
        target = self.distance_m * max(0.0, elapsed_s) / self.duration_s
        i = 1
        while i < len(self.cum_m) - 1 and self.cum_m[i] < target:
            i += 1
        a, b = self.path[i - 1], self.path[i]
        seg = self.cum_m[i] - self.cum_m[i - 1]
        f = 0.0 if seg <= 0 else (target - self.cum_m[i - 1]) / seg
        return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, _bearing(a, b))


def _bearing(a: LatLon, b: LatLon) -> float:
    la1, la2 = math.radians(a[0]), math.radians(b[0])
    dlon = math.radians(b[1] - a[1])
    y = math.sin(dlon) * math.cos(la2)
    x = math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(dlon)
    return math.degrees(math.atan2(y, x)) % 360.0


class Router:
    """Where drives go: the road graph when ``foodmesh.roads`` exists, else straight lines."""

    def __init__(
        self,
        *,
        graph: Any = None,
        traffic: Any = None,
        travel_scale: float = 1.0,
        idle_routes_per_s: float = 5.0,
    ):
        self.graph = graph
        self.traffic = traffic
        self.travel_scale = travel_scale
        self.road_failures = 0
        # A route costs ~25 ms of CPU: idle drivers' wandering gets a budget, deliveries never
        # wait for one. Past the budget an idle drive goes straight.
        self._idle_rate = idle_routes_per_s
        self._idle_tokens = idle_routes_per_s
        self._idle_at = time.monotonic()

    @classmethod
    async def create(cls, *, use_roads: bool, travel_scale: float) -> Router:
        """Loads the default road graph in a thread (it may be generated on first use)."""
        if use_roads:
            try:
                roads = importlib.import_module("foodmesh.roads")
                graph_cls, traffic_cls = roads.RoadGraph, roads.TrafficModel
            except (ImportError, AttributeError):
                _log.info("drivers move in straight lines: foodmesh.roads is not available")
            else:
                graph = await asyncio.to_thread(graph_cls.default)
                _log.info("drivers move along the road graph: %r", graph)
                return cls(graph=graph, traffic=traffic_cls(), travel_scale=travel_scale)
        return cls(travel_scale=travel_scale)

    @property
    def kind(self) -> str:
        return "roads" if self.graph is not None else "straight"

    def _idle_budget(self) -> bool:
        now = time.monotonic()
        self._idle_tokens = min(self._idle_rate, self._idle_tokens + (now - self._idle_at)
                                * self._idle_rate)  # fmt: skip
        self._idle_at = now
        if self._idle_tokens >= 1.0:
            self._idle_tokens -= 1.0
            return True
        return False

    def leg(
        self, a: LatLon, b: LatLon, *, when: dt.datetime, vehicle: int, idle: bool = False
    ) -> Leg:
        """The drive from ``a`` to ``b`` leaving at ``when``; the one place movement is decided."""
        slow = _SPEED_MPS[common_pb2.VEHICLE_TYPE_CAR] / _SPEED_MPS.get(vehicle, 8.0)
        if self.graph is not None and (not idle or self._idle_budget()):
            try:
                route = self.graph.route(a, b, depart_at=when, traffic=self.traffic)
                return Leg.of(route.path, route.duration_s * slow * self.travel_scale)
            except Exception:  # noqa: BLE001 - off the graph or unreachable: go straight
                self.road_failures += 1
        d = distance_m(a, b) * _DETOUR
        speed = _SPEED_MPS.get(vehicle, 8.0) / traffic_multiplier(when)
        return Leg.of((a, b), d / speed * self.travel_scale)


def shift_windows(
    spec: DriverSpec, *, start: dt.datetime, horizon_s: float, shifts: bool, ramp_s: float,
    rng: random.Random, always_on_share: float = 0.0,
) -> list[tuple[float, float]]:  # fmt: skip
    """The driver's shifts as ``(on_s, off_s)`` seconds after ``start``, within the horizon.

    A shift under way at the start begins within ``ramp_s`` (drivers trickle in);
    without ``shifts`` every driver works the whole run. ``always_on_share`` of the
    drivers (the same ones for a given city) work around the clock, so a city
    simulated at 3 am is quiet, not dead.
    """
    ramp = rng.uniform(0.0, max(0.0, ramp_s))
    if random.Random(f"{spec.driver_id}:owl").random() < always_on_share:
        shifts = False
    if not shifts:
        return [(min(ramp, horizon_s), horizon_s)]
    local = start.astimezone(_TZ)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[tuple[float, float]] = []
    days = int(min(horizon_s, 8 * 86400) // 86400) + 2
    for day in range(-1, days):
        on = midnight + dt.timedelta(days=day, hours=spec.shift_start_h)
        on_s = (on - local).total_seconds()
        off_s = on_s + spec.shift_hours * 3600
        if off_s <= 0 or on_s >= horizon_s:
            continue
        on_s = max(on_s, ramp) if on_s <= 0 else on_s
        if on_s < min(off_s, horizon_s):
            out.append((on_s, min(off_s, horizon_s)))
    return out


class _Lost(Exception):
    """The work session ended under us (the server closed it, or it was replaced)."""


class _OrderGone(Exception):
    """The order carried was cancelled or taken away."""


_END: Any = object()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass(slots=True)
class _Session:
    call: Any
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    pending: dict[int, asyncio.Future[dispatch_pb2.DriverSessionResponse]] = field(
        default_factory=dict
    )
    reader: asyncio.Task[None] | None = None
    seq: int = 0
    ended_code: grpc.StatusCode | None = None


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
        if task is not None and not task.done():
            self._background.add(task)
            task.add_done_callback(self._background.discard)

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
        self.location = fleet.locations[index % len(fleet.locations)]
        self.dispatch = (
            fleet.dispatches[index % len(fleet.dispatches)] if fleet.dispatches else None
        )
        self.pos: LatLon = spec.home
        self._leg: Leg | None = None
        self._leg_t0 = 0.0
        self._server_interval = 5.0
        self._fix_seq = 0
        self._bad_seqs: set[int] = set()
        self._session: _Session | None = None
        self._loc_task: asyncio.Task[None] | None = None
        self._loc_call: Any = None
        self._online = False
        self._status: int = common_pb2.DRIVER_STATUS_OFFLINE
        self._busy = False
        self._silenced = False
        self.order_id = ""

    # ------------------------------------------------------------ credentials, position

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", self.fleet.tokens.header("driver", self.id)),)

    def _where(self) -> tuple[float, float, float, bool]:
        """``(lat, lon, heading, moving)`` now."""
        if self._leg is None:
            return (*self.pos, 0.0, False)
        elapsed = time.monotonic() - self._leg_t0
        lat, lon, heading = self._leg.at(elapsed)
        if elapsed >= self._leg.duration_s:
            self.pos, self._leg = self._leg.end, None
            return (lat, lon, heading, False)
        return (lat, lon, heading, True)

    def _drive(self, dest: LatLon, *, idle: bool = False) -> Leg:
        lat, lon, _, _ = self._where()
        leg = self.fleet.router.leg((lat, lon), dest, when=self.fleet.now(), idle=idle,
                                    vehicle=self.spec.driver.vehicle_type)  # fmt: skip
        self.pos = (lat, lon)
        self._leg, self._leg_t0 = leg, time.monotonic()
        return leg

    # ------------------------------------------------------------ the location stream

    def _fix(
        self, lat: float, lon: float, heading: float, moving: bool
    ) -> location_pb2.LocationFix:
        self._fix_seq += 1
        mps = self.fleet.router.travel_scale
        speed = (
            (_SPEED_MPS.get(self.spec.driver.vehicle_type, 8.0) / max(mps, 1e-3)) if moving else 0.0
        )
        f = location_pb2.LocationFix(
            lat=round(lat + self.rng.gauss(0, 2e-5), 7),
            lon=round(lon + self.rng.gauss(0, 2e-5), 7),
            accuracy=round(self.rng.uniform(3.0, 15.0), 1), heading=round(heading, 1) % 360.0,
            speed=round(min(speed * _MPS_TO_MPH, 80.0), 1), seq=self._fix_seq,
        )  # fmt: skip
        f.timestamp.FromNanoseconds(time.time_ns())
        return f

    def _malformed(self) -> location_pb2.LocationFix:
        lat, lon, heading, _ = self._where()
        f = self._fix(lat, lon, heading, False)
        kind = self.rng.choice(("nan", "lat", "lon", "heading", "speed", "future"))
        if kind == "nan":
            f.lat = math.nan
        elif kind == "lat":
            f.lat = self.rng.choice((91.5, -123.0))
        elif kind == "lon":
            f.lon = 181.25
        elif kind == "heading":
            f.heading = 400.0
        elif kind == "speed":
            f.speed = -12.0
        else:
            f.timestamp.FromNanoseconds(time.time_ns() + 3600 * 10**9)
        self._bad_seqs.add(f.seq)
        return f

    async def _read_acks(self, call: Any) -> None:
        stats = self.fleet.stats
        async for ack in call:
            stats.inc("fixes_accepted", ack.accepted)
            rejected = set()
            for r in ack.rejections:
                rejected.add(r.seq)
                if r.seq in self._bad_seqs:
                    stats.defended["malformed_fix"] += 1
                else:
                    stats.error("fix_" + location_pb2.FixRejectionReason.Name(r.reason).lower()
                                .removeprefix("fix_rejection_reason_"))  # fmt: skip
            for seq in [s for s in self._bad_seqs if s <= ack.acked_seq]:
                self._bad_seqs.discard(seq)
                if seq not in rejected:
                    stats.breached["malformed_fix_accepted"] += 1
            if ack.HasField("next_interval"):
                iv = ack.next_interval.seconds + ack.next_interval.nanos / 1e9
                self._server_interval = min(60.0, max(1.0, iv))

    async def _location_loop(self) -> None:
        """Keeps StreamLocations open while online, sending fixes at the pace asked."""
        stats = self.fleet.stats
        failures = 0
        while self._online:
            call = self.location.stub.StreamLocations(
                timeout=self.fleet.horizon_s + 600, metadata=self._metadata()
            )
            self._loc_call = call
            reader = asyncio.create_task(self._read_acks(call))
            try:
                while self._online and not reader.done():
                    lat, lon, heading, moving = self._where()
                    fixes = [self._fix(lat, lon, heading, moving)]
                    if self.bad and (self._fix_seq < 2 or self.rng.random() < 0.2):
                        fixes.insert(0, self._malformed())
                    async with asyncio.timeout(10.0):  # a stalled stream is a broken one
                        await call.write(location_pb2.StreamLocationsRequest(fixes=fixes))
                    stats.inc("fixes_sent", len(fixes))
                    limit = 5.0 if moving else 20.0  # parked: still inside presence's 30 s
                    await asyncio.sleep(
                        min(limit, self._server_interval) * self.rng.uniform(0.9, 1.1)
                    )
                    failures = 0
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            except TimeoutError:
                failures += 1
                stats.error("location_write_stalled")
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if self._online and code is grpc.StatusCode.UNAVAILABLE:
                    # The server rotates connections (max connection age) or restarts:
                    # routine for a long stream, which an app simply opens again.
                    stats.inc("stream_reconnects")
                elif self._online and code is not grpc.StatusCode.CANCELLED:
                    failures += 1
                    stats.error(f"location_{code.name if code else 'closed'}")
                    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and self.bad:
                        stats.breached["malformed_fix_stream"] += 1
            finally:
                # The reader ends with the call; nobody waits for it here (thousands of
                # streams may end at once when a server dies), the fleet reaps it at the end.
                call.cancel()
                self.fleet.detach(reader)
            if self._online:
                await asyncio.sleep(min(30.0, 1.0 * 2**failures) * self.rng.uniform(0.5, 1.0))

    # ------------------------------------------------------------ the work session

    async def _read_session(self, s: _Session) -> None:
        try:
            async for ev in s.call:
                if ev.ack_seq:
                    # An answer: the first one goes to whoever acted (an accepted offer
                    # answers assignment_confirmed, then state); later state refreshes
                    # of an answered action are stale and dropped.
                    fut = s.pending.pop(ev.ack_seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(ev)
                        continue
                    if ev.WhichOneof("event") in ("state", "action_rejected"):
                        continue
                await s.events.put(ev)
        except grpc.aio.AioRpcError as exc:
            s.ended_code = exc.code()
        finally:
            for fut in s.pending.values():
                if not fut.done():
                    fut.set_exception(_Lost())
                    fut.add_done_callback(_retrieved)  # whoever waited may be gone
            s.pending.clear()
            s.events.put_nowait(_END)

    async def _open_session(self) -> _Session:
        assert self.dispatch is not None
        call = self.dispatch.stub.DriverSession(
            timeout=self.fleet.horizon_s + 600, metadata=self._metadata()
        )
        s = _Session(call)
        s.reader = asyncio.create_task(self._read_session(s))
        self._session = s
        return s

    async def _close_session(self, *, polite: bool) -> None:
        s, self._session = self._session, None
        if s is None:
            return
        if polite and s.reader is not None and not s.reader.done():
            with contextlib.suppress(Exception):
                await self._act(s, go_offline=dispatch_pb2.GoOffline(), timeout_s=3.0, quiet=True)
            with contextlib.suppress(Exception):
                await s.call.done_writing()
        s.call.cancel()
        self.fleet.detach(s.reader)

    async def _act(
        self, s: _Session, *, timeout_s: float = 10.0, quiet: bool = False, **action: Any
    ) -> dispatch_pb2.DriverSessionResponse:
        """Sends one action and returns its answer (``state`` or ``action_rejected``)."""
        s.seq += 1
        fut: asyncio.Future[dispatch_pb2.DriverSessionResponse] = (
            asyncio.get_running_loop().create_future()
        )
        seq = s.seq
        s.pending[seq] = fut
        try:
            async with asyncio.timeout(timeout_s):
                await s.call.write(dispatch_pb2.DriverSessionRequest(seq=seq, **action))
                ev = await fut
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise _Lost() from exc
        except TimeoutError:
            if not quiet:
                self.fleet.stats.error("session_no_answer")
            raise _Lost() from None
        finally:
            s.pending.pop(seq, None)
        if ev.WhichOneof("event") == "state":
            self._status = ev.state.status
        return ev

    async def _next(self, s: _Session, timeout_s: float) -> Any:
        """The next unsolicited event, or None after ``timeout_s``; raises _Lost at the end."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                ev = await s.events.get()
        except TimeoutError:
            return None
        if ev is _END:
            await s.events.put(_END)  # every later reader sees the end too
            raise _Lost()
        return ev

    def _rejected(self, ev: dispatch_pb2.DriverSessionResponse, what: str) -> bool:
        if ev.WhichOneof("event") == "action_rejected":
            self.fleet.stats.error(f"{what}_{ev.action_rejected.code or 'REJECTED'}")
            return True
        return False

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
        self._online = True
        stats.drivers_online += 1
        if fleet.recorder is not None:
            fleet.recorder.courier_on(self.id, self.pos[0], self.pos[1], fleet.clock())
        self._loc_task = asyncio.create_task(self._location_loop())
        try:
            failures = 0
            while fleet.clock() < off_s and not fleet.stopping:
                if self.dispatch is None:
                    await self._wander_until(off_s)
                    continue
                try:
                    s = await self._open_session()
                    await self._work(s, off_s)
                    failures = 0
                except _Lost:
                    s_code = self._session.ended_code if self._session else None
                    if fleet.stopping:
                        pass
                    elif s_code is grpc.StatusCode.UNAVAILABLE:
                        # a rotated connection or a restarting server: open the session
                        # again, which resends the driver's current state
                        stats.inc("stream_reconnects")
                    else:
                        failures += 1
                        # ended by the server without an error: a restart, or replaced
                        stats.error(f"session_lost_{s_code.name if s_code else 'ended'}")
                finally:
                    await self._close_session(polite=fleet.clock() >= off_s)
                if fleet.clock() < off_s and not fleet.stopping:
                    await asyncio.sleep(min(30.0, 2.0**failures) * self.rng.uniform(0.5, 1.0))
        finally:
            self._online = False
            stats.drivers_online -= 1
            if fleet.recorder is not None:
                fleet.recorder.courier_off(self.id, fleet.clock())
            if self._loc_call is not None:
                self._loc_call.cancel()
            await stop_tasks([self._loc_task], timeout_s=3.0)

    async def leave(self) -> None:
        """Goes offline now (end of the run): a polite GoOffline, then the streams close."""
        self._online = False
        await self._close_session(polite=True)
        if self._loc_call is not None:
            with contextlib.suppress(Exception):
                await self._loc_call.done_writing()

    async def _wander_until(self, off_s: float) -> None:
        """Without Dispatch: park, now and then drive somewhere near, fixes all along."""
        while self.fleet.clock() < off_s and not self.fleet.stopping:
            self._maybe_reposition()
            await asyncio.sleep(
                min(max(0.0, off_s - self.fleet.clock()), self.rng.uniform(30, 120))
            )

    def _maybe_reposition(self) -> None:
        if self._leg is None and self.rng.random() < 0.25:
            a = self.rng.uniform(0, 2 * math.pi)
            r = self.rng.uniform(300, 1500)
            lat, lon = self.pos
            dest = (lat + r * math.sin(a) / 111_195.0,
                    lon + r * math.cos(a) / (111_195.0 * math.cos(math.radians(lat))))  # fmt: skip
            self._drive(dest, idle=True)
            self.fleet.stats.inc("repositions")

    async def _work(self, s: _Session, off_s: float) -> None:
        """One session: go available, take offers, deliver, until the shift ends."""
        stats = self.fleet.stats
        first = await self._next(s, 15.0)
        if first is None:
            stats.error("session_no_state")
            raise _Lost()
        if first.WhichOneof("event") == "state":
            self._status = first.state.status
            await self._resume(s, first.state)
        await self._available(s)
        next_probe = self.fleet.clock() + self.rng.uniform(10, 60)
        while self.fleet.clock() < off_s and not self.fleet.stopping:
            ev = await self._next(s, min(max(0.0, off_s - self.fleet.clock()), 20.0))
            if ev is None:
                self._maybe_reposition()
                if self.bad and self.fleet.clock() >= next_probe:
                    next_probe = self.fleet.clock() + self.rng.uniform(30, 90)
                    await self._garbage(s)
                continue
            await self._handle(s, ev)

    async def _handle(self, s: _Session, ev: dispatch_pb2.DriverSessionResponse) -> None:
        kind = ev.WhichOneof("event")
        if kind == "offer":
            await self._consider(s, ev.offer)
        elif kind == "assignment_confirmed":
            await self._deliver(s, ev.assignment_confirmed)
            await self._available(s)
        elif kind == "state":
            await self._resume(s, ev.state)
        elif kind == "session_replaced":
            raise _Lost()
        elif kind == "route_update":
            self.fleet.stats.inc("route_updates")
        elif kind == "offer_withdrawn":
            self.fleet.stats.inc("offers_withdrawn")

    async def _resume(self, s: _Session, state: dispatch_pb2.SessionState) -> None:
        """After a (re)connect: carry on with the delivery held, or weigh the offer held."""
        if state.assignment.order_id and state.assignment.status in _ACTIVE:
            await self._deliver(s, state.assignment)
        elif state.offer.offer_id:
            await self._consider(s, state.offer)

    async def _available(self, s: _Session) -> None:
        """Asks for offers, unless the last state says the driver is available already."""
        if self._status in (common_pb2.DRIVER_STATUS_AVAILABLE, common_pb2.DRIVER_STATUS_OFFERED):
            return
        for _ in range(3):
            ev = await self._act(s, go_available=dispatch_pb2.GoAvailable())
            if ev.WhichOneof("event") != "action_rejected":
                return
            if ev.action_rejected.code == "FAILED_PRECONDITION":
                # still holding something (an offer just arrived, a delivery left over from
                # an earlier run): the app shows it and asks again later, no error
                self.fleet.stats.inc("go_available_refused")
                return
            self._rejected(ev, "go_available")
            await asyncio.sleep(self.rng.uniform(2, 5))

    # ------------------------------------------------------------ offers

    async def _consider(self, s: _Session, offer: dispatch_pb2.Offer) -> None:
        stats = self.fleet.stats
        stats.inc("offers")
        if self._busy:
            ev = await self._act(s, reject_offer=dispatch_pb2.RejectOffer(
                offer_id=offer.offer_id, reason=dispatch_pb2.REJECT_REASON_OTHER))  # fmt: skip
            stats.inc("offers_rejected")
            return
        if self.rng.random() < 0.03:  # looks away: the offer lapses
            stats.inc("offers_ignored")
            return
        await asyncio.sleep(self.rng.uniform(1.0, 6.0))  # reading it
        p = acceptance_probability(self.spec.base_acceptance, offer.distance_miles,
                                   offer.expected_earnings.amount_minor)  # fmt: skip
        if self.rng.random() >= p:
            reason = (dispatch_pb2.REJECT_REASON_TOO_FAR if offer.distance_miles > 4
                      else dispatch_pb2.REJECT_REASON_LOW_PAY)  # fmt: skip
            ev = await self._act(s, reject_offer=dispatch_pb2.RejectOffer(
                offer_id=offer.offer_id, reason=reason))  # fmt: skip
            if not self._rejected(ev, "reject_offer"):
                stats.inc("offers_rejected")
            return
        ev = await self._act(s, accept_offer=dispatch_pb2.AcceptOffer(offer_id=offer.offer_id))
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
            nxt = await self._next(s, deadline - time.monotonic())
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

    async def _wait(self, s: _Session, seconds: float, order_id: str) -> None:
        """Lets ``seconds`` pass on a delivery, reacting to what the session says."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ev = await self._next(s, left)
            if ev is None:
                return
            kind = ev.WhichOneof("event")
            if kind == "order_cancelled" and ev.order_cancelled.order_id == order_id:
                raise _OrderGone()
            if kind == "state" and ev.state.assignment.order_id != order_id:
                raise _OrderGone()  # reassigned while we were away
            if kind == "offer":
                await self._consider(s, ev.offer)  # busy: declined at once
            elif kind == "session_replaced":
                raise _Lost()
            elif kind == "route_update":
                self.fleet.stats.inc("route_updates")

    async def _go(self, s: _Session, dest: LatLon, order_id: str) -> _Session:
        """Drives to ``dest``; a driver who goes silent comes back on a new session."""
        leg = self._drive(dest)
        if self.silent and not self._silenced and self.rng.random() < 0.5:
            self._silenced = True
            await self._wait(s, leg.duration_s * self.rng.uniform(0.1, 0.6), order_id)
            s = await self._go_silent(s, order_id)
        await self._wait(s, max(0.0, self._leg_t0 + leg.duration_s - time.monotonic()), order_id)
        self._leg, self.pos = None, leg.end
        return s

    async def _go_silent(self, s: _Session, order_id: str) -> _Session:
        """The phone loses the network: both streams drop, and come back 35 to 80 s later."""
        stats = self.fleet.stats
        stats.inc("went_silent")
        s.call.cancel()
        self.fleet.detach(s.reader)
        self._session = None
        self._online = False
        if self._loc_call is not None:
            self._loc_call.cancel()
        await stop_tasks([self._loc_task], timeout_s=2.0)
        await asyncio.sleep(self.rng.uniform(35.0, 80.0))
        self._online = True
        self._loc_task = asyncio.create_task(self._location_loop())
        s = await self._open_session()
        first = await self._next(s, 15.0)
        if first is None or first.WhichOneof("event") != "state":
            raise _Lost()
        if first.state.assignment.order_id != order_id:
            stats.inc("lost_after_silence")
            raise _OrderGone()
        return s

    async def _step(self, s: _Session, what: str, order_id: str) -> None:
        action: dict[str, Any] = {what: dispatch_pb2.OrderProgress(order_id=order_id)}
        for _ in range(5):
            ev = await self._act(s, **action)
            if ev.WhichOneof("event") != "action_rejected":
                return
            if ev.action_rejected.code != "UNAVAILABLE":  # "try again shortly": so we do
                break
            self.fleet.stats.inc("steps_retried")
            await self._wait(s, self.rng.uniform(1.0, 3.0), order_id)
        self._rejected(ev, what)
        raise _OrderGone()

    async def _deliver(self, s: _Session, a: dispatch_pb2.Assignment) -> None:
        stats = self.fleet.stats
        oid = a.order_id
        self._busy, self.order_id = True, oid
        stats.drivers_busy += 1
        stats.inc("assignments")
        stop = self.fleet.config.stop_s * self.fleet.router.travel_scale
        try:
            status = a.status
            if status <= AS.ASSIGNMENT_STATUS_ASSIGNED:
                s = await self._go(s, (a.pickup.location.lat, a.pickup.location.lon), oid)
                await self._step(s, "arrived_at_restaurant", oid)
            if status <= AS.ASSIGNMENT_STATUS_AT_RESTAURANT:
                await self._wait(s, stop / 2, oid)
                await self._pick_up(s, a)
            if status <= AS.ASSIGNMENT_STATUS_PICKED_UP:
                s = await self._go(s, (a.dropoff.location.lat, a.dropoff.location.lon), oid)
                await self._step(s, "arrived_at_customer", oid)
            await self._wait(s, stop / 2, oid)
            photo = f"photo-{oid}-{self.rng.randrange(10**6):06d}"
            pin = await self.fleet.pin_of(oid, self.id)  # the customer at the door tells it
            # Left at the door (nobody to tell a PIN): a photo of it is the proof.
            proof = (dispatch_pb2.Delivered(order_id=oid, pin=pin) if pin
                     else dispatch_pb2.Delivered(order_id=oid, photo_id=photo))  # fmt: skip
            ev = await self._act(s, delivered=proof)
            if not self._rejected(ev, "delivered"):
                stats.inc("delivered")
        except _OrderGone:
            stats.inc("deliveries_abandoned")
        finally:
            self._busy, self.order_id = False, ""
            stats.drivers_busy -= 1

    async def _pick_up(self, s: _Session, a: dispatch_pb2.Assignment) -> None:
        """Waits at the counter until the food is there, then picks it up.

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
        give_up = time.monotonic() + 2 * 3600
        while time.monotonic() < give_up:
            ev = await self._act(s, picked_up=dispatch_pb2.OrderProgress(order_id=a.order_id))
            if ev.WhichOneof("event") != "action_rejected":
                stats.inc("picked")
                return
            if ev.action_rejected.code != "FAILED_PRECONDITION":
                self._rejected(ev, "picked_up")
                raise _OrderGone()
            stats.inc("waits_for_food")
            wait = 10.0
            if a.HasField("ready_time"):
                wait = a.ready_time.ToNanoseconds() / 1e9 - time.time()
            await self._wait(s, min(15.0, max(2.0, wait)), a.order_id)
        raise _OrderGone()

    # ------------------------------------------------------------ mischief

    async def _garbage(self, s: _Session) -> None:
        """A bad actor's app sends an action that makes no sense; it must be refused."""
        stats = self.fleet.stats
        kind = self.rng.choice(("unknown_offer", "not_my_order", "empty_delivered", "no_action"))
        actions: dict[str, dict[str, Any]] = {
            "unknown_offer": {"accept_offer": dispatch_pb2.AcceptOffer(offer_id="off-bogus")},
            "not_my_order": {"picked_up": dispatch_pb2.OrderProgress(order_id="ord-not-mine")},
            "empty_delivered": {"delivered": dispatch_pb2.Delivered(order_id="")},
            "no_action": {},
        }
        try:
            ev = await self._act(s, timeout_s=10.0, **actions[kind])
        except _Lost:
            code = s.ended_code
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                stats.defended[f"garbage_{kind}"] += 1
            elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                stats.breached[f"garbage_{kind}_{code.name}"] += 1
            else:  # no answer, or the service is down: says nothing about the probe
                stats.error(f"garbage_{kind}_unanswered")
            raise
        answer = ev.action_rejected.code if ev.WhichOneof("event") == "action_rejected" else ""
        if answer == "UNAVAILABLE":
            stats.error(f"garbage_{kind}_unanswered")
        elif answer and answer not in ("INTERNAL", "UNKNOWN"):
            stats.defended[f"garbage_{kind}"] += 1
        else:  # accepted, or refused as a bug
            stats.breached[f"garbage_{kind}{'_' + answer if answer else '_accepted'}"] += 1
