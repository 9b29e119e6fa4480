"""One retrainer at a time over a shared model store: a PostgreSQL advisory lock as the lease.

Every ETA replica reads (hot-loads) the same model directory; only the one holding
the lease runs a retraining pass and writes into it. The lock is a session lock on a
connection of its own, so a replica that dies mid-pass releases it with its
connection, and no other replica waits: it skips the pass and looks again later.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg

__all__ = ["RETRAIN_LOCK", "retrain_lease"]

#: The advisory lock's key: "eta-retrain" as a stable 63-bit number.
RETRAIN_LOCK = int.from_bytes(b"etaretrn", "big") >> 1


@contextlib.asynccontextmanager
async def retrain_lease(postgres_url: str, *, key: int = RETRAIN_LOCK) -> AsyncIterator[bool]:
    """Yields True while this process holds the lease, False when another one does."""
    async with await psycopg.AsyncConnection.connect(
        postgres_url, autocommit=True, connect_timeout=5
    ) as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        row = await cur.fetchone()
        held = bool(row and row[0])
        try:
            yield held
        finally:
            if held and not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
