"""The event journal: an append-only SQLite table that assigns every event its ``seq``.

Synchronous on purpose: the event bus calls it from a worker thread
(``trio.to_thread.run_sync``), and so may any tool that reads ``state.db``.

Rules:

1. ``seq`` is assigned here, inside the write transaction: one more than the
   highest ``seq`` ever committed (``sqlite_sequence``, kept by AUTOINCREMENT).
   Seqs are therefore contiguous and strictly increasing, a rolled-back append
   leaves no hole, and a trimmed seq is never handed out again.
2. An event is visible to anyone (``read`` or the bus) only after its
   transaction committed. The bus publishes only what ``append*`` returned, so
   a subscriber never sees an event that a crash can take back.
3. ``synchronous=FULL`` by default. In WAL mode ``NORMAL`` already survives a
   crash of *our process* (the WAL is in the kernel's page cache), but not a
   power loss or kernel panic: the last commits may be lost, their seqs reused
   by different events, and a subscriber that saw seq N and resumes with
   ``since=N`` would then silently skip the new N. ``FULL`` fsyncs the WAL on
   every commit, which costs about one disk flush per append; events come at
   human rates (tens per second), and ``append_many`` batches the bursts, so
   the promise is worth its price. ``synchronous="NORMAL"`` is accepted for
   tests and benchmarks that do not care about power loss.
4. Retention: at most ``max_events`` rows (default 1,000,000: about 225 MB
   with 64-character ids and four attributes; freed pages are reused).
   The oldest rows are deleted in the same transaction as the append that
   passes the bound by 1 %, so deletes come in batches, not one per append.
   ``trim(keep_last_n)`` does it on demand.
5. One connection, guarded by one ``threading.Lock``: calls may come from any
   thread, one at a time. Readers briefly wait for writers; that is cheaper
   than a second connection per thread for a table this small per row.
6. A state change and its event commit together. ``append_many(drafts,
   writes=...)`` runs the state rows' statements (``supervisor.state``'s
   ``*_write`` builders: a container record put or deleted) and inserts the
   events in one transaction, so after a crash ``state.db`` holds both or
   neither: never a record whose event is missing, never an event that
   describes a record a crash took back. A write that fails (a taken name)
   rolls the events back with it.

Attributes are stored as JSON text rather than msgpack so the journal stays
readable with the ``sqlite3`` shell (``json_extract(attributes, '$.name')``).

Rejected: seq from ``time.monotonic_ns`` (not unique, not persistent); a
plain ``INTEGER PRIMARY KEY`` without AUTOINCREMENT (after trimming every row,
or a rollback of the newest rows, SQLite would hand the same rowid out again).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from types import TracebackType

from protocols.events import Event

from ._crashpoints import crash_point

DEFAULT_MAX_EVENTS = 1_000_000
SYNCHRONOUS_MODES = ("FULL", "NORMAL")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns    INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    attributes TEXT    NOT NULL    -- JSON object, strings to strings
);
CREATE INDEX IF NOT EXISTS events_time_ns ON events (time_ns);
"""

# What append_many takes: (type, action, id, attributes[, time_ns]).
EventDraft = tuple[str, str, str, Mapping[str, str]] | tuple[str, str, str, Mapping[str, str], int | None]
# What append_many(writes=...) takes: one SQL statement and its parameters (rule 6).
Write = tuple[str, Sequence[object]]


