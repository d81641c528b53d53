"""Engines, sessions and metadata for PostgreSQL (asyncpg) and SQLite (aiosqlite).

Every service keeps its tables in its own PostgreSQL schema. SQLite has no schemas, so there the schema is
translated away (``schema_translate_map``) and each service gets its own database file instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from aiosqlite.context import contextmanager
from sqlalchemy import DateTime, MetaData, TypeDecorator, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from platform_common.settings import DatabaseSettings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware on both databases: SQLite hands back naive values, which are UTC here by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Per connection: busy_timeout makes writers queue instead of failing. WAL is a property of the file, set once
    # in make_engine: switching a rollback-journal file to WAL here, on every connect, fails at once with "database
    # is locked" (no busy wait) whenever another connection holds the write lock, i.e. whenever several
    # connections open a freshly migrated file at the same moment.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _ReleasingCursor(aiosqlite.Cursor):
    """An aiosqlite cursor that closes itself, in its connection's worker thread, when its statement fails.

    A failed statement (a duplicate key on an idempotent insert, a lock wait that timed out) leaves its cursor in
    a reference cycle through the exception's traceback, so the garbage collector frees it later, on the event
    loop's thread; freeing an unclosed sqlite3 cursor resets its statement, which takes the connection's mutex.
    If that pooled connection is by then busy-waiting for the write lock in its worker thread, the mutex is held
    for up to ``busy_timeout`` (30 s) and the whole loop stops with it, the task holding the lock included: every
    writer of the process stalled 30 s and then failed with "database is locked". A closed cursor has no statement
    left to reset, so freeing it later touches nothing."""

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> aiosqlite.Cursor:
        try:
            return await super().execute(sql, parameters)
        except Exception:
            await self._close_quietly()
            raise

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> aiosqlite.Cursor:
        try:
            return await super().executemany(sql, parameters)
        except Exception:
            await self._close_quietly()
            raise

    async def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.close()


class _ReleasingConnection(aiosqlite.Connection):
    @contextmanager  # as aiosqlite's own: awaitable, and usable with ``async with``
    async def cursor(self) -> aiosqlite.Cursor:
        return _ReleasingCursor(self, await self._execute(self._conn.cursor))  # type: ignore[no-untyped-call]


def _sqlite_connector(path: str) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """What SQLAlchemy's aiosqlite dialect opens (``check_same_thread=False``, a daemon worker thread), with
    ``_ReleasingCursor`` cursors."""

    async def connect() -> aiosqlite.Connection:
        connection = _ReleasingConnection(functools.partial(sqlite3.connect, path, check_same_thread=False), 64)
        connection._thread.daemon = True  # as the dialect does: a worker never keeps the process alive
        return await connection

    return connect


def _create_private(path: Path) -> None:
    """A new database file is the owner's alone (0600) whatever the umask; SQLite gives its -wal and -shm files the
    database file's mode, so they follow. An empty file is a valid empty database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _ensure_wal(path: str, timeout_s: float = 30.0) -> None:
    """Switch the file to WAL (lets the relay read while a handler writes) before any pooled connection exists.

    The switch needs the write lock and SQLite does not busy-wait for it, so a concurrent writer (another process
    starting on the same file) is waited for here, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        connection = sqlite3.connect(path, timeout=timeout_s)
        try:
            if str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                return
            raise RuntimeError(f"SQLite refused WAL mode for {path}")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        finally:
            connection.close()
        time.sleep(0.01)  # a lock held by another process: nothing to wait on but time


def make_engine(settings: DatabaseSettings, schema: str) -> AsyncEngine:
    url = make_url(settings.url.get_secret_value())
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _create_private(Path(url.database))
            _ensure_wal(url.database)
        database = url.database or ":memory:"
        engine = create_async_engine(url, echo=settings.echo, async_creator=_sqlite_connector(database))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine.execution_options(schema_translate_map={schema: None})
    return create_async_engine(
        url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
    )


class Database:
    """A service's engine and session factory. Sessions never autocommit: use cases own the transaction."""

    def __init__(self, settings: DatabaseSettings, schema: str) -> None:
        self.schema = schema
        self.engine = make_engine(settings, schema)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def one_writer(self) -> AsyncIterator[None]:
        """On SQLite, one write transaction of this process at a time; on PostgreSQL nothing.

        SQLite admits one writer anyway. Left to its busy handler, a burst of concurrent writers (60 submissions at
        once, half of them repeating an Idempotency-Key) sometimes stalled every pooled connection for longer than
        the pool's 30 s checkout timeout; queueing them here, before a connection is taken, keeps them short.
        """
        if not self.is_sqlite:
            yield
            return
        async with self._writer:
            yield

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
