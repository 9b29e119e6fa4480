"""The outbox relay of the Order service: the runtime's, made to publish in batches."""

from __future__ import annotations

import asyncio
from typing import Any

from servers.runtime.outbox import OutboxRelay

__all__ = ["GatheringRelay"]


class GatheringRelay(OutboxRelay):
    """An ``OutboxRelay`` that, after a pass that emptied the outbox, waits ``gather_s``.

    Under load the runtime's relay starts a new pass as soon as one ends, each
    publishing the one or two orders committed meanwhile: a transaction (four round
    trips) per order or two, on the same pool and CPU as PlaceOrder. Waiting a few
    milliseconds lets a batch gather instead. An idle relay still publishes the
    first order at once (``poke``); the next ones wait at most ``gather_s`` longer.
    """

    def __init__(self, *args: Any, gather_s: float = 0.02, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gather_s = gather_s

    async def relay_once(self) -> int:
        n = await super().relay_once()
        if 0 < n < self.batch and self.gather_s > 0:
            await asyncio.sleep(self.gather_s)
        return n