class Journal:
    """Append-only, persisted, ordered events.

    Args:
        path: the SQLite file (``state.db``); ``":memory:"`` for tests.
        max_events: retention bound, see rule 4; ``None`` keeps everything.
        synchronous: ``"FULL"`` (default, survives power loss) or ``"NORMAL"``.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        max_events: int | None = DEFAULT_MAX_EVENTS,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"invalid synchronous mode {synchronous!r}, expected one of {SYNCHRONOUS_MODES}")
        if max_events is not None and max_events < 1:
            raise ValueError(f"invalid max_events {max_events}, must be at least 1")
        self._max_events = max_events
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a
        # transaction is exactly what the code says (the sqlite3 module's
        # implicit transactions would otherwise open them for us).
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            # state.db is shared with the state store's connection.
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)
            self._first_seq = self._query_first_seq()
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls raise ``sqlite3.ProgrammingError``. Idempotent."""
        with self._lock:
            self._conn.close()

    def append(self, type: str, action: str, id: str, attributes: Mapping[str, str] | None = None,
               time_ns: int | None = None) -> Event:
        """Store one event and return it with its ``seq``; committed when this returns.

        Args:
            time_ns: wall-clock time; ``time.time_ns()`` when ``None``.

        Raises:
            TypeError: an attribute key or value is not a string.
        """
        return self.append_many([(type, action, id, attributes or {}, time_ns)])[0]

    def append_many(self, drafts: Iterable[EventDraft], *, writes: Iterable[Write] = ()) -> list[Event]:
        """Store events in one transaction: all of them or, on error, none.

        Args:
            drafts: ``(type, action, id, attributes)`` tuples, optionally with a
                fifth item ``time_ns`` (``None`` or absent: now). May be empty
                when there are ``writes``: a state change with no event.
            writes: state rows that change with these events (rule 6),
                executed first, in the same transaction.

        Returns:
            The stored events, in order, with consecutive seqs.

        Raises:
            TypeError: an attribute key or value is not a string, or a draft has
                the wrong length; nothing is stored.
            sqlite3.Error: a write failed (``IntegrityError``: a unique name
                taken); nothing is stored.
        """
        now = time.time_ns()
        prepared = []
        for draft in drafts:
            if len(draft) == 4:
                type_, action, id_, attributes = draft
                time_ns = None
            elif len(draft) == 5:
                type_, action, id_, attributes, time_ns = draft
            else:
                raise TypeError(f"event draft must have 4 or 5 items, got {draft!r}")
            attributes = dict(attributes or {})
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
                raise TypeError(f"event attributes must map strings to strings, got {attributes!r}")
            prepared.append((now if time_ns is None else time_ns, type_, action, id_, attributes))
        writes = list(writes)
        if not prepared and not writes:
            return []
        with self._lock:
            conn = self._conn
            # IMMEDIATE: take the write lock before reading the next seq, so no
            # other connection to state.db can commit one in between.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in writes:
                    conn.execute(sql, params)
                if writes:
                    crash_point("journal:after-writes")
                first = self._query_last_seq() + 1
                events = [
                    Event(first + i, time_ns, type_, action, id_, attributes)
                    for i, (time_ns, type_, action, id_, attributes) in enumerate(prepared)
                ]
                conn.executemany(
                    "INSERT INTO events (seq, time_ns, type, action, id, attributes) VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.seq, e.time_ns, e.type, e.action, e.id, json.dumps(attrs, separators=(",", ":")))
                     for e, (*_, attrs) in zip(events, prepared, strict=True)],
                )
                first_kept = self._first_seq or (first if events else None)
                if events and self._max_events is not None and events[-1].seq - first_kept + 1 > self._max_events * 1.01:
                    first_kept = self._delete_before(events[-1].seq - self._max_events + 1)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._first_seq = first_kept
        return events

    def read(self, since_seq: int | None = None, until_seq: int | None = None,
             since_ns: int | None = None, until_ns: int | None = None, *, limit: int = 1000) -> list[Event]:
        """Committed events in seq order.

        Args:
            since_seq: only events *after* this seq (exclusive: pass the last
                seq you saw to resume).
            until_seq: only events up to this seq (inclusive).
            since_ns, until_ns: only events with ``since_ns <= time_ns <= until_ns``
                (both inclusive, as dockerd's ``since``/``until``).
            limit: at most this many events; page with ``since_seq`` set to
                the last seq returned. Fewer than ``limit`` means the end was
                reached at the time of the read.
        """
        clauses, params = [], []
        for column, op, value in (("seq", ">", since_seq), ("seq", "<=", until_seq),
                                  ("time_ns", ">=", since_ns), ("time_ns", "<=", until_ns)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # ORDER BY seq keeps the primary-key scan even with a time bound, so
        # the rows come in seq order without a sort.
        sql = f"SELECT seq, time_ns, type, action, id, attributes FROM events {where} ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit)).fetchall()
        return [Event(seq, t, ty, a, i, json.loads(attrs)) for seq, t, ty, a, i, attrs in rows]

    def last_seq(self) -> int:
        """The highest seq ever committed, 0 for a new journal (even if trimmed since)."""
        with self._lock:
            return self._query_last_seq()

    def first_seq(self) -> int:
        """The lowest seq still stored; ``last_seq() + 1`` when the journal is empty."""
        with self._lock:
            return self._first_seq or self._query_last_seq() + 1

    def seq_before(self, time_ns: int) -> int:
        """The seq to resume after to get events from ``time_ns`` on.

        That is one less than the first seq stored at or after ``time_ns``
        (``last_seq()`` if there is none). Exact while the wall clock only moves
        forwards; callers that must be exact anyway also check ``time_ns``.
        """
        with self._lock:
            (seq,) = self._conn.execute("SELECT min(seq) FROM events WHERE time_ns >= ?", (time_ns,)).fetchone()
            return self._query_last_seq() if seq is None else seq - 1

    def size(self) -> int:
        """How many events are stored."""
        with self._lock:
            (count,) = self._conn.execute("SELECT count(*) FROM events").fetchone()
            return count

    def trim(self, keep_last_n: int) -> int:
        """Delete all but the newest ``keep_last_n`` events; returns how many were deleted.

        The seqs of deleted events are never reused.
        """
        if keep_last_n < 0:
            raise ValueError(f"invalid keep_last_n {keep_last_n}, must be at least 0")
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                first_kept = self._delete_before(self._query_last_seq() - keep_last_n + 1)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._first_seq = first_kept
            return self._conn.total_changes - before

    # The helpers below run with self._lock held.

    def _query_last_seq(self) -> int:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else row[0]

    def _query_first_seq(self) -> int | None:
        (seq,) = self._conn.execute("SELECT min(seq) FROM events").fetchone()
        return seq

    def _delete_before(self, first_kept: int) -> int | None:
        self._conn.execute("DELETE FROM events WHERE seq < ?", (first_kept,))
        return self._query_first_seq()
