"""The only module that runs SQL for Pricing (schema ``pricing``).

Redemptions are atomic per code: the code's row is locked (``FOR UPDATE``) while
its uses are counted and the new use is written, so two orders racing for the
last use of a code are served one after the other and exactly one gets it. A
first-order code is also unique per customer across codes (a partial unique index
over live first-order redemptions), so racing first orders get one discount.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from servers.pricing.promo import (
    DiscountKind,
    Promo,
    PromoRejected,
    PromoUsage,
    check_redeemable,
)
from servers.pricing.surge import Event, Weather

__all__ = [
    "CONSUMER",
    "HistoryPoint",
    "OrderChange",
    "PricingStore",
    "QuoteAlreadyRedeemed",
    "Redeemed",
    "UnknownPromo",
]

CONSUMER = "pricing-orders"

_PROMO_COLS = (
    "code, kind, percent_bps, amount_off_minor, currency, min_subtotal_minor, "
    "max_discount_minor, first_order_only, per_customer_limit, total_limit, start_at, "
    "end_at, regions"
)


class UnknownPromo(Exception):
    """No promo code by that name."""


class QuoteAlreadyRedeemed(Exception):
    """A quote's promo use already belongs to a placed order."""


@dataclass(frozen=True, slots=True)
class Redeemed:
    customer_uses: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: dt.datetime
    multiplier: float
    demand: int
    supply: int


@dataclass(frozen=True, slots=True)
class OrderChange:
    """What Pricing takes from an order event."""

    event_id: str
    kind: str  # "placed", "scheduled" or "cancelled"
    order_id: str
    customer_id: str
    quote_id: str
    promo_code: str
    #: For a placed order: its pickup cell and when it was placed (the demand forecast).
    cell: str = ""
    placed_ts: float = 0.0


#: The demand forecast's bucket (``servers/pricing/forecast.py``).
DEMAND_BUCKET_S = 300


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def _promo(row: Sequence[Any]) -> Promo:
    return Promo(
        code=row[0],
        kind=DiscountKind(row[1]),
        percent_bps=row[2],
        amount_off_minor=row[3],
        currency=row[4],
        min_subtotal_minor=row[5],
        max_discount_minor=row[6],
        first_order_only=row[7],
        per_customer_limit=row[8],
        total_limit=row[9],
        start_ts=_ts(row[10]),
        end_ts=_ts(row[11]),
        regions=tuple(row[12]),
    )


class PricingStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # -- promo codes ---------------------------------------------------------------

    async def upsert_promo(self, p: Promo) -> Promo:
        async with self.pool.connection() as conn:
            await conn.execute(
                f"""INSERT INTO pricing.promo_codes ({_PROMO_COLS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (code) DO UPDATE SET kind = EXCLUDED.kind,
                      percent_bps = EXCLUDED.percent_bps,
                      amount_off_minor = EXCLUDED.amount_off_minor,
                      currency = EXCLUDED.currency,
                      min_subtotal_minor = EXCLUDED.min_subtotal_minor,
                      max_discount_minor = EXCLUDED.max_discount_minor,
                      first_order_only = EXCLUDED.first_order_only,
                      per_customer_limit = EXCLUDED.per_customer_limit,
                      total_limit = EXCLUDED.total_limit, start_at = EXCLUDED.start_at,
                      end_at = EXCLUDED.end_at, regions = EXCLUDED.regions, updated_at = now()""",
                (p.code, p.kind.value, p.percent_bps, p.amount_off_minor, p.currency,
                 p.min_subtotal_minor, p.max_discount_minor, p.first_order_only,
                 p.per_customer_limit, p.total_limit, _dt(p.start_ts), _dt(p.end_ts),
                 list(p.regions)),
            )  # fmt: skip
        return p

    async def promo_with_usage(
        self, code: str, customer_id: str
    ) -> tuple[Promo, PromoUsage] | None:
        """The code and what is counted of it (one round trip)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"""SELECT {_PROMO_COLS}, uses,
                      (SELECT count(*) FROM pricing.promo_redemptions r
                        WHERE r.code = p.code AND r.customer_id = %s AND r.state <> 'released'),
                      (SELECT count(*) FROM pricing.customer_orders o
                        WHERE o.customer_id = %s AND NOT o.cancelled)
                    FROM pricing.promo_codes p WHERE p.code = %s""",
                (customer_id, customer_id, code),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        usage = PromoUsage(customer_uses=row[14], total_uses=row[13], customer_orders=row[15])
        return _promo(row), usage

    async def redeem(
        self, code: str, customer_id: str, key: str, *, now: float, order_id: str = ""
    ) -> Redeemed:
        """Counts one use under ``key``, or finds the use already counted under it.

        Raises UnknownPromo, PromoRejected, QuoteAlreadyRedeemed.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_PROMO_COLS}, uses FROM pricing.promo_codes WHERE code = %s FOR UPDATE",
                (code,),
            )
            row = await cur.fetchone()
            if row is None:
                raise UnknownPromo(code)
            promo = _promo(row)
            cur = await conn.execute(
                "SELECT state, order_id, customer_id, code FROM pricing.promo_redemptions "
                "WHERE redemption_key = %s FOR UPDATE",
                (key,),
            )
            held = await cur.fetchone()
            if held is not None and held[0] != "released":
                if held[2] != customer_id or held[3] != code:
                    raise QuoteAlreadyRedeemed(key)
                if key.startswith("quote:") and held[0] == "confirmed":
                    raise QuoteAlreadyRedeemed(key)
                uses = await self._customer_uses(conn, code, customer_id)
                return Redeemed(customer_uses=uses, replayed=True)
            uses = await self._customer_uses(conn, code, customer_id)
            cur = await conn.execute(
                "SELECT count(*) FROM pricing.customer_orders WHERE customer_id = %s "
                "AND NOT cancelled AND order_id <> %s",
                (customer_id, order_id),
            )
            orders = (await cur.fetchone() or (0,))[0]
            check_redeemable(
                promo,
                PromoUsage(customer_uses=uses, total_uses=row[13], customer_orders=orders),
                now=now,
            )
            try:
                # For a first-order code, a unique index over the customer's live
                # first-order redemptions makes the rule atomic with the use: of racing
                # first orders (whose placed events have not come yet) one wins.
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO pricing.promo_redemptions
                             (redemption_key, code, customer_id, order_id, state, first_order)
                           VALUES (%s, %s, %s, %s, 'held', %s)
                           ON CONFLICT (redemption_key) DO UPDATE SET state = 'held',
                             code = EXCLUDED.code, customer_id = EXCLUDED.customer_id,
                             first_order = EXCLUDED.first_order,
                             release_reason = '', created_at = now(), updated_at = now()""",
                        (key, code, customer_id, order_id, promo.first_order_only),
                    )
            except UniqueViolation:
                raise PromoRejected(
                    "FIRST_ORDER_ONLY", f"{code} is for a first order only"
                ) from None
            await conn.execute(
                "UPDATE pricing.promo_codes SET uses = uses + 1 WHERE code = %s", (code,)
            )
            return Redeemed(customer_uses=uses + 1, replayed=False)

    @staticmethod
    async def _customer_uses(conn: AsyncConnection[Any], code: str, customer_id: str) -> int:
        cur = await conn.execute(
            "SELECT count(*) FROM pricing.promo_redemptions WHERE code = %s "
            "AND customer_id = %s AND state <> 'released'",
            (code, customer_id),
        )
        return int((await cur.fetchone() or (0,))[0])

    async def release(self, code: str, order_id: str, *, reason: str = "released") -> bool:
        """Gives back the use counted for ``order_id`` (by key or by confirmed order)."""
        async with self.pool.connection() as conn, conn.transaction():
            return await self._release(conn, code, order_id, reason)

    @staticmethod
    async def _release(conn: AsyncConnection[Any], code: str, order_id: str, reason: str) -> bool:
        cur = await conn.execute(
            """UPDATE pricing.promo_redemptions SET state = 'released', release_reason = %s,
                 updated_at = now()
               WHERE (redemption_key = %s OR order_id = %s) AND state <> 'released'
                 AND (%s = '' OR code = %s)
               RETURNING code""",
            (reason, order_id, order_id, code, code),
        )
        codes = [r[0] for r in await cur.fetchall()]
        for c in codes:
            await conn.execute(
                "UPDATE pricing.promo_codes SET uses = greatest(0, uses - 1) WHERE code = %s",
                (c,),
            )
        return bool(codes)

    async def expire_holds(self, older_than_s: float) -> int:
        """Releases holds no placed order confirmed in time (the placement failed)."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """UPDATE pricing.promo_redemptions SET state = 'released',
                     release_reason = 'expired', updated_at = now()
                   WHERE state = 'held' AND created_at < now() - make_interval(secs => %s)
                   RETURNING code""",
                (older_than_s,),
            )
            codes = [r[0] for r in await cur.fetchall()]
            for c in codes:
                await conn.execute(
                    "UPDATE pricing.promo_codes SET uses = greatest(0, uses - 1) WHERE code = %s",
                    (c,),
                )
            return len(codes)

    # -- order events ----------------------------------------------------------------

    async def apply_order_change(self, ch: OrderChange) -> bool:
        """Applies one order event exactly once (inbox); False for a redelivery."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO pricing.inbox (consumer, event_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (CONSUMER, ch.event_id),
            )
            if cur.rowcount != 1:
                return False
            if ch.kind in ("placed", "scheduled"):
                await conn.execute(
                    "INSERT INTO pricing.customer_orders (customer_id, order_id) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (ch.customer_id, ch.order_id),
                )
                if ch.promo_code:
                    await self._confirm(conn, ch)
                if ch.kind == "placed" and ch.cell:
                    bucket = ch.placed_ts - ch.placed_ts % DEMAND_BUCKET_S
                    await conn.execute(
                        "INSERT INTO pricing.demand_counts (cell, bucket, orders) "
                        "VALUES (%s, %s, 1) ON CONFLICT (cell, bucket) "
                        "DO UPDATE SET orders = demand_counts.orders + 1",
                        (ch.cell, _dt(bucket)),
                    )
            elif ch.kind == "cancelled":
                await conn.execute(
                    "UPDATE pricing.customer_orders SET cancelled = true WHERE order_id = %s",
                    (ch.order_id,),
                )
                if ch.promo_code:
                    await self._release(conn, ch.promo_code, ch.order_id, "cancelled")
            return True

    @staticmethod
    async def _confirm(conn: AsyncConnection[Any], ch: OrderChange) -> None:
        keys = [ch.order_id] + ([f"quote:{ch.quote_id}"] if ch.quote_id else [])
        cur = await conn.execute(
            """UPDATE pricing.promo_redemptions SET order_id = %s, updated_at = now(),
                 state = 'confirmed', release_reason = ''
               WHERE redemption_key = ANY(%s) AND code = %s
                 AND (state = 'held' OR (state = 'released' AND release_reason = 'expired'))
               RETURNING (SELECT r.state FROM pricing.promo_redemptions r
                          WHERE r.redemption_key = promo_redemptions.redemption_key)""",
            (ch.order_id, keys, ch.promo_code),
        )
        was = [r[0] for r in await cur.fetchall()]
        revived = sum(1 for w in was if w == "released")
        if revived:  # a hold expired before its placed event came (NATS was away): count again
            await conn.execute(
                "UPDATE pricing.promo_codes SET uses = uses + %s WHERE code = %s",
                (revived, ch.promo_code),
            )

    # -- conditions --------------------------------------------------------------------

    async def replace_conditions(self, events: Sequence[Event], weather: Sequence[Weather]) -> int:
        """Replaces every event and weather area; returns the new version."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM pricing.condition_events")
            await conn.execute("DELETE FROM pricing.condition_weather")
            async with conn.cursor() as cur:
                if events:
                    await cur.executemany(
                        "INSERT INTO pricing.condition_events "
                        "(event_id, lat, lon, attendance, start_at, end_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        [(e.event_id, e.lat, e.lon, e.attendance, _dt(e.start_ts), _dt(e.end_ts))
                         for e in events],
                    )  # fmt: skip
                if weather:
                    await cur.executemany(
                        "INSERT INTO pricing.condition_weather (area, kind) VALUES (%s, %s)",
                        [(w.area, w.kind) for w in weather],
                    )
            cur2 = await conn.execute(
                "UPDATE pricing.condition_version SET version = version + 1, updated_at = now() "
                "RETURNING version"
            )
            row = await cur2.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO pricing.condition_history (version, events, weather) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (row[0], Jsonb([[e.event_id, e.lat, e.lon, e.attendance, e.start_ts, e.end_ts]
                                for e in events]),
                 Jsonb([[w.area, w.kind] for w in weather])),
            )  # fmt: skip
            return int(row[0])

    async def condition_version(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT version FROM pricing.condition_version")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def load_conditions(self) -> tuple[int, list[Event], list[Weather]]:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT version FROM pricing.condition_version")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            cur = await conn.execute(
                "SELECT event_id, lat, lon, attendance, start_at, end_at "
                "FROM pricing.condition_events"
            )
            events = [Event(r[0], r[1], r[2], r[3], _ts(r[4]), _ts(r[5]))
                      for r in await cur.fetchall()]  # fmt: skip
            cur = await conn.execute("SELECT area, kind FROM pricing.condition_weather")
            weather = [Weather(r[0], r[1]) for r in await cur.fetchall()]
        return version, events, weather

    # -- surge history -------------------------------------------------------------------

    async def add_history(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of (cell, at, multiplier, demand, supply, ratio, event, weather, reason, fb)."""
        if not rows:
            return
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.executemany(
                "INSERT INTO pricing.surge_history (cell, at, multiplier, demand, supply, ratio, "
                "event_multiplier, weather_multiplier, reason, fallback) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )

    async def history(
        self, cell: str, start: dt.datetime, end: dt.datetime, *, limit: int = 10_000
    ) -> list[HistoryPoint]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT at, multiplier, demand, supply FROM pricing.surge_history "
                "WHERE cell = %s AND at >= %s AND at <= %s ORDER BY at LIMIT %s",
                (cell, start, end, limit),
            )
            return [HistoryPoint(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]

    # -- demand forecast history -------------------------------------------------------

    async def demand_counts(self, since: dt.datetime) -> list[tuple[str, float, int]]:
        """``(cell, bucket start ts, orders)`` of every bucket from ``since`` on."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT cell, bucket, orders FROM pricing.demand_counts WHERE bucket >= %s",
                (since,),
            )
            return [(r[0], r[1].timestamp(), int(r[2])) for r in await cur.fetchall()]

    async def import_prior(self, cell: str, start: dt.datetime, orders: list[int]) -> int:
        """Replaces the prior of ``cell`` over the buckets from ``start`` (zeros not stored)."""
        end = start + dt.timedelta(seconds=DEMAND_BUCKET_S * len(orders))
        kept = [(i, n) for i, n in enumerate(orders) if n > 0]
        buckets = [start + dt.timedelta(seconds=DEMAND_BUCKET_S * i) for i, _ in kept]
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM pricing.demand_prior WHERE cell = %s AND bucket >= %s AND bucket < %s",
                (cell, start, end),
            )
            await conn.execute(
                "INSERT INTO pricing.demand_prior (cell, bucket, orders) "
                "SELECT %s, b, n FROM unnest(%s::timestamptz[], %s::integer[]) AS t(b, n)",
                (cell, buckets, [n for _, n in kept]),
            )
        return len(kept)

    async def demand_prior(
        self, since: dt.datetime, imported_after: dt.datetime | None
    ) -> tuple[list[tuple[str, float, int]], dt.datetime | None]:
        """``(cell, bucket start ts, orders)`` of the prior from ``since`` if any was imported
        after ``imported_after`` (else nothing), and the latest import's time."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT max(imported_at) FROM pricing.demand_prior")
            row = await cur.fetchone()
            latest = None if row is None else row[0]
            if latest is None or (imported_after is not None and latest <= imported_after):
                return [], imported_after
            cur = await conn.execute(
                "SELECT cell, bucket, orders FROM pricing.demand_prior WHERE bucket >= %s",
                (since,),
            )
            rows = [(r[0], r[1].timestamp(), int(r[2])) for r in await cur.fetchall()]
        return rows, latest

    async def condition_timeline(
        self, since: dt.datetime
    ) -> list[tuple[float, list[Event], list[Weather]]]:
        """The versions of the conditions in force from ``since`` on (the one in force then
        included): ``(took effect ts, events, weather)``, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT at, events, weather FROM pricing.condition_history WHERE version >= "
                "coalesce((SELECT max(version) FROM pricing.condition_history WHERE at <= %s), 0) "
                "ORDER BY version",
                (since,),
            )
            rows = await cur.fetchall()
        return [(r[0].timestamp(), [Event(e[0], e[1], e[2], e[3], e[4], e[5]) for e in r[1]],
                 [Weather(w[0], w[1]) for w in r[2]]) for r in rows]  # fmt: skip

    async def trim_demand(self, keep_s: float) -> int:
        """Forgets buckets, and condition versions replaced, more than ``keep_s`` ago."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM pricing.demand_counts "
                "WHERE bucket < now() - make_interval(secs => %s)",
                (keep_s,),
            )
            await conn.execute(
                "DELETE FROM pricing.demand_prior WHERE bucket < now() - make_interval(secs => %s)",
                (keep_s,),
            )
            await conn.execute(
                "DELETE FROM pricing.condition_history h WHERE h.at < now() - make_interval("
                "secs => %s) AND EXISTS (SELECT 1 FROM pricing.condition_history n "
                "WHERE n.version > h.version AND n.at < now() - make_interval(secs => %s))",
                (keep_s, keep_s),
            )
            return cur.rowcount

    async def trim_history(self, keep_s: float) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM pricing.surge_history WHERE at < now() - make_interval(secs => %s)",
                (keep_s,),
            )
            return cur.rowcount
