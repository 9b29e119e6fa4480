"""Sends what is queued: claims due deliveries, sends each on its channel, records the outcome.

A sender renews the leases of the sends it has under way (every third of a lease), so
only a sender that died loses its claims; outcomes are recorded by group commit: a flush
starts as soon as an outcome is there, and the outcomes that come while its statement
runs go together in the next one (one transaction each). No wait is added before a flush:
every millisecond between a message reaching its receiver and its outcome committing is
a millisecond in which a kill makes it a resend (``in doubt``), so that window is only the
send's own answer and one commit. A failed attempt is
queued again after a backoff (1 s, 2 s, 4 s... up to ``max_backoff_s``); after
``max_attempts`` it fails for good and is a dead letter that ops list. A delivery
claimed by a sender that died mid-send is taken again when its lease lapses (``in
doubt``: sent again with the same identity, see ``channels``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping

from foodmesh.core.tasks import stop_tasks
from servers.notification.channels import Channel, Permanent
from servers.notification.metrics import ATTEMPTS, IN_DOUBT, SEND_SECONDS
from servers.notification.store import Claimed, NotificationStore

__all__ = ["Sender", "backoff_s"]

_log = logging.getLogger("foodmesh.notification.sender")


def backoff_s(attempts: int, *, base_s: float = 1.0, max_s: float = 300.0) -> float:
    """The wait before attempt ``attempts + 1``: doubling from ``base_s``, capped."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


class Sender:
    def __init__(
        self,
        store: NotificationStore,
        channels: Mapping[str, Channel],
        *,
        batch: int = 128,
        concurrency: int = 64,
        lease_s: float = 30.0,
        max_attempts: int = 6,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        idle_s: float = 1.0,
        settle_window_s: float = 0.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.channels = channels
        self.batch = batch
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_s = idle_s
        self.settle_window_s = settle_window_s
        self.clock = clock
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renew: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        #: Deliveries claimed and not settled yet: their leases are renewed.
        self._holding: set[str] = set()
        self._outcomes: list[tuple[str, str, str]] = []
        #: The earliest retry this sender queued since it last looked.
        self._soonest: dt.datetime | None = None
        self._flushing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-sender")
        self._renew = asyncio.create_task(self._renew_leases(), name="notification-leases")

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.store.extend(sorted(self._holding), lease_s=self.lease_s)
            except Exception as exc:  # PostgreSQL away: the next round tries again
                _log.debug("renewing leases failed: %s", exc)

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops claiming; lets the sends under way finish within ``grace_s``."""
        await stop_tasks([self._task])
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*self._inflight, return_exceptions=True)
        await stop_tasks([*self._inflight, self._renew])
        for ch in self.channels.values():
            with contextlib.suppress(Exception):
                await ch.close()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            # Only what can start now: a claim waiting for a free slot is one more send in
            # doubt should this process die.
            free = min(self.batch, self.concurrency - len(self._inflight))
            if free <= 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claimed = await self.store.claim(free, lease_s=self.lease_s)
            except Exception as exc:  # PostgreSQL away: try again shortly
                _log.debug("claim failed: %s", exc)
                claimed = []
                await asyncio.sleep(0.5)
            self._holding.update(c.delivery_id for c in claimed)
            for c in claimed:
                await self._slots.acquire()
                t = asyncio.create_task(self._one(c))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
            if len(claimed) < free:
                # Until something is queued, a retry of ours is due, or the idle poll (for
                # other replicas' retries and lapsed leases).
                wait = self.idle_s
                if self._soonest is not None:
                    wait = min(wait, max(0.0, (self._soonest - self.clock()).total_seconds()))
                    self._soonest = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()

    async def _one(self, c: Claimed) -> None:
        try:
            await self._send(c)
        finally:
            self._holding.discard(c.delivery_id)
            self._slots.release()

    async def _send(self, c: Claimed) -> None:
        if c.in_doubt:
            IN_DOUBT.labels(c.channel).inc()
            _log.info("delivery %s was being sent when its sender stopped: sending it again "
                      "with the same identity", c.delivery_id)  # fmt: skip
        channel = self.channels.get(c.channel)
        t0 = time.perf_counter()
        outcome = "failed"
        try:
            if channel is None:
                raise Permanent(f"channel {c.channel} is not configured")
            state = await channel.send(c)
            outcome = state
            await self._settle(c, state, "")
        except Permanent as exc:
            await self._settle(c, "failed", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            outcome = "retry"
            if c.attempts >= self.max_attempts:
                outcome = "failed"
                await self._settle(c, "failed", f"after {c.attempts} attempts: {reason}")
            else:
                wait = backoff_s(c.attempts, base_s=self.base_backoff_s, max_s=self.max_backoff_s)
                when = self.clock() + dt.timedelta(seconds=wait)
                with contextlib.suppress(Exception):  # else the lease lapses and it is retried
                    await self.store.retry_at(c.delivery_id, when, reason)
                    self._soonest = when if self._soonest is None else min(self._soonest, when)
        finally:
            ATTEMPTS.labels(c.channel, outcome).inc()
            SEND_SECONDS.labels(c.channel).observe(time.perf_counter() - t0)

    async def _settle(self, c: Claimed, state: str, reason: str) -> None:
        """Records an outcome with the others of the moment (one transaction for them all)."""
        self._outcomes.append((c.delivery_id, state, reason))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        # The sends finishing in this same loop turn join this statement; those finishing
        # while it runs join the next. (A window here batched more, but each of its ms
        # was one more resend after a kill: 25 ms at 400 sends/s made 10 per kill.)
        await asyncio.sleep(self.settle_window_s)
        failures = 0
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self.store.settle_many(batch)
            except Exception as exc:
                failures += 1
                _log.debug("recording %d outcomes failed: %s", len(batch), exc)
                if failures >= 3:
                    # Given up: their leases lapse and they are sent again (in doubt), so
                    # nothing is lost; the receivers know them by their identity.
                    return
                self._outcomes = batch + self._outcomes
                await asyncio.sleep(0.2)
