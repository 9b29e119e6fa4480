"""Who confirms a new order, and by when: a restaurant's auto-confirm and its timeout. Pure.

Every placed order gets a durable confirmation deadline when it is written
(``orders.confirm_deadlines``, in the same statement as the order). With auto-confirm
on, and the restaurant's local time inside one of its windows (all day when none is
given), the deadline is due at once and the sweeper confirms the order for the
restaurant; otherwise it is due ``timeout`` after the order reaches the kitchen, and
the sweeper cancels the order with a full refund unless the restaurant confirmed it
first. A scheduled order reaches the kitchen at its release time, not at placement.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "ConfirmPlan",
    "ConfirmSettings",
    "auto_confirm_at",
    "plan_confirm",
    "timeout_reason",
]

#: How long an order waits for its restaurant by default (the service's setting wins).
DEFAULT_TIMEOUT_S = 300
#: The longest a restaurant may make its customers wait.
MAX_TIMEOUT_S = 3600
#: The ``cancellation_reason`` of an order its restaurant never confirmed.
TIMEOUT_CODE = "confirm_timeout"


@dataclass(frozen=True, slots=True)
class ConfirmSettings:
    """A restaurant's order-taking settings (defaults: manual, the service's timeout)."""

    restaurant_id: str
    auto_confirm: bool = False
    #: ``(start_minute, end_minute)`` windows of local time; empty: all day.
    hours: tuple[tuple[int, int], ...] = ()
    #: 0: the service's default.
    timeout_s: int = 0


@dataclass(frozen=True, slots=True)
class ConfirmPlan:
    """The deadline written with a new order."""

    due_at: dt.datetime
    auto: bool
    timeout_s: int


def auto_confirm_at(s: ConfirmSettings, when: dt.datetime, time_zone: str) -> bool:
    """True when ``s`` confirms by itself at ``when`` (the restaurant's local time)."""
    if not s.auto_confirm:
        return False
    if not s.hours:
        return True
    try:
        local = when.astimezone(zoneinfo.ZoneInfo(time_zone or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        local = when.astimezone(dt.UTC)
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in s.hours)


def plan_confirm(
    s: ConfirmSettings,
    *,
    now: dt.datetime,
    time_zone: str,
    release_at: dt.datetime | None,
    default_timeout_s: float,
) -> ConfirmPlan:
    """The confirmation deadline of an order placed ``now`` (released at ``release_at``)."""
    reaches_kitchen = max(release_at, now) if release_at is not None else now
    timeout = s.timeout_s or int(default_timeout_s) or DEFAULT_TIMEOUT_S
    timeout = max(1, min(MAX_TIMEOUT_S, timeout))
    if auto_confirm_at(s, reaches_kitchen, time_zone):
        return ConfirmPlan(reaches_kitchen, True, timeout)
    return ConfirmPlan(reaches_kitchen + dt.timedelta(seconds=timeout), False, timeout)


def timeout_reason(timeout_s: int) -> str:
    """What the customer is told when the restaurant did not confirm in time."""
    if timeout_s % 60 == 0:
        span = f"{timeout_s // 60} min"
    else:
        span = f"{timeout_s} s"
    return f"the restaurant did not confirm the order within {span}"
