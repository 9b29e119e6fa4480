"""Location history: buffered, written to PostgreSQL with COPY, partitioned by day.

The ingest path hands its fixes to a memory buffer that keeps them as binary COPY
rows, encoded at once (a few µs a batch, never one long encoding at flush time;
and bytes are nothing for the garbage collector to walk, where fixes waiting a
second in a buffer would be promoted to its oldest generation and make its full
collections, tens of ms, come every few seconds). A writer task flushes the
buffer every ``flush_s`` or every ``batch_rows`` rows with one COPY, creating
the day partitions it needs first. While PostgreSQL is down the buffer is bounded: what
does not fit goes to spill files (CSV) under ``spill_dir``, read back and written
once PostgreSQL answers again. Old partitions are dropped after ``retention_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import logging
import math
import os
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.tasks import stop_tasks
from servers.location import metrics
from servers.location.fixes import Fix

__all__ = [
    "HistoryConfig",
    "HistoryPoint",
    "HistoryWriter",
    "copy_binary",
    "copy_rows",
    "downsample_query",
    "partition_name",
]

_log = logging.getLogger("foodmesh.location.history")
_UTC = dt.UTC
_COLUMNS = (
    "driver_id",
    "ts",
    "lat",
    "lon",
    "heading",
    "speed_mps",
    "accuracy_m",
    "order_id",
    "received_at",
)
#: A spill file's line, in ``_COLUMNS`` order (times in seconds since the epoch).
Row = tuple[str, float, float, float, float, float, float, str, float]
#: What the buffer held: COPY rows (one ``bytes`` per ``add``), their count, their days.
_Buffer = tuple[list[bytes], int, set[int]]
#: Binary COPY's header (signature, flags, extension length) and trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
#: PostgreSQL's epoch (2000-01-01) in Unix seconds, and the largest float4.
_PG_EPOCH_S = 946_684_800
_F32_MAX = 3.4028234663852886e38
_DAY_S = 86_400
#: A row's field count and driver id length; what follows the id, up to the order id's
#: length; and the receive time (see ``_row_format``).
_ROW_START = struct.Struct(">hi")
_ROW_MIDDLE = struct.Struct(">iqididifififi")
_ROW_END = struct.Struct(">iq")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    flush_s: float = 1.0
    batch_rows: int = 5000
    #: Rows kept in memory while PostgreSQL is away; beyond, rows go to spill files.
    max_buffer_rows: int = 100_000
    retention_days: int = 30
    spill_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    lat: float
    lon: float
    heading: float
    speed_mps: float
    accuracy_m: float
    ts: dt.datetime
    order_id: str


def partition_name(day: dt.date) -> str:
    return f"history_{day:%Y%m%d}"


def _day(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, _UTC).date()


def downsample_query() -> str:
    """At most ``max_points`` rows of a driver's window: the first row of each of that many
    equal-count buckets (``ntile``), oldest first, plus the window's total."""
    return """
        WITH w AS (
            SELECT ts, lat, lon, heading, speed_mps, accuracy_m, order_id,
                   ntile(%(max_points)s) OVER (ORDER BY ts) AS bucket,
                   count(*) OVER () AS total
            FROM location.history
            WHERE driver_id = %(driver_id)s AND ts >= %(start)s AND ts < %(end)s
        )
        SELECT DISTINCT ON (bucket) lat, lon, heading, speed_mps, accuracy_m, ts, order_id, total
        FROM w ORDER BY bucket, ts
    """


@lru_cache(maxsize=256)
def _row_format(id_len: int, order_len: int) -> struct.Struct:
    # Field count, then (length, value) per column: text as bytes, timestamptz as int64
    # microseconds since 2000-01-01, lat/lon float8, heading/speed/accuracy float4.
    return struct.Struct(f">hi{id_len}siqididifififi{order_len}siq")


def _pg_us(ts: float) -> int:
    """A Unix time as a timestamptz: microseconds since 2000-01-01 UTC."""
    return round((ts - _PG_EPOCH_S) * 1e6)


def _f4(x: float) -> float:
    """A float4 column's value: too large for float4 is infinity (text COPY would fail)."""
    return x if x <= _F32_MAX else math.inf


def copy_binary(fixes: Sequence[Fix]) -> bytes:
    """Rows in COPY's binary format, without header and trailer: one ``struct`` pack a
    row, no per-value dumpers and no text for PostgreSQL to parse."""
    out = []
    for f in fixes:
        did, oid = f.driver_id.encode(), f.order_id.encode()
        ts, rx = _pg_us(f.device_ts), _pg_us(f.received_ts)
        hd, sp, acc = _f4(f.heading_deg), _f4(f.speed_mps), _f4(f.accuracy_m)
        head = (9, len(did), did, 8, ts, 8, f.lat, 8, f.lon, 4, hd, 4, sp, 4, acc)
        out.append(_row_format(len(did), len(oid)).pack(*head, len(oid), oid, 8, rx))
    return b"".join(out)


