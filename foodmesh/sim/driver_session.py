"""Simulated drivers' streams: Dispatch's DriverSession and Location's StreamLocations.

:class:`Session` speaks the work session's protocol: numbered actions, each
answered once (``ack_seq``), and unsolicited events in between. :class:`LocationFeed`
keeps StreamLocations open while the driver is online, at the pace the server asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from clients import DispatchClient, LocationClient
from foodmesh.core.tasks import stop_tasks
from foodmesh.sim.agents import Stats
from foodmesh.sim.driver_motion import MPS_TO_MPH, Motion
from foodmesh.v1 import dispatch_pb2, location_pb2

if TYPE_CHECKING:
    from foodmesh.sim.driver_mischief import Mischief

__all__ = ["END", "LocationFeed", "Metadata", "Session", "SessionLost"]

Metadata = Callable[[], tuple[tuple[str, str], ...]]
#: Keeps a finishing stream reader alive until it ends (the fleet reaps it at the end).
Detach = Callable[["asyncio.Task[None] | None"], None]


class SessionLost(Exception):
    """The work session ended under us (the server closed it, or it was replaced)."""


END: Any = object()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass(slots=True)
class Session:
    """One DriverSession stream: actions out and their answers, events in."""

    call: Any
    stats: Stats
    #: Told the driver's status from every ``state`` answering an action.
    on_status: Callable[[int], None]
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    pending: dict[int, asyncio.Future[dispatch_pb2.DriverSessionResponse]] = field(
        default_factory=dict
    )
    reader: asyncio.Task[None] | None = None
    seq: int = 0
    ended_code: grpc.StatusCode | None = None

    @classmethod
    def open(
        cls,
        dispatch: DispatchClient,
        *,
        metadata: Metadata,
        timeout_s: float,
        stats: Stats,
        on_status: Callable[[int], None],
    ) -> Session:
        call = dispatch.stub.DriverSession(timeout=timeout_s, metadata=metadata())
        s = cls(call, stats, on_status)
        s.reader = asyncio.create_task(s._read())
        return s

    async def _read(self) -> None:
        try:
            async for ev in self.call:
                if ev.ack_seq:
                    # An answer: the first one goes to whoever acted (an accepted offer
                    # answers assignment_confirmed, then state); later state refreshes
                    # of an answered action are stale and dropped.
                    fut = self.pending.pop(ev.ack_seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(ev)
                        continue
                    if ev.WhichOneof("event") in ("state", "action_rejected"):
                        continue
                await self.events.put(ev)
        except grpc.aio.AioRpcError as exc:
            self.ended_code = exc.code()
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(SessionLost())
                    fut.add_done_callback(_retrieved)  # whoever waited may be gone
            self.pending.clear()
            self.events.put_nowait(END)

    async def act(
        self, *, timeout_s: float = 10.0, quiet: bool = False, **action: Any
    ) -> dispatch_pb2.DriverSessionResponse:
        """Sends one action and returns its answer (``state`` or ``action_rejected``)."""
        self.seq += 1
        fut: asyncio.Future[dispatch_pb2.DriverSessionResponse] = (
            asyncio.get_running_loop().create_future()
        )
        seq = self.seq
        self.pending[seq] = fut
        try:
            async with asyncio.timeout(timeout_s):
                await self.call.write(dispatch_pb2.DriverSessionRequest(seq=seq, **action))
                ev = await fut
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise SessionLost() from exc
        except TimeoutError:
            if not quiet:
                self.stats.error("session_no_answer")
            raise SessionLost() from None
        finally:
            self.pending.pop(seq, None)
        if ev.WhichOneof("event") == "state":
            self.on_status(ev.state.status)
        return ev

    async def next(self, timeout_s: float) -> Any:
        """The next unsolicited event, or None after ``timeout_s``; SessionLost at the end."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                ev = await self.events.get()
        except TimeoutError:
            return None
        if ev is END:
            await self.events.put(END)  # every later reader sees the end too
            raise SessionLost()
        return ev

    def rejected(self, ev: dispatch_pb2.DriverSessionResponse, what: str) -> bool:
        """Whether the action was refused (counted as an error of ``what``)."""
        if ev.WhichOneof("event") == "action_rejected":
            self.stats.error(f"{what}_{ev.action_rejected.code or 'REJECTED'}")
            return True
        return False

    async def close(self, *, polite: bool, detach: Detach) -> None:
        """Ends the stream; ``polite`` says GoOffline first (the end of a shift)."""
        if polite and self.reader is not None and not self.reader.done():
            with contextlib.suppress(Exception):
                await self.act(go_offline=dispatch_pb2.GoOffline(), timeout_s=3.0, quiet=True)
            with contextlib.suppress(Exception):
                await self.call.done_writing()
        self.drop(detach)

    def drop(self, detach: Detach) -> None:
        """Cuts the stream at once (the phone lost the network)."""
        self.call.cancel()
        detach(self.reader)


