"""Container records in SQLite (``state.db``, beside the event journal).

Synchronous; the Engine calls it from a worker thread. One row per container:
indexed columns for what is looked up (id, name), the rest as JSON, written
whole on every change (a record is a few hundred bytes; partial updates would
buy nothing but ways to tear it). ``synchronous=FULL``: a container the
daemon reported created must still exist after a power loss.

Row <-> dict conversion is the caller's (pure, in the Engine); this module
knows tables, not containers.

A record that changes with an event is not written here: ``container_put``,
``container_delete``, ``volume_put`` and ``volume_delete`` build the statement, and the Engine hands it to the
event bus, which runs it in the journal's transaction with the event
(journal.py rule 6). ``StateStore``'s own methods run the same statements
alone, for changes that have no event and for tools.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from os import PathLike
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    record  TEXT NOT NULL          -- JSON object
);
CREATE TABLE IF NOT EXISTS volumes (
    name    TEXT PRIMARY KEY,
    record  TEXT NOT NULL
);
"""


def container_put(record: dict[str, Any]) -> tuple[str, tuple[object, ...]]:
    """The statement that inserts or replaces a container record by id (pure).

    Run, it raises ``sqlite3.IntegrityError`` when another container has the name.
    """
    sql = ("INSERT INTO containers (id, name, record) VALUES (?, ?, ?) "
           "ON CONFLICT(id) DO UPDATE SET name = excluded.name, record = excluded.record")
    return sql, (record["id"], record["name"], json.dumps(record))


def container_delete(container_id: str) -> tuple[str, tuple[object, ...]]:
    """The statement that deletes a container record (pure); no record is fine."""
    return "DELETE FROM containers WHERE id = ?", (container_id,)


def volume_put(name: str, record: dict[str, Any]) -> tuple[str, tuple[object, ...]]:
    """The statement that inserts or replaces a volume record (pure)."""
    return "INSERT OR REPLACE INTO volumes (name, record) VALUES (?, ?)", (name, json.dumps(record))


def volume_delete(name: str) -> tuple[str, tuple[object, ...]]:
    """The statement that deletes a volume record (pure); no record is fine."""
    return "DELETE FROM volumes WHERE name = ?", (name,)


class StateStore:
    """Persisted records; every method is one transaction."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def put_container(self, record: dict[str, Any]) -> None:
        """Insert or replace by id.

        Raises:
            sqlite3.IntegrityError: another container has this name.
        """
        with self._lock:
            self._conn.execute(*container_put(record))

    def delete_container(self, container_id: str) -> None:
        with self._lock:
            self._conn.execute(*container_delete(container_id))

    def containers(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT record FROM containers ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    def put_volume(self, name: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(*volume_put(name, record))

    def delete_volume(self, name: str) -> None:
        with self._lock:
            self._conn.execute(*volume_delete(name))

    def volumes(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT record FROM volumes ORDER BY name").fetchall()
        return [json.loads(r[0]) for r in rows]
