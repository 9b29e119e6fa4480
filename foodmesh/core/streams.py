"""How many streams one caller holds open: per method (or route), and per order.

One counter for the services' runtime (a refused stream is RESOURCE_EXHAUSTED) and the
gateway (429 with Retry-After). Counted in the process: each replica bounds what it serves
or relays. A limit of 0 is no limit.
"""

from __future__ import annotations

from collections.abc import Callable

from foodmesh.core.errors import ResourceExhausted

__all__ = ["StreamSlots", "TooManyStreams"]


class TooManyStreams(ResourceExhausted):
    """A caller is at one of its stream limits; the message says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="TOO_MANY_STREAMS")


class StreamSlots:
    """Counts each caller's open streams; a stream past a limit raises :class:`TooManyStreams`.

    ``unit`` names what ``take``'s first argument is ("method" in a service, "route" in the
    gateway), for the error message.
    """

    def __init__(self, *, per_caller: int = 8, per_order: int = 4, unit: str = "method") -> None:
        self.per_caller = per_caller
        self.per_order = per_order
        self.unit = unit
        self._open: dict[tuple[str, ...], int] = {}

    def take(self, name: str, caller: str, order_id: str = "") -> Callable[[], None]:
        """Takes a slot for ``caller`` on ``name`` (and on ``order_id``); returns its release,
        which may be called any number of times."""
        keys: list[tuple[tuple[str, ...], int, str]] = [
            ((name, caller), self.per_caller, f"streams of this {self.unit}"),
        ]
        if order_id:
            keys.append(((caller, "order", order_id), self.per_order, "streams of this order"))
        for key, limit, what in keys:
            if limit > 0 and self._open.get(key, 0) >= limit:
                raise TooManyStreams(
                    f"this caller already has {limit} {what} open; close one first"
                )
        for key, _, _ in keys:
            self._open[key] = self._open.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for key, _, _ in keys:
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]

        return release

    def open_streams(self, name: str, caller: str) -> int:
        """How many streams ``caller`` holds open on ``name``."""
        return self._open.get((name, caller), 0)
