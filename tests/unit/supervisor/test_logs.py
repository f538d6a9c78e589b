"""supervisor/logs.py without root: rotation, the cursor across rotated files, filtering, the capture thread."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
from pathlib import Path

import pytest
import trio

from protocols.jsonlog import LogConfig, encode_lines, format_time
from supervisor.errors import InvalidRequest
from supervisor.logs import (
    Capture,
    JsonFileWriter,
    LogCursor,
    LogQuery,
    log_config_of,
    make_query,
    read_logs,
    rotated_files,
    select_entries,
)

T0 = 1_764_408_058_000_000_000


def entries(n: int, *, start: int = 0, stream: str = "stdout", step_ns: int = 1_000_000_000) -> list[bytes]:
    return [encode_lines(b"line %d\n" % i, stream=stream, stamp=format_time(T0 + i * step_ns))
            for i in range(start, start + n)]


def logs_in(path: Path) -> list[str]:
    return [json.loads(line)["log"] for line in path.read_bytes().splitlines()]


# --- writer --------------------------------------------------------------------------------------


def test_writer_without_limit_appends(tmp_path: Path) -> None:
    w = JsonFileWriter(tmp_path / "c.log")
    w.write(b"".join(entries(3)))
    w.write(b"".join(entries(2, start=3)))
    w.close()
    assert logs_in(tmp_path / "c.log") == [f"line {i}\n" for i in range(5)]
    assert rotated_files(tmp_path / "c.log") == [tmp_path / "c.log"]


def test_writer_rotates_between_whole_entries_and_caps_the_count(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    size = len(entries(1)[0])                   # every entry of line 0..9 has the same length
    w = JsonFileWriter(path, max_size_bytes=3 * size, max_files=3)
    w.write(b"".join(entries(10)))              # one batch: cut at entry boundaries
    w.write(b"".join(entries(2, start=10)))
    w.close()
    assert rotated_files(path) == [path.with_name("c.log.2"), path.with_name("c.log.1"), path]
    assert not path.with_name("c.log.3").exists()
    assert logs_in(path.with_name("c.log.2")) == ["line 6\n", "line 7\n", "line 8\n"]
    assert logs_in(path.with_name("c.log.1")) == ["line 9\n", "line 10\n", "line 11\n"][:3]
    assert logs_in(path) == []
    for p in rotated_files(path):
        assert p.read_bytes() == b"" or p.read_bytes().endswith(b"\n")


def test_writer_with_one_file_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    size = len(entries(1)[0])
    w = JsonFileWriter(path, max_size_bytes=2 * size + 1, max_files=1)
    w.write(b"".join(entries(7)))
    w.close()
    assert rotated_files(path) == [path]
    assert logs_in(path) == ["line 6\n"]


def test_writer_rotates_a_file_already_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"".join(entries(5)))       # left by an earlier run with a bigger limit
    w = JsonFileWriter(path, max_size_bytes=len(entries(1)[0]) * 2 + 1, max_files=2)
    w.write(entries(1, start=5)[0])
    w.close()
    assert logs_in(path.with_name("c.log.1")) == [f"line {i}\n" for i in range(5)]
    assert logs_in(path) == ["line 5\n"]


def cached_bytes(path: Path, start: int, end: int) -> int:
    """How much of ``path[start:end]`` is in the page cache (mincore(2) on a shared mapping),
    counted in whole pages, ``start`` rounded down to one."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    start -= start % page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, end - start, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert addr != ctypes.c_void_p(-1).value, os.strerror(ctypes.get_errno())
        vec = ctypes.create_string_buffer((end - start + page - 1) // page)
        try:
            assert libc.mincore(addr, end - start, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, end - start)
    finally:
        os.close(fd)
    return page * sum(b & 1 for b in vec.raw)


@pytest.mark.parametrize("keep_mib", [1, 32])
def test_writer_lets_go_of_what_is_older_than_its_newest_part(tmp_path: Path, keep_mib: int) -> None:
    """Rule 4 of logfile.py: pages already written back and older than ``cache_keep`` leave the cache."""
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], check=True,
                        capture_output=True, text=True).stdout.strip()
    if fs == "tmpfs":
        pytest.skip("tmpfs pages are the file itself: there is no page cache to let go of")
    mib = 1 << 20
    block = b"".join(entries(20_000))[:mib]
    block = block[:block.rfind(b"\n") + 1]
    path = tmp_path / "c.log"
    w = JsonFileWriter(path, cache_keep=keep_mib * mib, cache_step=mib)
    for _ in range(8):
        w.write(block)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)                        # written back: clean pages, which the next release drops
    os.close(fd)
    w.write(block * 2)                  # crosses a step: [0, size - keep) is let go
    w.close()
    size = path.stat().st_size
    early = cached_bytes(path, 0, 6 * mib)
    assert cached_bytes(path, size - mib, size) >= mib    # the newest part stays
    if keep_mib == 1:
        assert early == 0
    else:                               # nothing is older than 32 MiB: all of it stays
        assert early == 6 * mib


