"""The journal after SIGKILL: a gap-free prefix that holds every append that had returned.

No root needed: a child process appends in a loop and prints each seq once its
append returned; we kill it by its PID mid-stream and reopen the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.journal import Journal

ROOT = Path(__file__).resolve().parents[2]

# Singles and batches of three, alternating, so a kill can land inside either.
CHILD = textwrap.dedent("""
    import sys
    from supervisor.journal import Journal

    journal = Journal(sys.argv[1])
    n = 0
    while True:
        n += 1
        if n % 2:
            events = [journal.append("container", "start", f"single-{n}", {"n": str(n)})]
        else:
            events = journal.append_many([("container", "die", f"batch-{n}", {"n": str(n)})] * 3)
        for event in events:
            print(event.seq, flush=True)
""")


def read_all(journal: Journal) -> list:
    events, cursor = [], 0
    while page := journal.read(since_seq=cursor, limit=5000):
        events.extend(page)
        cursor = page[-1].seq
    return events


@pytest.mark.parametrize("kill_after", [1, 400])
def test_sigkill_leaves_a_prefix_with_every_returned_append(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    printed: list[int] = []
    try:
        while len(printed) < kill_after:
            line = child.stdout.readline()
            assert line, f"child exited early: {child.wait()} {child.stderr.read()}"
            printed.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)   # the child we started, by its PID
        child.wait()
    # Seqs printed after we stopped reading were returned too; take them all.
    printed += [int(line) for line in child.stdout.read().split()]
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    with Journal(path) as journal:
        events = read_all(journal)
        stored = [e.seq for e in events]
        assert stored == list(range(1, len(stored) + 1)), "seqs have a gap or are out of order"
        assert set(printed) <= set(stored), "an append that returned before the kill is lost"
        assert journal.last_seq() == len(stored)
        # append_many is all or nothing, also when killed in the middle.
        batches: dict[str, int] = {}
        for event in events:
            if event.id.startswith("batch-"):
                batches[event.id] = batches.get(event.id, 0) + 1
        assert set(batches.values()) <= {3}
        # Life goes on with higher seqs.
        assert journal.append("daemon", "reload", "corral").seq == len(stored) + 1


# A record and its event in one append; the crash point sits between the record's
# write and the event's insert, inside the transaction.
CHILD_WITH_RECORD = textwrap.dedent("""
    import sys
    from supervisor.journal import Journal
    from supervisor.state import StateStore, container_put

    journal, store = Journal(sys.argv[1]), StateStore(sys.argv[1])
    journal.append_many([("container", "create", "a" * 64, {"name": "first"})],
                        writes=[container_put({"id": "a" * 64, "name": "first"})])
    print("committed", flush=True)
    journal.append_many([("container", "create", "b" * 64, {"name": "second"})],
                        writes=[container_put({"id": "b" * 64, "name": "second"})])
    print("not reached", flush=True)
""")


def test_sigkill_between_a_record_and_its_event_keeps_neither(tmp_path: Path) -> None:
    from supervisor._crashpoints import ENV
    from supervisor.state import StateStore

    path = tmp_path / "state.db"
    # The second append with writes is where the child kills itself (supervisor/_crashpoints.py).
    env = {**os.environ, "PYTHONPATH": str(ROOT), ENV: "journal:after-writes@2"}
    done = subprocess.run([sys.executable, "-c", CHILD_WITH_RECORD, str(path)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.split("\n")[0] == "committed" and "not reached" not in done.stdout
    assert "crash point journal:after-writes" in done.stderr

    store = StateStore(path)
    try:
        with Journal(path) as journal:
            assert [r["name"] for r in store.containers()] == ["first"]
            assert [(e.seq, e.id) for e in read_all(journal)] == [(1, "a" * 64)]
    finally:
        store.close()
