"""The database: open it (migrating it to the newest schema first), write and read calls.

    store = await Store.open(settings)        # migrates; safe with many processes at once
    await store.insert_calls(rows)            # one INSERT for the whole batch
    await store.delete_calls_before(cutoff)   # retention
    await store.close()

Migrations are Alembic's (server/store/migrations/), run at start-up by every
process. Several workers or replicas starting at once take turns: on
PostgreSQL under a transaction-scoped advisory lock, on SQLite under an
exclusive lock on a file beside the database. The one that comes second finds
the schema current and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.store.schema import calls
from server.store.settings import SQLITE_FILE, StoreSettings

log = logging.getLogger(__name__)

MIGRATIONS = pathlib.Path(__file__).with_name("migrations")
# Any fixed 64-bit number: the advisory lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x41494743_0001  # "AIGC", 1
# A writer that finds the SQLite file locked waits this long before failing.
_SQLITE_BUSY_MS = 5000


class Store:
    def __init__(self, engine: AsyncEngine, kind: str) -> None:
        self.engine = engine
        self.kind = kind

    @classmethod
    async def open(cls, settings: StoreSettings) -> Store:
        """Connects and migrates to the newest schema. Raises if the database cannot be reached."""
        if settings.kind == "sqlite":
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(settings.url, pool_pre_ping=True)
        if settings.kind == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine, settings.kind)
        try:
            await store.migrate(settings)
        except BaseException:
            await engine.dispose()
            raise
        log.info(
            "store ready",
            extra={"database": engine.url.render_as_string(hide_password=True), "schema": HEAD},
        )
        return store

    async def migrate(self, settings: StoreSettings) -> None:
        async with self._migration_lock(settings), self.engine.begin() as conn:
            if self.kind == "postgresql":
                # Held until this transaction commits: a second process waits here,
                # then finds the schema current.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
            await conn.run_sync(_upgrade)

    async def schema_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def insert_calls(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            async with self.engine.begin() as conn:
                await conn.execute(calls.insert(), list(rows))

    async def delete_calls_before(self, cutoff: datetime.datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(calls.delete().where(calls.c.time < cutoff))
            return result.rowcount or 0

    async def count_calls(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(calls))).scalar_one()

    async def list_calls(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest calls first (the admin API's paginated query builds on this table)."""
        async with self.engine.connect() as conn:
            query = sa.select(calls).order_by(calls.c.time.desc(), calls.c.id.desc()).limit(limit)
            result = await conn.execute(query)
            return [dict(row._mapping) for row in result]

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _migration_lock(self, settings: StoreSettings) -> AsyncIterator[None]:
        if self.kind != "sqlite":
            yield
            return
        # SQLite has no advisory locks; an flock on a file beside the database
        # serves the processes of this machine, which are all that share the file.
        fd = os.open(settings.data_dir / f"{SQLITE_FILE}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the file releases the lock


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers never block the writer; busy_timeout: several workers'
    # writers wait their turn instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cursor.close()


HEAD = ScriptDirectory.from_config(_alembic_config()).get_current_head()
