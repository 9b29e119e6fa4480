"""Per-call context visible to service code: request id and the call's deadline."""

from __future__ import annotations

import asyncio
import contextvars
import logging

__all__ = ["RequestIdFilter", "current_request_id", "time_left"]

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


def current_request_id() -> str:
    """The id of the RPC being handled (``-`` outside one)."""
    return _request_id.get()


def time_left(default: float = 5.0) -> float:
    """Seconds left before the current call's deadline; pass it on as a downstream timeout.

    Outside a call returns ``default``. Never negative: a passed deadline gives 0.
    """
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - asyncio.get_running_loop().time())


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record so log lines join up with error replies."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True
