"""Throw-away PostgreSQL databases for tests and benchmarks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import URL, make_url


async def _admin(url: URL, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run_detached(coro: Coroutine[Any, Any, None]) -> None:
    # A short-lived loop in a worker thread works whether or not the caller is inside a running loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


@contextmanager
def temporary_database(admin_url: URL | str, prefix: str = "test") -> Iterator[str]:
    """Create an empty database next to ``admin_url``'s, yield its URL, drop it (even if still in use)."""
    admin = make_url(admin_url) if isinstance(admin_url, str) else admin_url
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    _run_detached(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        _run_detached(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
