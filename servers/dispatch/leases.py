"""Region leadership: one lease per region in a NATS KV bucket whose keys expire.

A replica leads a region while it holds the key ``<region>`` of the bucket: it
creates the key (only possible when nobody holds it) and rewrites it every
``lease_s / 3`` with compare-and-set on the revision it last wrote. The bucket's
TTL is ``lease_s``, so a lease whose holder died lapses on its own and another
replica takes the region over within one lease period. Leadership only decides
who does the work; the invariants hold in PostgreSQL even while two replicas
briefly both believe they lead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.js.kv import KeyValue

from servers.dispatch.metrics import REGION_LEADER

__all__ = ["Leases"]

_log = logging.getLogger("foodmesh.dispatch.leases")


class Leases:
    """The regions this replica leads, acquired and renewed through compare-and-set."""

    def __init__(self, kv: Callable[[], Awaitable[KeyValue]], *, owner: str) -> None:
        self._kv = kv
        self.owner = owner
        self._held: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def claim(self, region: str) -> bool:
        """Acquires or renews the lease on ``region``; True while this replica leads it."""
        async with self._lock:  # the batch loop and the renewal loop both claim
            had = region in self._held
            ok = await self._claim(region)
        if ok or had:  # a region this replica never led has no series here
            REGION_LEADER.labels(region).set(1.0 if ok else 0.0)
        return ok

    async def _claim(self, region: str) -> bool:
        kv = await self._kv()
        me = self.owner.encode()
        rev = self._held.get(region)
        if rev is not None:
            try:
                self._held[region] = await kv.update(region, me, last=rev)
                return True
            except Exception as exc:  # someone else wrote it, or it lapsed: try afresh
                self._held.pop(region, None)
                _log.info("lost the lease of region %s (%r)", region, exc)
        try:
            self._held[region] = await kv.create(region, me)
            _log.info("leading region %s", region)
            return True
        except Exception:
            pass
        try:
            entry = await kv.get(region)
        except Exception:
            return False
        if entry.value == me and entry.revision is not None:
            # Ours from before a hiccup: carry on with the current revision.
            try:
                self._held[region] = await kv.update(region, me, last=entry.revision)
                return True
            except Exception:
                return False
        return False

    async def release_all(self) -> None:
        """Gives up every lease (a clean shutdown hands regions over at once)."""
        if not self._held:
            return
        try:
            kv = await self._kv()
        except Exception:
            for region in self._held:
                REGION_LEADER.labels(region).set(0.0)
            self._held.clear()
            return
        for region, rev in list(self._held.items()):
            try:
                await kv.delete(region, last=rev)
            except Exception as exc:
                _log.debug("releasing region %s: %s", region, exc)
            REGION_LEADER.labels(region).set(0.0)
        self._held.clear()

    def forget(self, region: str) -> None:
        if self._held.pop(region, None) is not None:
            REGION_LEADER.labels(region).set(0.0)
