"""The SQLite files the platform creates: the owner's alone whatever the umask, and in WAL mode from the start."""

from __future__ import annotations

import gc
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from platform_common.db import make_engine
from platform_common.settings import DatabaseSettings


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "svc.db"
    engine = make_engine(DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{path}")), "svc")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            files = sorted(p.name for p in path.parent.iterdir())
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        await engine.dispose()
    assert files == ["svc.db", "svc.db-shm", "svc.db-wal"]
    assert modes == dict.fromkeys(files, 0o600)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_existing_database_keeps_its_content(tmp_path: Path) -> None:
    path = tmp_path / "svc.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.execute("INSERT INTO t VALUES (7)")
    connection.close()
    engine = make_engine(DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{path}")), "svc")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT x FROM t"))).scalar_one() == 7
    finally:
        await engine.dispose()


async def test_a_failed_statement_leaves_no_open_cursor_for_the_garbage_collector(tmp_path: Path) -> None:
    # An unclosed cursor freed by the collector, on the event loop's thread, takes its connection's mutex, which the
    # connection's worker thread may hold for busy_timeout while it waits for the write lock: the whole loop stopped
    # 30 s (platform_common.db._ReleasingCursor). The failed statement's cursor may outlive it; it must be closed.
    engine = make_engine(DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")), "svc")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                with pytest.raises(IntegrityError):
                    async with engine.begin() as conn:
                        await conn.execute(text("INSERT INTO t VALUES (1)"))
            left = [o for o in gc.get_objects() if isinstance(o, aiosqlite.Cursor)]
            open_cursors = [c for c in left if not _closed(c._cursor)]
        finally:
            gc.enable()
        async with engine.connect() as conn:  # the connection is fine afterwards
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await engine.dispose()
    assert left, "the failed statements' cursors were freed at once: this test no longer shows anything"
    assert open_cursors == []


def _closed(cursor: sqlite3.Cursor) -> bool:
    try:
        cursor.fetchone()
    except sqlite3.ProgrammingError:
        return True
    return False
