"""Schema migrations: ordered plain-SQL files per service, applied once, safe to race.

Files are named ``NNNN_what.sql`` in a service's ``migrations/`` folder. Each
is applied in its own transaction and recorded (with a checksum) in
``foodmesh_meta.migrations``. A PostgreSQL advisory lock serialises runners, so
any number of replicas may start at once: the first applies, the rest find
nothing to do. An applied file that later changes is an error, never silently
re-run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from foodmesh.core.errors import FoodmeshError

__all__ = ["Migration", "MigrationError", "load_migrations", "migrate"]

_log = logging.getLogger("foodmesh.migrate")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: every foodmesh migration runner takes this one lock.
_LOCK_KEY = 0x666F6F646D657368  # "foodmesh"

_META = """
CREATE SCHEMA IF NOT EXISTS foodmesh_meta;
CREATE TABLE IF NOT EXISTS foodmesh_meta.migrations (
    service    text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);
"""


class MigrationError(FoodmeshError):
    """A migration file is malformed, changed after being applied, or failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, ordered; rejects bad names and duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_what.sql")
        version = int(match.group(1))
        if version in found:
            other = found[version].path.name
            raise MigrationError(f"{path}: version {version} is also used by {other}")
        found[version] = Migration(version, match.group(2), path.read_text(), path)
    return [found[v] for v in sorted(found)]


async def migrate(url: str, *, service: str, migrations: list[Migration]) -> list[Migration]:
    """Applies what is not yet applied for ``service``; returns what it applied."""
    applied_now: list[Migration] = []
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=5, application_name=f"foodmesh-migrate-{service}"
    ) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(_META)
            cur = await conn.execute(
                "SELECT version, checksum FROM foodmesh_meta.migrations WHERE service = %s",
                (service,),
            )
            done = {int(v): str(c) for v, c in await cur.fetchall()}
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(
                            f"{m.path}: changed after it was applied; add a new migration instead"
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(m.sql.encode())
                        await conn.execute(
                            "INSERT INTO foodmesh_meta.migrations"
                            " (service, version, name, checksum) VALUES (%s, %s, %s, %s)",
                            (service, m.version, m.name, m.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{m.path}: {exc}".strip()) from None
                _log.info("applied %s migration %04d_%s", service, m.version, m.name)
                applied_now.append(m)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
