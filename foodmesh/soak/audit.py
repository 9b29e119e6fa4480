"""The audit at the end of a soak, read from the data stores themselves.

Nothing here trusts the simulator's counters: the one input from the load is the list of
orders the API acknowledged (their ids, as the customers were told them). Everything else
is read from PostgreSQL (orders, the sandbox processor's ledger, the fleet, promotions,
every outbox) and from NATS JetStream (every durable consumer). Outboxes, work queues and
consumers are discovered (a table with ``published_at`` or ``done_at``, every stream's
durable consumers), so a new service's are audited without being named here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

__all__ = ["Audit", "AuditSettings", "driver_limit", "run_audit"]

_ACTIVE_ASSIGNMENT = ("assigned", "at_restaurant", "picked_up", "at_customer")
_IN_PROGRESS = ("placed", "confirmed", "preparing", "ready_for_pickup", "picked_up", "in_transit")
_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """How long a thing may legitimately wait before the audit calls it left hanging."""

    #: An in-progress order with no change for this long is stuck, not in progress.
    stuck_after_s: float = 900.0
    #: Holds, pending payments, open offers and unpublished events older than this count.
    grace_s: float = 120.0
    #: The most orders a driver may carry at once (Dispatch's setting; see driver_limit).
    driver_limit: int = 1


@dataclass(slots=True)
class Audit:
    """What the audit found: the counts the targets are about, and examples of each."""

    acknowledged: int = 0
    lost_orders: int = 0
    duplicated_orders: int = 0
    delivered: int = 0
    cancelled: int = 0
    in_progress: int = 0
    stuck_orders: int = 0
    wrong_refunds: int = 0
    double_assignments: int = 0
    drivers_over_limit: int = 0
    dangling_offers: int = 0
    unassigned_orders: int = 0
    fleet_order_mismatches: int = 0
    double_charges: int = 0
    wrong_captures: int = 0
    unsettled_payments: int = 0
    lingering_holds: int = 0
    promo_mismatches: int = 0
    undrained_outboxes: dict[str, int] = field(default_factory=dict)
    lagging_consumers: dict[str, int] = field(default_factory=dict)
    double_applied: int = 0
    driver_limit: int = 1
    examples: dict[str, list[str]] = field(default_factory=dict)

    #: The counts that must be zero for the audit to pass.
    FAILING = (
        "lost_orders", "duplicated_orders", "stuck_orders", "wrong_refunds",
        "double_assignments", "drivers_over_limit", "dangling_offers", "unassigned_orders",
        "fleet_order_mismatches", "double_charges", "wrong_captures", "unsettled_payments",
        "lingering_holds", "promo_mismatches", "double_applied",
    )  # fmt: skip

    def note(self, check: str, items: Iterable[str]) -> int:
        found = list(items)
        if found:
            self.examples.setdefault(check, []).extend(found[:_EXAMPLES])
        return len(found)

    def failures(self) -> list[str]:
        """Each failed check, with its count."""
        out = [f"{name} {getattr(self, name)}" for name in self.FAILING if getattr(self, name)]
        out += [f"outbox {k} has {v} unpublished" for k, v in self.undrained_outboxes.items() if v]
        out += [f"consumer {k} is {v} behind" for k, v in self.lagging_consumers.items() if v]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def as_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        d["failures"] = self.failures()
        return d


def driver_limit(extra: Mapping[str, str]) -> int:
    """The most orders Dispatch lets a driver carry (``FOODMESH_DISPATCH_MAX_ORDERS``).

    Read through Dispatch's own EngineConfig, so the audit holds drivers to the limit the
    service enforces.
    """
    from servers.dispatch.engine import EngineConfig

    return max(1, EngineConfig.from_extra(extra).max_orders)


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[Any]:
    cur = await conn.execute(query, params or None)
    return list(await cur.fetchall())


async def _has_schema(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    rows = await _rows(conn, "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                       schema)  # fmt: skip
    return bool(rows)


async def _orders(conn: psycopg.AsyncConnection[Any], a: Audit, acked: list[str],
                  s: AuditSettings) -> None:  # fmt: skip
    a.acknowledged = len(set(acked))
    dupes = {o for o in acked if acked.count(o) > 1} if len(acked) != len(set(acked)) else set()
    # The same id acknowledged for two different placements is one order told twice.
    a.duplicated_orders = a.note("duplicated_orders", sorted(dupes))
    found = await _rows(
        conn,
        "SELECT order_id, status, extract(epoch FROM now() - updated_at)"
        " FROM orders.orders WHERE order_id = ANY(%s)",
        sorted(set(acked)),
    )
    seen = {r[0] for r in found}
    a.lost_orders = a.note("lost_orders", sorted(set(acked) - seen))
    for _oid, status, _age in found:
        if status == "delivered":
            a.delivered += 1
        elif status == "cancelled":
            a.cancelled += 1
        else:
            a.in_progress += 1
    a.stuck_orders = a.note(
        "stuck_orders",
        [f"{o} {st} for {age:.0f}s" for o, st, age in found
         if st in _IN_PROGRESS and age > s.stuck_after_s],
    )  # fmt: skip
    # A transition applied twice: an order entering the same status twice. (Entries that
    # keep the status, a driver assigned or moved, are not transitions.)
    twice = await _rows(
        conn,
        """
        SELECT order_id, status, count(*) FROM (
            SELECT order_id, status, lag(status) OVER (PARTITION BY order_id ORDER BY seq) AS was
              FROM orders.timeline) t
         WHERE was IS DISTINCT FROM status GROUP BY order_id, status HAVING count(*) > 1
        """,
    )
    a.double_applied += a.note("double_applied", [f"{o} {st} x{n}" for o, st, n in twice])


async def _money(conn: psycopg.AsyncConnection[Any], a: Audit, s: AuditSettings) -> None:
    from servers.order.transitions import Status, cancel_refund

    # Every payment the processor holds for an order (reference = order id), net of refunds.
    rows = await _rows(
        conn,
        """
        SELECT o.order_id, o.status, o.total_minor, o.subtotal_minor, o.tax_minor,
               o.refunded_minor, o.payment_pending IS NOT NULL,
               extract(epoch FROM now() - o.updated_at),
               coalesce(sum(p.captured_minor), 0),
               coalesce(sum(p.refunded_minor) FILTER (WHERE p.status <> 'voided'), 0),
               count(p.payment_id) FILTER (WHERE p.captured_minor > 0),
               (SELECT t.status FROM orders.timeline t WHERE t.order_id = o.order_id
                  AND t.status <> 'cancelled' ORDER BY t.seq DESC LIMIT 1),
               (SELECT t.actor FROM orders.timeline t WHERE t.order_id = o.order_id
                  AND t.status = 'cancelled' LIMIT 1)
          FROM orders.orders o
          LEFT JOIN orders.sandbox_payments p ON p.reference = o.order_id
         WHERE o.status IN ('delivered', 'cancelled') OR p.captured_minor > 0
         GROUP BY o.order_id
        """,
    )
    double, wrong, unsettled, refunds = [], [], [], []
    for (oid, status, total, subtotal, tax, refunded, pending, age, captured, back, n_captured,
         stage, actor) in rows:  # fmt: skip
        net = int(captured) - int(back or 0)
        if n_captured > 1 or net > total:
            double.append(f"{oid}: {n_captured} captures, {net} net of a {total} order")
            continue
        if pending:
            if age > s.grace_s:
                unsettled.append(f"{oid} {status}: payment pending for {age:.0f}s")
            continue
        if status == "delivered" and net != total:
            wrong.append(f"{oid} delivered: {net} captured of {total}")
        elif status == "cancelled":
            role = "customer" if str(actor or "").startswith("cust") else "ops"
            try:
                kept = cancel_refund(Status(stage), role, total_minor=total,
                                     subtotal_minor=subtotal, tax_minor=tax).kept_minor  # fmt: skip
            except Exception:  # noqa: BLE001 — a stage the policy refuses: kept is unknown
                kept = net
            if net != kept or refunded != total - kept:
                refunds.append(f"{oid} cancelled at {stage} by {actor}: kept {net}, "
                               f"policy keeps {kept}, order says refunded {refunded}")  # fmt: skip
        elif status not in ("delivered", "cancelled") and net > 0:
            wrong.append(f"{oid} {status}: {net} captured before delivery")
    a.double_charges = a.note("double_charges", double)
    a.wrong_captures = a.note("wrong_captures", wrong)
    a.unsettled_payments = a.note("unsettled_payments", unsettled)
    a.wrong_refunds = a.note("wrong_refunds", refunds)
    holds = await _rows(
        conn,
        """
        SELECT p.payment_id, p.reference, coalesce(o.status, 'no order')
          FROM orders.sandbox_payments p
          LEFT JOIN orders.orders o ON o.order_id = p.reference
         WHERE p.status = 'authorized' AND p.created_at < now() - make_interval(secs => %s)
           AND (o.order_id IS NULL OR (o.status IN ('delivered', 'cancelled')
                                       AND o.payment_pending IS NULL))
        """,
        s.grace_s,
    )
    a.lingering_holds = a.note("lingering_holds", [f"{p} for {r} ({st})" for p, r, st in holds])


async def _fleet(conn: psycopg.AsyncConnection[Any], a: Audit, s: AuditSettings) -> None:
    twice = await _rows(
        conn,
        "SELECT order_id, count(*) FROM fleet.offers WHERE status = 'accepted'"
        " GROUP BY order_id HAVING count(*) > 1",
    )
    # Two drivers on one order: the fleet and the order disagree on who carries it.
    split = await _rows(
        conn,
        """
        SELECT o.order_id, o.driver_id, f.driver_id FROM orders.orders o
          JOIN fleet.assignments f USING (order_id)
         WHERE o.driver_id <> '' AND f.driver_id <> '' AND o.driver_id <> f.driver_id
           AND f.status = ANY(%s::text[] || ARRAY['delivered'])
           AND o.updated_at < now() - make_interval(secs => %s)
        """,
        list(_ACTIVE_ASSIGNMENT), s.grace_s,
    )  # fmt: skip
    a.double_assignments = a.note(
        "double_assignments",
        [f"{o}: {n} accepted offers" for o, n in twice]
        + [f"{o}: order says {d1}, fleet says {d2}" for o, d1, d2 in split],
    )
    over = await _rows(
        conn,
        "SELECT driver_id, count(*) FROM fleet.assignments WHERE status = ANY(%s)"
        " GROUP BY driver_id HAVING count(*) > %s",
        list(_ACTIVE_ASSIGNMENT), s.driver_limit,
    )  # fmt: skip
    a.drivers_over_limit = a.note("drivers_over_limit", [f"{d}: {n}" for d, n in over])
    dangling = await _rows(
        conn,
        "SELECT offer_id, order_id, extract(epoch FROM now() - expire_at) FROM fleet.offers"
        " WHERE status = 'open' AND expire_at < now() - make_interval(secs => %s)",
        s.grace_s,
    )
    late = [f"{o} ({oid}) expired {age:.0f}s ago" for o, oid, age in dangling]
    a.dangling_offers = a.note("dangling_offers", late)
    # Every order its kitchen confirmed reaches Dispatch (its confirmed event), and the
    # two agree on how it ended.
    missing = await _rows(
        conn,
        """
        SELECT o.order_id, o.status FROM orders.orders o
          LEFT JOIN fleet.assignments f USING (order_id)
         WHERE f.order_id IS NULL AND o.released AND o.status NOT IN ('placed', 'cancelled')
           AND o.created_at < now() - make_interval(secs => %s)
        """,
        s.grace_s,
    )
    a.unassigned_orders = a.note("unassigned_orders", [f"{o} {st}" for o, st in missing])
    mismatched = await _rows(
        conn,
        """
        SELECT o.order_id, o.status, f.status FROM orders.orders o
          JOIN fleet.assignments f USING (order_id)
         WHERE o.updated_at < now() - make_interval(secs => %s)
           AND f.updated_at < now() - make_interval(secs => %s)
           AND ((o.status = 'delivered') <> (f.status = 'delivered')
                OR (o.status = 'cancelled' AND f.status NOT IN ('cancelled')))
        """,
        s.grace_s, s.grace_s,
    )  # fmt: skip
    differ = [f"{o}: order {x}, fleet {y}" for o, x, y in mismatched]
    a.fleet_order_mismatches = a.note("fleet_order_mismatches", differ)
    # A delivery counted twice in the driver's figures is an event applied twice.
    counted = await _rows(
        conn,
        """
        SELECT s.driver_id, s.completed, count(f.order_id) FROM fleet.stats s
          LEFT JOIN fleet.assignments f ON f.driver_id = s.driver_id AND f.status = 'delivered'
         GROUP BY s.driver_id, s.completed HAVING s.completed > count(f.order_id)
        """,
    )
    twice_counted = [f"driver {d}: completed {c}, delivered {n}" for d, c, n in counted]
    a.double_applied += a.note("double_applied", twice_counted)


async def _promos(conn: psycopg.AsyncConnection[Any], a: Audit, s: AuditSettings) -> None:
    uses = await _rows(
        conn,
        """
        SELECT c.code, c.uses, count(r.redemption_key) FILTER (WHERE r.state <> 'released')
          FROM pricing.promo_codes c LEFT JOIN pricing.promo_redemptions r USING (code)
         GROUP BY c.code, c.uses HAVING c.uses <> count(r.redemption_key)
                                              FILTER (WHERE r.state <> 'released')
        """,
    )
    bad = [f"{c}: uses {u}, redemptions {n}" for c, u, n in uses]
    held = await _rows(
        conn,
        "SELECT redemption_key, code FROM pricing.promo_redemptions WHERE state = 'held'"
        " AND updated_at < now() - make_interval(secs => %s)",
        s.grace_s,
    )
    bad += [f"{k} ({c}) held past the grace period" for k, c in held]
    if await _has_schema(conn, "orders"):
        # A delivered order's code was used once; a cancelled one's was given back.
        wrong = await _rows(
            conn,
            """
            SELECT o.order_id, o.status, o.promo_code, r.state FROM orders.orders o
              LEFT JOIN pricing.promo_redemptions r
                ON r.order_id = o.order_id AND r.code = o.promo_code
             WHERE o.promo_code <> '' AND o.updated_at < now() - make_interval(secs => %s)
               AND ((o.status = 'cancelled' AND r.state IS DISTINCT FROM 'released')
                    OR (o.status <> 'cancelled' AND r.state IS DISTINCT FROM 'confirmed'))
            """,
            s.grace_s,
        )
        bad += [f"{o} {st} used {c}: redemption {r}" for o, st, c, r in wrong]
    a.promo_mismatches = a.note("promo_mismatches", bad)


async def _outboxes(conn: psycopg.AsyncConnection[Any], a: Audit, s: AuditSettings) -> None:
    """Every table of work owed (``published_at`` or ``done_at`` still NULL), discovered."""
    tables = await _rows(
        conn,
        "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        " WHERE column_name IN ('published_at', 'done_at')"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        " ORDER BY table_schema, table_name",
    )
    for schema, table, column in tables:
        q = psycopg.sql.SQL("SELECT count(*) FROM {}.{} WHERE {} IS NULL").format(
            psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table),
            psycopg.sql.Identifier(column),
        )  # fmt: skip
        cur = await conn.execute(q)
        row = await cur.fetchone()
        a.undrained_outboxes[f"{schema}.{table}"] = int(row[0]) if row else 0


async def _consumers(nats_url: str, a: Audit) -> None:
    """Every durable JetStream consumer: nothing pending, nothing unacknowledged."""
    import nats

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = str(stream.config.name)
            for c in await js.consumers_info(name):
                if not c.config.durable_name:
                    continue
                behind = int(c.num_pending or 0) + int(c.num_ack_pending or 0)
                a.lagging_consumers[f"{name}/{c.config.durable_name}"] = behind
    finally:
        await nc.close()


async def run_audit(
    *,
    postgres_url: str,
    nats_url: str | None,
    acknowledged: list[str],
    settings: AuditSettings,
) -> Audit:
    """Runs every check against the stores; each check reads only what exists."""
    a = Audit(driver_limit=settings.driver_limit)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        if await _has_schema(conn, "orders"):
            await _orders(conn, a, acknowledged, settings)
            await _money(conn, a, settings)
        elif acknowledged:
            a.lost_orders = a.note("lost_orders", acknowledged)
        if await _has_schema(conn, "fleet") and await _has_schema(conn, "orders"):
            await _fleet(conn, a, settings)
        if await _has_schema(conn, "pricing"):
            await _promos(conn, a, settings)
        await _outboxes(conn, a, settings)
    if nats_url:
        await asyncio.wait_for(_consumers(nats_url, a), timeout=30)
    return a
