"""The state store: records survive a reopen, names stay unique, one row per id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.state import StateStore


def test_records_survive_reopen_and_update_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.put_container({"id": "a" * 64, "name": "web", "status": "created"})
    store.put_container({"id": "b" * 64, "name": "db", "status": "running"})
    store.put_container({"id": "a" * 64, "name": "web2", "status": "running"})
    store.close()
    store = StateStore(path)
    assert [(r["name"], r["status"]) for r in store.containers()] == [("web2", "running"), ("db", "running")]
    store.delete_container("b" * 64)
    assert [r["name"] for r in store.containers()] == ["web2"]
    store.close()


def test_names_are_unique(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.put_container({"id": "a" * 64, "name": "web"})
    with pytest.raises(sqlite3.IntegrityError):
        store.put_container({"id": "b" * 64, "name": "web"})
    assert len(store.containers()) == 1
    store.close()


def test_volumes(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.put_volume("data", {"name": "data", "mountpoint": "/v/data"})
    assert store.volumes() == [{"name": "data", "mountpoint": "/v/data"}]
    store.delete_volume("data")
    assert store.volumes() == []
    store.close()


def test_a_record_and_its_event_commit_together(tmp_path: Path) -> None:
    from supervisor.journal import Journal
    from supervisor.state import container_delete, container_put

    path = tmp_path / "state.db"
    with Journal(path) as journal:
        store = StateStore(path)
        (event,) = journal.append_many([("container", "create", "a" * 64, {"name": "web"})],
                                       writes=[container_put({"id": "a" * 64, "name": "web"})])
        assert [r["name"] for r in store.containers()] == ["web"] and journal.read() == [event]
        # A write that fails takes its events with it: no seq is used, nothing is stored.
        with pytest.raises(sqlite3.IntegrityError):
            journal.append_many([("container", "create", "b" * 64, {"name": "web"})],
                                writes=[container_put({"id": "b" * 64, "name": "web"})])
        assert [r["id"] for r in store.containers()] == ["a" * 64] and journal.last_seq() == 1
        # A write with no event: the record changes, the journal does not.
        assert journal.append_many([], writes=[container_delete("a" * 64)]) == []
        assert store.containers() == [] and journal.last_seq() == 1 and journal.first_seq() == 1
        store.close()
