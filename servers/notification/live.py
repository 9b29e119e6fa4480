"""The live in-app feed: new inbox notifications to the streams open on this replica.

Whichever replica records a notification publishes it on core NATS
(``notifications.v1.inbox.<recipient>``); each replica follows them all and hands each to
the streams its recipients hold here. A stream that falls behind drops its oldest: the
inbox keeps everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from foodmesh.core.events import NOTIFICATION_INBOX
from foodmesh.core.nats import Subjects
from foodmesh.core.tasks import stop_tasks
from foodmesh.v1 import notification_pb2 as pb
from servers.runtime.retry import retry

__all__ = ["LiveInbox"]

_log = logging.getLogger("foodmesh.notification.live")


class LiveInbox:
    def __init__(self, nats: Callable[[], NATS], subjects: Subjects, *, backlog: int = 100):
        self._nats = nats
        self.subjects = subjects
        self.backlog = backlog
        self._watchers: dict[str, set[asyncio.Queue[pb.Notification]]] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="notification-live")

    async def _follow(self) -> None:
        async def subscribe() -> Subscription:
            return await self._nats().subscribe(
                self.subjects.subject(NOTIFICATION_INBOX.any), cb=self._on_msg
            )

        self._sub = await retry("following new notifications", subscribe, first_s=0.25,
                                max_s=1.0, quiet_s=5.0, log=_log)  # fmt: skip

    async def _on_msg(self, msg: Msg) -> None:
        recipient = msg.subject.rsplit(".", 1)[-1]
        queues = self._watchers.get(recipient)
        if not queues:
            return
        n = pb.Notification.FromString(msg.data)
        for q in queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(n)

    @contextlib.contextmanager
    def watch(self, recipient: str) -> Iterator[asyncio.Queue[pb.Notification]]:
        """A queue of ``recipient``'s new notifications while the block runs."""
        q: asyncio.Queue[pb.Notification] = asyncio.Queue(self.backlog)
        self._watchers.setdefault(recipient, set()).add(q)
        try:
            yield q
        finally:
            left = self._watchers.get(recipient)
            if left is not None:
                left.discard(q)
                if not left:
                    del self._watchers[recipient]

    async def stop(self) -> None:
        await stop_tasks([self._task])
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._sub.unsubscribe()
            self._sub = None