# --- cursor --------------------------------------------------------------------------------------


def rotated_log(tmp_path: Path, n: int = 20) -> Path:
    path = tmp_path / "c.log"
    w = JsonFileWriter(path, max_size_bytes=len(entries(1)[0]) * 4, max_files=4)
    for e in entries(n):
        w.write(e)
    w.close()
    return path


def read_all(cursor: LogCursor) -> list[str]:
    out = []
    while blob := cursor.read(max_bytes=100):
        out += [json.loads(line)["log"] for line in blob.splitlines()]
    return out


def test_cursor_reads_rotated_files_in_order(tmp_path: Path) -> None:
    path = rotated_log(tmp_path)
    assert len(rotated_files(path)) == 4
    cursor = LogCursor(path)
    cursor.start_at_beginning()
    # 4 files of at most 4 entries: the 12 newest survive (the live one is empty after a rotation).
    assert read_all(cursor) == [f"line {i}\n" for i in range(8, 20)]
    cursor.close()


@pytest.mark.parametrize(("n", "first"), [(0, 20), (1, 19), (2, 18), (5, 15), (12, 8), (100, 8)])
def test_tail_across_rotated_files(tmp_path: Path, n: int, first: int) -> None:
    path = rotated_log(tmp_path)
    cursor = LogCursor(path)
    lines = cursor.start_with_tail(n)
    assert [json.loads(line)["log"] for line in lines] == [f"line {i}\n" for i in range(first, 20)]
    # Then it follows from there: new entries only.
    with open(path, "ab") as f:
        f.write(entries(1, start=20)[0] + b'{"log":"half')
    assert read_all(cursor) == ["line 20\n"]
    with open(path, "ab") as f:
        f.write(b' done\\n","stream":"stdout","time":"%s"}\n' % format_time(T0).encode())
    assert read_all(cursor) == ["half done\n"]
    cursor.close()


