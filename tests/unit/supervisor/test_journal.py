"""The event journal: seqs, persistence, reads by seq and time, atomic batches, retention."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from protocols.events import Action, Event, EventType
from supervisor.journal import Journal


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "state.db") as j:
        yield j


def test_seq_is_strictly_increasing_from_one(journal: Journal) -> None:
    assert journal.last_seq() == 0
    events = [journal.append(EventType.CONTAINER, Action.START, f"c{i}", {"name": f"n{i}"}) for i in range(5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert journal.last_seq() == 5
    assert journal.read(limit=100) == events


def test_append_returns_what_is_stored(journal: Journal) -> None:
    event = journal.append(EventType.CONTAINER, Action.DIE, "abc", {"exitCode": "137"}, time_ns=42)
    assert event == Event(1, 42, "container", "die", "abc", {"exitCode": "137"})
    assert journal.read() == [event]


def test_survives_reopen_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Journal(path) as j:
        first = j.append_many([(EventType.IMAGE, Action.PULL, "busybox", {})] * 3)
    with Journal(path) as j:
        assert j.read() == first
        assert j.append(EventType.IMAGE, Action.TAG, "busybox").seq == 4


def test_wal_mode_and_full_sync_by_default(journal: Journal) -> None:
    conn = journal._conn
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)   # FULL


def test_read_since_and_until_seq(journal: Journal) -> None:
    journal.append_many([(EventType.CONTAINER, Action.START, f"c{i}", {}) for i in range(10)])
    assert [e.seq for e in journal.read(since_seq=7)] == [8, 9, 10]          # exclusive
    assert [e.seq for e in journal.read(until_seq=3)] == [1, 2, 3]           # inclusive
    assert [e.seq for e in journal.read(since_seq=2, until_seq=5)] == [3, 4, 5]
    assert [e.seq for e in journal.read(since_seq=2, limit=2)] == [3, 4]
    assert journal.read(since_seq=10) == []


def test_read_since_and_until_time(journal: Journal) -> None:
    journal.append_many([(EventType.CONTAINER, Action.START, f"c{i}", {}, 1000 + i * 10) for i in range(10)])
    assert [e.time_ns for e in journal.read(since_ns=1050)] == [1050, 1060, 1070, 1080, 1090]   # inclusive
    assert [e.time_ns for e in journal.read(until_ns=1020)] == [1000, 1010, 1020]              # inclusive
    assert [e.seq for e in journal.read(since_ns=1015, until_ns=1035)] == [3, 4]
    assert journal.seq_before(1050) == 5
    assert journal.seq_before(0) == 0
    assert journal.seq_before(5000) == 10


def test_rows_come_in_seq_order_even_if_the_clock_stepped_back(journal: Journal) -> None:
    journal.append_many([("daemon", Action.RELOAD, "d", {}, t) for t in (300, 100, 200)])
    assert [(e.seq, e.time_ns) for e in journal.read(since_ns=150)] == [(1, 300), (3, 200)]


def test_append_many_is_one_transaction(journal: Journal) -> None:
    journal.append(EventType.CONTAINER, Action.CREATE, "c")
    with pytest.raises(TypeError, match="strings to strings"):
        journal.append_many([
            (EventType.CONTAINER, Action.START, "c", {}),
            (EventType.CONTAINER, Action.DIE, "c", {"exitCode": 1}),   # not a string
        ])
    assert [e.action for e in journal.read()] == ["create"]
    # Nothing of the failed batch reserved a seq.
    assert journal.append(EventType.CONTAINER, Action.START, "c").seq == 2


def test_append_many_rolls_back_on_a_database_error(journal: Journal) -> None:
    journal.append(EventType.CONTAINER, Action.CREATE, "c")
    # A trigger that fails the second insert of the batch, after the first one succeeded.
    journal._conn.execute("CREATE TRIGGER no_die BEFORE INSERT ON events WHEN NEW.action = 'die' "
                          "BEGIN SELECT RAISE(ABORT, 'no die'); END")
    with pytest.raises(sqlite3.IntegrityError, match="no die"):
        journal.append_many([(EventType.CONTAINER, Action.START, "c", {}), (EventType.CONTAINER, Action.DIE, "c", {})])
    assert journal.size() == 1 and journal.last_seq() == 1
    journal._conn.execute("DROP TRIGGER no_die")
    assert [e.seq for e in journal.append_many([(EventType.CONTAINER, Action.DIE, "c", {})] * 2)] == [2, 3]


def test_trim_never_reuses_seqs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Journal(path) as j:
        j.append_many([(EventType.CONTAINER, Action.START, "c", {})] * 10)
        assert j.trim(3) == 7
        assert [e.seq for e in j.read()] == [8, 9, 10] and j.first_seq() == 8
        assert j.trim(0) == 3
        assert j.size() == 0 and j.first_seq() == 11 and j.last_seq() == 10
    with Journal(path) as j:
        assert j.append(EventType.CONTAINER, Action.START, "c").seq == 11


def test_retention_trims_in_batches(tmp_path: Path) -> None:
    with Journal(tmp_path / "state.db", max_events=100) as j:
        for _ in range(10):
            j.append_many([(EventType.CONTAINER, Action.START, "c", {})] * 10)
        assert j.size() == 100          # at the bound, not yet 1 % past it
        j.append(EventType.CONTAINER, Action.START, "c")
        assert j.size() == 101
        j.append(EventType.CONTAINER, Action.START, "c")
        assert j.size() == 100 and j.first_seq() == 3 and j.last_seq() == 102


def test_threads_get_distinct_contiguous_seqs(journal: Journal) -> None:
    seqs: list[int] = []

    def writer(n: int) -> None:
        for i in range(50):
            seqs.append(journal.append(EventType.CONTAINER, Action.START, f"{n}-{i}").seq)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 201))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"synchronous": "OFF"}, "invalid synchronous mode 'OFF'"),
    ({"max_events": 0}, "invalid max_events 0"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Journal(tmp_path / "state.db", **kwargs)


def test_closed_journal_refuses_calls(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state.db")
    j.close()
    j.close()
    with pytest.raises(sqlite3.ProgrammingError):
        j.append(EventType.CONTAINER, Action.START, "c")
