"""PostgreSQL helpers shared by the store and the sandbox ledger."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

__all__ = ["autocommit"]


@contextlib.asynccontextmanager
async def autocommit(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in autocommit mode, given back as it was found.

    A lone statement is then its own transaction, without the two extra round trips
    of BEGIN and COMMIT (``conn.transaction()`` still opens a real one).
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if conn.info.transaction_status == TransactionStatus.IDLE:
                await conn.set_autocommit(False)
            else:  # broken, or left inside a transaction: not to be reused as it is
                await conn.close()