class LocationFeed:
    """StreamLocations while the driver is online: a fix every few seconds, acks read."""

    def __init__(
        self,
        client: LocationClient,
        *,
        motion: Motion,
        mischief: Mischief,
        stats: Stats,
        rng: random.Random,
        metadata: Metadata,
        timeout_s: float,
        detach: Detach,
    ) -> None:
        self.client = client
        self.motion = motion
        self.mischief = mischief
        self.stats = stats
        self.rng = rng
        self.metadata = metadata
        self.timeout_s = timeout_s
        self.detach = detach
        self.online = False
        self.server_interval = 5.0
        self.fix_seq = 0
        self.call: Any = None
        self.task: asyncio.Task[None] | None = None
        #: When each write's last fix went out (only while a soak observes acks).
        self.sent_at: dict[int, float] = {}

    def start(self) -> None:
        self.online = True
        self.task = asyncio.create_task(self._loop())

    async def stop(self, *, timeout_s: float) -> None:
        """Goes offline: the stream is cut and its task stopped."""
        self.online = False
        if self.call is not None:
            self.call.cancel()
        await stop_tasks([self.task], timeout_s=timeout_s)

    async def finish(self) -> None:
        """Goes offline politely (the end of the run): the stream is closed for writing."""
        self.online = False
        if self.call is not None:
            with contextlib.suppress(Exception):
                await self.call.done_writing()

    def fix(self, lat: float, lon: float, heading: float, moving: bool) -> location_pb2.LocationFix:
        self.fix_seq += 1
        speed = self.motion.speed_mps(moving)
        f = location_pb2.LocationFix(
            lat=round(lat + self.rng.gauss(0, 2e-5), 7),
            lon=round(lon + self.rng.gauss(0, 2e-5), 7),
            accuracy=round(self.rng.uniform(3.0, 15.0), 1), heading=round(heading, 1) % 360.0,
            speed=round(min(speed * MPS_TO_MPH, 80.0), 1), seq=self.fix_seq,
        )  # fmt: skip
        f.timestamp.FromNanoseconds(time.time_ns())
        return f

    async def _read_acks(self, call: Any) -> None:
        stats = self.stats
        async for ack in call:
            stats.inc("fixes_accepted", ack.accepted)
            rejected = set()
            for r in ack.rejections:
                rejected.add(r.seq)
                if not self.mischief.refused(r.seq):
                    stats.error("fix_" + location_pb2.FixRejectionReason.Name(r.reason).lower()
                                .removeprefix("fix_rejection_reason_"))  # fmt: skip
            self.mischief.acked(ack.acked_seq, rejected)
            if stats.observe is not None and self.sent_at:
                now = time.perf_counter()
                for seq in [q for q in self.sent_at if q <= ack.acked_seq]:
                    stats.observe("STREAM", "location_ack", 200, now - self.sent_at.pop(seq), {})
            if ack.HasField("next_interval"):
                iv = ack.next_interval.seconds + ack.next_interval.nanos / 1e9
                self.server_interval = min(60.0, max(1.0, iv))

    async def _loop(self) -> None:
        """Keeps StreamLocations open while online, sending fixes at the pace asked."""
        stats = self.stats
        failures = 0
        while self.online:
            call = self.client.stub.StreamLocations(timeout=self.timeout_s,
                                                    metadata=self.metadata())  # fmt: skip
            self.call = call
            reader = asyncio.create_task(self._read_acks(call))
            try:
                while self.online and not reader.done():
                    lat, lon, heading, moving = self.motion.where()
                    fixes = [self.fix(lat, lon, heading, moving)]
                    if self.mischief.sends_malformed(self.fix_seq):
                        wlat, wlon, wheading, _ = self.motion.where()
                        fixes.insert(0, self.mischief.malformed(self.fix(wlat, wlon, wheading,
                                                                         False)))  # fmt: skip
                    async with asyncio.timeout(10.0):  # a stalled stream is a broken one
                        await call.write(location_pb2.StreamLocationsRequest(fixes=fixes))
                    stats.inc("fixes_sent", len(fixes))
                    if stats.observe is not None:
                        self.sent_at[self.fix_seq] = time.perf_counter()
                    limit = 5.0 if moving else 20.0  # parked: still inside presence's 30 s
                    await asyncio.sleep(
                        min(limit, self.server_interval) * self.rng.uniform(0.9, 1.1)
                    )
                    failures = 0
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            except TimeoutError:
                failures += 1
                stats.error("location_write_stalled")
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if self.online and code is grpc.StatusCode.UNAVAILABLE:
                    # The server rotates connections (max connection age) or restarts:
                    # routine for a long stream, which an app simply opens again.
                    stats.inc("stream_reconnects")
                elif self.online and code is not grpc.StatusCode.CANCELLED:
                    failures += 1
                    stats.error(f"location_{code.name if code else 'closed'}")
                    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                        self.mischief.stream_broke()
            finally:
                if stats.observe is not None and self.online:  # never acknowledged: failed
                    now = time.perf_counter()
                    for sent in self.sent_at.values():
                        stats.observe("STREAM", "location_ack", 0, now - sent, {})
                self.sent_at.clear()
                # The reader ends with the call; nobody waits for it here (thousands of
                # streams may end at once when a server dies), the fleet reaps it at the end.
                call.cancel()
                self.detach(reader)
            if self.online:
                await asyncio.sleep(min(30.0, 1.0 * 2**failures) * self.rng.uniform(0.5, 1.0))
