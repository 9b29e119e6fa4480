"""Order events that change no status, for the people waiting on the order (Notification).

- ``orders.v1.confirm_due_soon``: an order its restaurant has not confirmed when
  ``WARN_AT`` (80 %) of its confirmation timeout has passed; the restaurant is warned
  once, before the sweeper cancels it (``deadlines.py``). One replica takes each
  deadline row (``FOR UPDATE SKIP LOCKED``) and commits the event with the row's
  ``warned`` flag: once, whatever restarts.
- ``orders.v1.delayed``: a stage's new estimate (``eta_stages.py``) lands more than
  ``DELAY_NOTICE_S`` (10 min) after the delivery time promised at placement, when the
  estimate before it did not; the event commits with the estimate.

Neither adds a timeline entry: the order's own history does not change. Each event's
id is ``<order>.<kind>`` (the outbox keeps one per id), so an order is warned, and
said to be late, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection

from foodmesh.core.events import EVENT_CONFIRM_DUE_SOON, ORDER_EVENTS
from foodmesh.core.nats import Subjects
from foodmesh.v1 import order_pb2
from servers.order import convert
from servers.order.model import Order
from servers.order.transitions import Status
from servers.runtime.outbox import OutboxEvent, enqueue_event

__all__ = [
    "DELAY_NOTICE_S",
    "WARN_AT",
    "NoticeOf",
    "delay_minutes",
    "notice_event",
    "slipped",
    "warn_due",
]

#: Share of the confirmation timeout after which the restaurant is warned.
WARN_AT = 0.8
#: How far past the promise an estimate must land for the customer to be told.
DELAY_NOTICE_S = 600.0

#: Builds the event of a notice: (order, kind, reason, when).
NoticeOf = Callable[[Order, str, str, dt.datetime], OutboxEvent]


def notice_event(subjects: Subjects, o: Order, kind: str, reason: str,
                 at: dt.datetime) -> OutboxEvent:  # fmt: skip
    """The ``orders.v1.<kind>`` event of ``o`` (no timeline entry: ``change`` says why)."""
    ev = order_pb2.OrderEvent(
        event_id=f"{o.order_id}.{kind}",
        order=convert.order_to_pb(o),
        change=order_pb2.TimelineEntry(
            seq=o.last_seq, status=convert.status_to_pb(o.status), actor="order-service",
            reason=reason,
        ),
    )  # fmt: skip
    ev.change.timestamp.FromDatetime(at)
    ev.event_time.FromDatetime(at)
    return OutboxEvent(
        subject=subjects.subject(ORDER_EVENTS.subject(kind)),
        event_id=ev.event_id,
        payload=ev.SerializeToString(),
    )


def slipped(
    promised: dt.datetime | None,
    before: dt.datetime | None,
    after: dt.datetime,
    *,
    threshold_s: float = DELAY_NOTICE_S,
) -> bool:
    """True when ``after`` is the first estimate more than ``threshold_s`` past the promise."""
    if promised is None:
        return False
    late = (after - promised).total_seconds() > threshold_s
    was_late = before is not None and (before - promised).total_seconds() > threshold_s
    return late and not was_late


def delay_minutes(promised: dt.datetime, after: dt.datetime) -> int:
    """Whole minutes (at least 1) the estimate slipped past the promise."""
    return max(1, round((after - promised).total_seconds() / 60))


async def warn_due(
    conn: AsyncConnection[Any],
    load: Callable[[AsyncConnection[Any], str], Any],
    notice: NoticeOf,
    *,
    now: dt.datetime,
    batch: int = 50,
) -> list[str]:
    """Warns the restaurants of orders past ``WARN_AT`` of their timeout, in the caller's
    transaction; returns the orders warned.

    ``load(conn, order_id)`` reads the order (awaitable; None when gone).
    """
    cur = await conn.execute(
        "SELECT order_id, due_at, timeout_s FROM orders.confirm_deadlines"
        " WHERE NOT auto AND NOT warned AND due_at > %s"
        " AND due_at - make_interval(secs => timeout_s * %s) <= %s"
        " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, 1.0 - WARN_AT, now, batch),
    )
    warned: list[str] = []
    for order_id, due_at, _timeout_s in await cur.fetchall():
        o: Order | None = await load(conn, order_id)
        await conn.execute(
            "UPDATE orders.confirm_deadlines SET warned = true WHERE order_id = %s", (order_id,)
        )
        if o is None or o.status is not Status.PLACED or not o.released:
            continue  # confirmed meanwhile, or a scheduled order not yet in the kitchen
        left = max(1, round((due_at - now).total_seconds()))
        span = f"{left // 60} min" if left >= 120 else f"{left} s"
        why = f"confirm the order within {span} or it is cancelled"
        await enqueue_event(conn, "orders", notice(o, EVENT_CONFIRM_DUE_SOON, why, now))
        warned.append(order_id)
    return warned