def _unix_s(us: int) -> float:
    """A timestamptz (microseconds since 2000-01-01) as Unix seconds; ``_pg_us`` inverts it."""
    return us / 1e6 + _PG_EPOCH_S


def copy_rows(data: bytes) -> Iterator[Row]:
    """The rows that :func:`copy_binary` encoded, back as spill lines (times to the µs,
    heading, speed and accuracy as float4 holds them)."""
    pos, end = 0, len(data)
    while pos < end:
        _, n = _ROW_START.unpack_from(data, pos)
        pos += _ROW_START.size
        driver_id = data[pos : pos + n].decode()
        pos += n
        _, ts, _, lat, _, lon, _, hd, _, sp, _, acc, n = _ROW_MIDDLE.unpack_from(data, pos)
        pos += _ROW_MIDDLE.size
        order_id = data[pos : pos + n].decode()
        pos += n
        _, rx = _ROW_END.unpack_from(data, pos)
        pos += _ROW_END.size
        yield (driver_id, _unix_s(ts), lat, lon, hd, sp, acc, order_id, _unix_s(rx))


def _days(fixes: Iterable[Fix]) -> set[int]:
    """The UTC days (days since the epoch) of the fixes' device times."""
    return {int(f.device_ts // _DAY_S) for f in fixes}


def _fix(r: Sequence[str]) -> Fix:
    """A spill file's line back as a fix."""
    return Fix(
        driver_id=r[0],
        lat=float(r[2]),
        lon=float(r[3]),
        accuracy_m=float(r[6]),
        heading_deg=float(r[4]),
        speed_mps=float(r[5]),
        device_ts=float(r[1]),
        received_ts=float(r[8]),
        order_id=r[7],
    )


class HistoryWriter:
    """Owns the history buffer and the task that drains it into PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool, config: HistoryConfig = HistoryConfig()) -> None:
        self.pool = pool
        self.config = config
        #: The buffer, as ``_Buffer``: days are UTC days since the epoch (device time).
        self._chunks: list[bytes] = []
        self._rows = 0
        self._days: set[int] = set()
        self._known_days: set[dt.date] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        self._spill_seq = 0
        self.written = 0
        self.spilled = 0
        self.healthy = True

    # ----------------------------------------------------------------- input
    def add(self, fixes: Sequence[Fix]) -> None:
        """Queues accepted fixes, encoded as COPY rows; never waits (the ingest path must not)."""
        if not fixes:
            return
        self._chunks.append(copy_binary(fixes))
        self._rows += len(fixes)
        self._days |= _days(fixes)
        if self._rows >= self.config.batch_rows:
            self._wake.set()
        if self._rows > self.config.max_buffer_rows:
            self._spill(self._take())

    @property
    def buffered(self) -> int:
        return self._rows

    def _take(self) -> _Buffer:
        """Empties the buffer; returns what it held."""
        taken = self._chunks, self._rows, self._days
        self._chunks, self._rows, self._days = [], 0, set()
        return taken

    # ------------------------------------------------------------------ task
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="location-history")

    async def stop(self) -> None:
        """Stops the task, then writes what is buffered (or spills it if that fails)."""
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        if self._rows:
            taken = self._take()
            try:
                async with asyncio.timeout(5.0):  # not wait_for: see _run
                    await self._copy(*taken)
            except Exception:
                self._spill(taken)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel
            # that stop() sends when the event fires at the same moment (gh-86296).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.flush_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Writes the buffer (and any spill files) now; returns the rows written."""
        written = 0
        if self._rows:
            chunks, rows, days = self._take()
            try:
                await self._copy(chunks, rows, days)
                written += rows
                self.healthy = True
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.healthy:
                    _log.warning("history: PostgreSQL write failed (%s); buffering", exc)
                self.healthy = False
                # Back to the front of the buffer, bounded: overflow goes to disk.
                self._chunks[:0] = chunks
                self._rows += rows
                self._days |= days
                if self._rows > self.config.max_buffer_rows:
                    self._spill(self._take())
                return 0
        if self.healthy:
            written += await self._drain_spill()
            await self._maybe_retention()
        return written

    # -------------------------------------------------------------- postgres
    async def ensure_partitions(self, days: set[dt.date]) -> None:
        """Creates the day partitions that do not exist yet.

        A partition is created as a plain table, then attached: ATTACH takes only a
        SHARE UPDATE EXCLUSIVE lock on the parent, so it neither waits for nor blocks
        readers and COPYs (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE).
        """
        missing = days - self._known_days
        if not missing:
            return
        async with self.pool.connection() as conn:
            await conn.execute("SET lock_timeout = '5s'")
            for day in sorted(missing):
                start = dt.datetime.combine(day, dt.time(), _UTC)
                name = sql.Identifier(partition_name(day))
                cur = await conn.execute(
                    "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'location' AND c.relname = %s",
                    (partition_name(day),),
                )
                if await cur.fetchone() is None:
                    try:
                        await conn.execute(
                            sql.SQL(
                                "CREATE TABLE IF NOT EXISTS location.{} "
                                "(LIKE location.history INCLUDING DEFAULTS)"
                            ).format(name)
                        )
                        await conn.execute(
                            sql.SQL(
                                "ALTER TABLE location.history ATTACH PARTITION location.{} "
                                "FOR VALUES FROM ({}) TO ({})"
                            ).format(
                                name,
                                sql.Literal(start),
                                sql.Literal(start + dt.timedelta(days=1)),
                            )
                        )
                        await conn.commit()
                    except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation,
                            psycopg.errors.ObjectNotInPrerequisiteState):  # fmt: skip
                        # Another replica created or attached it between our check and now.
                        await conn.rollback()
                await conn.commit()
                self._known_days.add(day)

    async def _copy(self, chunks: Sequence[bytes], rows: int, days: set[int]) -> None:
        """Writes encoded rows (``rows`` of them, device times on ``days``) with one COPY."""
        needed = {_day(d * _DAY_S) for d in days}
        await self.ensure_partitions(needed | {_day(time.time()) + dt.timedelta(days=1)})
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                columns = ", ".join(_COLUMNS)
                copy_sql = f"COPY location.history ({columns}) FROM STDIN (FORMAT BINARY)"
                async with cur.copy(copy_sql) as copy:
                    await copy.write(b"".join((_COPY_HEADER, *chunks, _COPY_TRAILER)))
            await conn.commit()
        self.written += rows
        metrics.HISTORY_ROWS.labels("written").inc(rows)

    async def drop_old_partitions(self, *, today: dt.date | None = None) -> list[str]:
        """Drops day partitions older than the retention period; returns their names."""
        today = today or _day(time.time())
        oldest_kept = today - dt.timedelta(days=self.config.retention_days)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.relname FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE n.nspname = 'location' AND p.relname = 'history'"
            )
            names = [r[0] for r in await cur.fetchall()]
            dropped: list[str] = []
            for name in names:
                try:
                    day = dt.datetime.strptime(name.removeprefix("history_"), "%Y%m%d").date()
                except ValueError:
                    continue
                if day < oldest_kept:
                    await conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS location.{}").format(sql.Identifier(name))
                    )
                    self._known_days.discard(day)
                    dropped.append(name)
            await conn.commit()
        if dropped:
            _log.info("history: dropped %d partitions older than %s", len(dropped), oldest_kept)
        return dropped

    async def _maybe_retention(self) -> None:
        now = time.monotonic()
        if now - self._last_retention < 3600 and self._last_retention:
            return
        self._last_retention = now
        try:
            await self.drop_old_partitions()
        except (psycopg.Error, OSError) as exc:
            _log.warning("history: retention failed (%s); will retry", exc)

    # ----------------------------------------------------------------- spill
    def _spill_files(self) -> list[Path]:
        d = self.config.spill_dir
        return sorted(d.glob("spill-*.csv")) if d is not None and d.exists() else []

    def _spill(self, taken: _Buffer) -> None:
        chunks, rows, _ = taken
        d = self.config.spill_dir
        if d is None:
            _log.error("history: %d rows dropped: PostgreSQL is down and no spill dir", rows)
            metrics.HISTORY_ROWS.labels("dropped").inc(rows)
            return
        d.mkdir(parents=True, exist_ok=True)
        self._spill_seq += 1
        path = d / f"spill-{time.time_ns()}-{os.getpid()}-{self._spill_seq}.csv"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            for chunk in chunks:
                writer.writerows(copy_rows(chunk))
        tmp.rename(path)
        self.spilled += rows
        metrics.HISTORY_ROWS.labels("spilled").inc(rows)
        _log.warning("history: spilled %d rows to %s", rows, path)

    async def _drain_spill(self) -> int:
        written = 0
        for path in self._spill_files():
            with path.open(newline="") as fh:
                rows = [_fix(r) for r in csv.reader(fh)]
            try:
                await self._copy([copy_binary(rows)], len(rows), _days(rows))
            except (psycopg.Error, OSError) as exc:
                _log.warning("history: spill file %s not written yet (%s)", path.name, exc)
                self.healthy = False
                return written
            path.unlink()
            written += len(rows)
            _log.info("history: wrote %d spilled rows from %s", len(rows), path.name)
        return written
