"""Drivers' open sessions on this replica, and delivery of events to them from any replica.

Whoever decides something for a driver (the region leader making an offer, the
expiry sweep, a cancellation) calls :meth:`SessionHub.push`. If the driver's
session is on this replica the event goes straight into its queue; otherwise it
is published on core NATS ``dispatch.v1.session.<driver>``, which every replica
listens to and hands to the session if it holds it. A lost push is never lost
state: the driver's state is in PostgreSQL and is sent again on reconnect, and an
unanswered offer simply lapses.

One session per driver: opening a second (here or on another replica, announced
with a ``Replace`` header) ends the first with ``SessionReplaced``. Each session's
queue is bounded; a driver that does not read is dropped, and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from foodmesh.core.events import DRIVER_SESSIONS
from foodmesh.core.nats import Subjects
from foodmesh.v1 import dispatch_pb2

__all__ = ["Session", "SessionHub"]

_log = logging.getLogger("foodmesh.dispatch.sessions")
_QUEUE = 256
_REPLACE = "Replace"


@dataclass(eq=False, slots=True)
class Session:
    driver_id: str
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    queue: asyncio.Queue[dispatch_pb2.DriverSessionResponse | None] = field(
        default_factory=lambda: asyncio.Queue(_QUEUE)
    )
    closed: bool = False

    def put(self, msg: dispatch_pb2.DriverSessionResponse | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            _log.warning("driver %s is not reading its session: dropping it", self.driver_id)
            self.end()

    def end(self) -> None:
        """Ends the stream after what is queued (or at once if the queue is full)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class SessionHub:
    """The sessions of this replica, by driver."""

    def __init__(self, nats: Callable[[], NATS], subjects: Subjects) -> None:
        self._nats = nats
        self._subjects = subjects
        self.local: dict[str, Session] = {}
        self._sub: Subscription | None = None
        self._subscribing = asyncio.Lock()

    def _subject(self, driver_id: str) -> str:
        return self._subjects.subject(DRIVER_SESSIONS.subject(driver_id))

    async def listen(self) -> None:
        """Subscribes to pushes for every driver (call once NATS is up).

        Returns once the NATS server has the subscription (a flush), so a push that
        another replica publishes after this returns reaches this replica's sessions.
        """
        async with self._subscribing:
            if self._sub is None:
                nc = self._nats()
                self._sub = await nc.subscribe(
                    self._subjects.subject(DRIVER_SESSIONS.any), cb=self._on_msg
                )
                await nc.flush(timeout=2)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for s in list(self.local.values()):
            s.end()

    async def _on_msg(self, msg: Msg) -> None:
        driver_id = msg.subject.rsplit(".", 1)[-1]
        s = self.local.get(driver_id)
        if s is None:
            return
        replacing = (msg.headers or {}).get(_REPLACE)
        if replacing is not None:
            if replacing != s.session_id:
                self._replace(s)
            return
        resp = dispatch_pb2.DriverSessionResponse()
        try:
            resp.ParseFromString(msg.data)
        except Exception:
            return
        s.put(resp)

    def _replace(self, old: Session) -> None:
        old.put(dispatch_pb2.DriverSessionResponse(session_replaced=dispatch_pb2.SessionReplaced()))
        old.end()
        if self.local.get(old.driver_id) is old:
            del self.local[old.driver_id]

    async def open(self, driver_id: str) -> Session:
        """A new session for the driver; an older one, here or elsewhere, is replaced."""
        if self._sub is None:  # a session opened right after start: hear its pushes first
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.listen()
        s = Session(driver_id)
        old = self.local.get(driver_id)
        if old is not None:
            self._replace(old)
        self.local[driver_id] = s
        with contextlib.suppress(Exception):
            await self._nats().publish(
                self._subject(driver_id), b"", headers={_REPLACE: s.session_id}
            )
        return s

    def close(self, s: Session) -> None:
        s.closed = True
        if self.local.get(s.driver_id) is s:
            del self.local[s.driver_id]

    async def push(self, driver_id: str, msg: dispatch_pb2.DriverSessionResponse) -> None:
        s = self.local.get(driver_id)
        if s is not None:
            s.put(msg)
            return
        try:
            await self._nats().publish(self._subject(driver_id), msg.SerializeToString())
        except Exception as exc:  # the offer lapses or the state is resent on reconnect
            _log.debug("push to driver %s not delivered: %s", driver_id, exc)
