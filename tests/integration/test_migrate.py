"""The migration runner against a real PostgreSQL: idempotent, ordered, safe to race."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from servers.runtime.migrate import MigrationError, load_migrations, migrate


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(sql))


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    write(
        d,
        "0001_orders.sql",
        """
        CREATE SCHEMA orders;
        CREATE TABLE orders.orders (order_id text PRIMARY KEY, status text NOT NULL);
        """,
    )
    write(
        d,
        "0002_timeline.sql",
        """
        CREATE TABLE orders.timeline (order_id text REFERENCES orders.orders, status text);
        -- Slow on purpose so that concurrent runners overlap.
        SELECT pg_sleep(0.3);
        """,
    )
    return d


async def tables(url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            " WHERE table_schema = 'orders'"
        )
        return {r[0] for r in await cur.fetchall()}


async def test_migrations_apply_in_order_once(pg_url: str, migrations_dir: Path) -> None:
    ms = load_migrations(migrations_dir)
    first = await migrate(pg_url, service="order", migrations=ms)
    assert [m.version for m in first] == [1, 2]
    assert await tables(pg_url) == {"orders.orders", "orders.timeline"}
    again = await migrate(pg_url, service="order", migrations=ms)
    assert again == []


async def test_new_migration_is_applied_on_next_run(pg_url: str, migrations_dir: Path) -> None:
    await migrate(pg_url, service="order", migrations=load_migrations(migrations_dir))
    write(migrations_dir, "0003_index.sql", "CREATE INDEX ON orders.orders (status);")
    applied = await migrate(pg_url, service="order", migrations=load_migrations(migrations_dir))
    assert [m.version for m in applied] == [3]


async def test_two_runners_at_once_apply_each_migration_exactly_once(
    pg_url: str, migrations_dir: Path
) -> None:
    ms = load_migrations(migrations_dir)
    results = await asyncio.gather(
        *(migrate(pg_url, service="order", migrations=ms) for _ in range(4))
    )
    assert sorted(len(r) for r in results) == [0, 0, 0, 2]
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM foodmesh_meta.migrations")
        assert (await cur.fetchone()) == (2,)


async def test_two_processes_at_once_apply_each_migration_exactly_once(
    pg_url: str, migrations_dir: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from servers.runtime.migrate import load_migrations, migrate
        ms = load_migrations(Path({str(migrations_dir)!r}))
        applied = asyncio.run(migrate({pg_url!r}, service="order", migrations=ms))
        print(len(applied))
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode() for o in outs]
    assert sorted(int(o[0]) for o in outs) == [0, 2]
    assert await tables(pg_url) == {"orders.orders", "orders.timeline"}


async def test_failed_migration_leaves_nothing_half_applied(pg_url: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "0001_ok.sql", "CREATE SCHEMA orders; CREATE TABLE orders.a (x int);")
    write(d, "0002_bad.sql", "CREATE TABLE orders.b (x int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match="0002_bad.sql"):
        await migrate(pg_url, service="order", migrations=load_migrations(d))
    assert await tables(pg_url) == {"orders.a"}
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT version FROM foodmesh_meta.migrations")
        assert [r[0] for r in await cur.fetchall()] == [1]


async def test_changed_applied_migration_is_refused(pg_url: str, migrations_dir: Path) -> None:
    await migrate(pg_url, service="order", migrations=load_migrations(migrations_dir))
    write(migrations_dir, "0001_orders.sql", "CREATE SCHEMA something_else;")
    with pytest.raises(MigrationError, match="0001_orders.sql.*changed"):
        await migrate(pg_url, service="order", migrations=load_migrations(migrations_dir))


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "1_orders.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_what.sql"):
        load_migrations(tmp_path)
