"""What the fleet stores share: row factories, column lists, and the steps run inside
another store's transaction (the event of a change, a call owed to Order, a driver's
answer in their stats)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import AsyncRowFactory, class_row, dict_row

from servers.dispatch.model import Assignment, Driver, OfferRow, OrderCall
from servers.runtime.outbox import OutboxEvent, enqueue_event

__all__ = [
    "ASSIGNMENT",
    "ASSIGNMENTS",
    "DRIVERS",
    "DRIVER_SELECT",
    "OFFER",
    "OFFERS",
    "ORDER_CALLS",
    "ROWS",
    "SCHEMA",
    "Announce",
    "all_",
    "call_order",
    "emit",
    "one",
    "record_answer",
    "ts",
]

T = TypeVar("T")
SCHEMA = "fleet"
_RECENT = 20

#: Builds the outbox event of a change: (kind, assignment after it, offer, reason).
Announce = Callable[[str, Assignment, OfferRow | None, str], OutboxEvent]

#: The columns of an assignment and of an offer, in their records' order.
ASSIGNMENT = ", ".join(f.name for f in dataclasses.fields(Assignment))
OFFER = ", ".join(f.name for f in dataclasses.fields(OfferRow))

ASSIGNMENTS: AsyncRowFactory[Assignment] = class_row(Assignment)
OFFERS: AsyncRowFactory[OfferRow] = class_row(OfferRow)
DRIVERS: AsyncRowFactory[Driver] = class_row(Driver)
ORDER_CALLS: AsyncRowFactory[OrderCall] = class_row(OrderCall)
ROWS: AsyncRowFactory[dict[str, Any]] = dict_row

DRIVER_SELECT = """
SELECT d.driver_id, d.name, d.vehicle_type, d.vehicle, d.photo_url, d.status, d.region,
       d.session_id,
       CASE WHEN s.rating_count > 0 THEN s.rating_sum::float8 / s.rating_count ELSE 5.0 END
           AS rating,
       coalesce(s.rating_count, 0) AS rating_count, coalesce(s.completed, 0) AS completed,
       coalesce((SELECT avg(x::int)::float8 FROM unnest(s.recent_offers) x), 1.0) AS acceptance
FROM fleet.drivers d LEFT JOIN fleet.stats s USING (driver_id)
"""


def ts(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


async def one(
    conn: AsyncConnection[Any],
    rows: AsyncRowFactory[T],
    query: str,
    params: Sequence[Any] | dict[str, Any],
) -> T | None:
    cur = conn.cursor(row_factory=rows)
    await cur.execute(query, params)
    return await cur.fetchone()


async def all_(
    conn: AsyncConnection[Any],
    rows: AsyncRowFactory[T],
    query: str,
    params: Sequence[Any] | dict[str, Any],
) -> list[T]:
    cur = conn.cursor(row_factory=rows)
    await cur.execute(query, params)
    return await cur.fetchall()


async def emit(
    conn: AsyncConnection[Any],
    announce: Announce,
    kind: str,
    a: Assignment,
    offer: OfferRow | None = None,
    reason: str = "",
) -> None:
    """Records the event announcing the change, in the change's transaction."""
    ev = announce(kind, a, offer, reason)
    await enqueue_event(conn, SCHEMA, ev)


async def call_order(
    conn: AsyncConnection[Any],
    order_id: str,
    driver_id: str,
    reason: str,
    eta: dt.datetime | None = None,
) -> None:
    """Records what the Order service must be told, in the change's transaction."""
    await conn.execute(
        "INSERT INTO fleet.order_calls (order_id, driver_id, reason, est_delivery_at)"
        " VALUES (%s, %s, %s, %s)",
        (order_id, driver_id, reason, eta),
    )


async def record_answer(conn: AsyncConnection[Any], driver_id: str, ok: bool) -> None:
    """Adds the driver's answer to an offer to their last twenty."""
    await conn.execute(
        "INSERT INTO fleet.stats (driver_id, recent_offers) VALUES (%s, ARRAY[%s::boolean])"
        " ON CONFLICT (driver_id) DO UPDATE SET recent_offers ="
        " (fleet.stats.recent_offers || %s::boolean)"
        "[greatest(1, cardinality(fleet.stats.recent_offers) - %s):]",
        (driver_id, ok, ok, _RECENT - 2),
    )