def test_cursor_follows_a_rotation_and_a_truncation(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    size = len(entries(1)[0])
    w = JsonFileWriter(path, max_size_bytes=size * 2, max_files=3)
    cursor = LogCursor(path)
    cursor.start_at_beginning()
    w.write(entries(1)[0])
    assert read_all(cursor) == ["line 0\n"]
    for e in entries(4, start=1):               # rotates twice while the cursor stands in the first file
        w.write(e)
    assert read_all(cursor) == [f"line {i}\n" for i in range(1, 5)]
    w.close()
    cursor.close()
    # max-file 1: the file starts over; the cursor goes with it.
    one = tmp_path / "one.log"
    w = JsonFileWriter(one, max_size_bytes=size * 2, max_files=1)
    cursor = LogCursor(one)
    w.write(entries(1)[0])
    assert read_all(cursor) == ["line 0\n"]
    w.write(entries(1, start=1)[0])             # reaches the limit: a new file
    w.write(entries(1, start=2)[0])
    assert rotated_files(one) == [one] and logs_in(one) == ["line 2\n"]
    # The cursor reads the old file (unlinked, still open) to its end, then the new one.
    assert read_all(cursor) == ["line 1\n", "line 2\n"]
    w.close()
    cursor.close()


def test_cursor_on_a_missing_log(tmp_path: Path) -> None:
    cursor = LogCursor(tmp_path / "never.log")
    assert cursor.start_with_tail(5) == []
    cursor.start_at_beginning()
    assert cursor.read() == b""


# --- queries and filters -------------------------------------------------------------------------


def test_select_since_until_streams_and_timestamps() -> None:
    blob = b"".join(entries(5) + entries(1, start=5, stream="stderr") + [b"garbage\n"])
    got, past = select_entries(blob, LogQuery())
    assert [t for _, t in got] == [b"line %d\n" % i for i in range(6)] and not past
    assert [s for s, _ in got] == ["stdout"] * 5 + ["stderr"]
    got, past = select_entries(blob, LogQuery(since_ns=T0 + 2_000_000_000, until_ns=T0 + 3_500_000_000))
    assert [t for _, t in got] == [b"line 2\n", b"line 3\n"] and past
    got, _ = select_entries(blob, LogQuery(stdout=False))
    assert got == [["stderr", b"line 5\n"]]
    got, _ = select_entries(blob, LogQuery(stderr=False, timestamps=True, since_ns=T0 + 4_000_000_000))
    assert got == [["stdout", b"2025-11-29T09:21:02.000000000Z line 4\n"]]


def test_make_query() -> None:
    now = T0
    assert make_query(now_ns=now) == LogQuery()
    q = make_query(since="10m", until="1764408000.5", tail="3", timestamps=True, now_ns=now)
    assert (q.since_ns, q.until_ns, q.tail, q.timestamps) == (now - 600 * 10**9, 1_764_408_000_500_000_000, 3, True)
    assert make_query(since=1764408000, tail=2, now_ns=now).since_ns == 1_764_408_000 * 10**9
    assert make_query(tail="all").tail is None and make_query(tail="-1").tail is None
    assert make_query(since="2025-11-29T09:20:58Z").since_ns == T0
    for bad in ({"stdout": False, "stderr": False}, {"since": "abc"}, {"tail": "ten"}, {"until": True}):
        with pytest.raises(InvalidRequest):
            make_query(**bad)


def test_log_config_of_body() -> None:
    assert log_config_of({}) == LogConfig()
    assert log_config_of({"HostConfig": {"LogConfig": {"Type": "none"}}}).type == "none"
    with pytest.raises(InvalidRequest, match="max-size"):
        log_config_of({"HostConfig": {"LogConfig": {"Config": {"max-size": "abc"}}}})


# --- the capture thread, with real pipes -----------------------------------------------------------


def test_capture_copies_both_pipes_until_eof(tmp_path: Path) -> None:
    path = tmp_path / "container-json.log"

    async def main() -> None:
        capture = Capture.open(path, LogConfig())
        out, err = os.dup(capture.stdout_w), os.dup(capture.stderr_w)    # "the container"
        capture.close_write_ends()
        os.write(out, b"one\ntw")
        os.write(err, b"oops\n")
        os.write(out, b"o\n" + b"x" * 3_000_000 + b"\nend without newline")
        os.close(out)
        os.close(err)
        with trio.fail_after(20):
            await capture.wait_drained()

    trio.run(main)
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    stdout = "".join(d["log"] for d in docs if d["stream"] == "stdout")
    assert stdout == "one\ntwo\n" + "x" * 3_000_000 + "\nend without newline"
    assert [d["log"] for d in docs if d["stream"] == "stderr"] == ["oops\n"]
    assert max(len(d["log"]) for d in docs) <= 16 * 1024
    assert docs[-1]["log"] == "end without newline"


def test_capture_stop_ends_without_eof(tmp_path: Path) -> None:
    path = tmp_path / "container-json.log"

    async def main() -> None:
        capture = Capture.open(path, LogConfig())
        holder = os.dup(capture.stdout_w)            # a write end that never closes
        os.write(holder, b"before stop\n")
        try:
            with trio.fail_after(20):
                await capture.wait_drained(grace_s=0.2)
        finally:
            os.close(holder)

    trio.run(main)
    assert logs_in(path) == ["before stop\n"]


def test_read_logs_follow_ends_when_the_container_stops(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = JsonFileWriter(path)
    w.write(b"".join(entries(2)))
    got: list[bytes] = []

    async def main() -> None:
        stopped = trio.Event()
        running = [True]

        async def container() -> None:
            await trio.sleep(0.3)
            w.write(entries(1, start=2)[0])
            await trio.sleep(0.3)
            w.write(entries(1, start=3)[0])
            running[0] = False
            stopped.set()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(container)
                async for batch in read_logs(path, LogQuery(tail=1), running=lambda: running[0], stopped=stopped):
                    got.extend(text for _, text in batch)

    trio.run(main)
    w.close()
    assert got == [b"line 1\n", b"line 2\n", b"line 3\n"]
