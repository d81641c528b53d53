"""Write-through record store: every record lives in memory and, unless in-memory, in one SQLite file.

The simulator is single-process and runs on one event loop; a mutation is a plain synchronous call with no
``await`` between reading and writing, so it is atomic with respect to other requests. Records are pydantic models
persisted as JSON; bulky payloads (invoice XML, UPOs, export parts, batch parts) go to ``blob`` rows read on demand.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS blob (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class Record(BaseModel):
    """A stored entity. Subclasses set ``KIND`` and implement ``key``; call ``Store.put`` after changing one."""

    model_config = ConfigDict(validate_assignment=False)
    KIND: ClassVar[str]

    def key(self) -> str:
        raise NotImplementedError


R = TypeVar("R", bound=Record)


class Store:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._cache: dict[str, dict[str, Record]] = {}
        self._in_batch = False

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes in one SQLite transaction (seeding thousands of invoices)."""
        if self._in_batch:
            yield
            return
        self._in_batch = True
        self._conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._cache.clear()  # memory may hold writes the file never got; reload from the file
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            self._in_batch = False

    def _kind(self, model: type[R]) -> dict[str, R]:
        records = self._cache.get(model.KIND)
        if records is None:
            rows = self._conn.execute("SELECT key, data FROM record WHERE kind = ? ORDER BY rowid", (model.KIND,))
            records = {key: model.model_validate_json(data) for key, data in rows}
            self._cache[model.KIND] = records
        return records  # type: ignore[return-value]

    def get(self, model: type[R], key: str) -> R | None:
        return self._kind(model).get(key)

    def all(self, model: type[R]) -> list[R]:
        """Records of a kind in insertion order."""
        return list(self._kind(model).values())

    def count(self, model: type[R]) -> int:
        return len(self._kind(model))

    def put(self, record: Record) -> None:
        key = record.key()
        self._conn.execute(
            "INSERT INTO record (kind, key, data) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
            (record.KIND, key, record.model_dump_json()),
        )
        self._kind(type(record))[key] = record

    def delete(self, model: type[R], key: str) -> None:
        self._conn.execute("DELETE FROM record WHERE kind = ? AND key = ?", (model.KIND, key))
        self._kind(model).pop(key, None)

    def put_blob(self, name: str, data: bytes) -> None:
        self._conn.execute(
            "INSERT INTO blob (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (name, data),
        )

    def get_blob(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT data FROM blob WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def delete_blob(self, name: str) -> None:
        self._conn.execute("DELETE FROM blob WHERE name = ?", (name,))

    def get_meta(self, name: str) -> Any:
        row = self._conn.execute("SELECT data FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, name: str, value: Any) -> None:
        self._conn.execute(
            "INSERT INTO meta (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (name, json.dumps(value)),
        )

    def next_sequence(self, name: str) -> int:
        value = int(self.get_meta(f"seq:{name}") or 0) + 1
        self.set_meta(f"seq:{name}", value)
        return value
