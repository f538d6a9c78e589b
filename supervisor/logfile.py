"""The json-file log on disk and the loop that copies a container's output into it, without trio.

Two processes run this code: the daemon (``logs.Capture``, a copier thread per
run) and the keeper (``keeper.py``), which copies the output of the runs it
holds while no daemon is there. Both append to the same file, never at once:
the keeper starts only after the daemon's copiers stopped or died, and stops
before the next daemon's begin (``keeper.py`` rule 3).

Rules:

1. ``copy_streams`` blocks in poll(2)/read(2), encodes a whole chunk (up to
   1 MiB) at once and writes it with one write(2) (``logs.py`` rule 1).
2. Rotation happens in the writer between entries, so every file holds whole
   lines, and a file is renamed only after its last byte was written.
3. Writes that fail (disk full) are dropped, counted and logged once; the
   container keeps running and its pipe keeps draining (Docker's choice too).
4. Only the newest ``CACHE_KEEP`` bytes of a log stay in the page cache, for
   ``logs --tail`` and ``-f``. Every ``CACHE_STEP`` bytes the writer asks the
   kernel (``POSIX_FADV_DONTNEED``) to start writing back what is older and to
   drop the pages already written. A container logging gigabytes neither
   evicts the host's useful cache nor holds gigabytes of dirty data a crash
   would lose, and the writer reuses the pages it let go instead of taking
   fresh ones: on this VM a fresh page costs a hypervisor fault, and 1.7 GB of
   log took 3.3 s of write(2) instead of 0.6 s (bench/README.md, logs). The
   price: on a disk slower than a container's output, the writeback this
   starts paces the copier at the disk's speed once the device queue is full,
   where the page cache would have absorbed more first (until the kernel's
   dirty limit). Giving the advice from a thread of its own avoided that but
   made the 1 GB run 8% slower here, so it is given inline.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from protocols.jsonlog import StreamEncoder, format_time

log = logging.getLogger("corral.logs")

PIPE_SIZE = 1 << 20              # F_SETPIPE_SZ asks for this (fs.pipe-max-size is 1 MiB by default)
READ_SIZE = 1 << 20
SMALL_READ = 16 * 1024           # a read smaller than this: a slow writer; the copier waits a little for more
BATCH_WAIT_S = 0.001             # the longest such wait, reached after small reads in a row
CACHE_KEEP = 32 << 20            # rule 4: the newest bytes of a log kept in the page cache
CACHE_STEP = 16 << 20            # ... and how often what is older is let go


class JsonFileWriter:
    """Appends encoded entries to ``path``, rotating as moby's json-file driver does.

    With ``max_size_bytes`` (0: unlimited) a file is closed once it holds at least
    that much, cut after the entry that crosses the limit; ``path`` becomes
    ``path.1``, ``path.1`` becomes ``path.2``, ... up to ``max_files - 1``. With one
    file it starts over (a new file in its place). Blocking; the copier thread calls it.
    """

    def __init__(self, path: Path | str, *, max_size_bytes: int = 0, max_files: int = 1,
                 cache_keep: int = CACHE_KEEP, cache_step: int = CACHE_STEP) -> None:
        self.path = Path(path)
        self.max_size = max_size_bytes
        self.max_files = max(1, max_files)
        self._keep, self._step = cache_keep, cache_step
        self._fd = self._open()
        self.size = os.fstat(self._fd).st_size
        self._released_at = self.size
        self.dropped_bytes = 0
        self._warned = False

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, blob: bytes) -> None:
        """Append whole entries (``blob`` ends with a newline), rotating where the limit falls."""
        start, view = 0, memoryview(blob)
        while start < len(blob):
            if self.max_size and self.size >= self.max_size:
                self._rotate()
            cut = len(blob)
            if self.max_size and self.size + cut - start > self.max_size:
                # Cut after the entry that reaches the limit: files hold whole lines (rule 3).
                cut = blob.find(b"\n", start + self.max_size - self.size - 1) + 1 or len(blob)
            self._write_all(view[start:cut])
            start = cut
        if self.max_size and self.size >= self.max_size:
            self._rotate()
        if self.size - self._released_at >= self._step and self.size > self._keep:
            self._release(self._fd, self.size - self._keep)
            self._released_at = self.size

    @staticmethod
    def _release(fd: int, end: int) -> None:
        """Rule 4: write back the first ``end`` bytes (0: all) and drop the pages already written."""
        try:
            os.posix_fadvise(fd, 0, end, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass                 # only advice

    def _write_all(self, data: memoryview) -> None:
        try:
            while data:
                n = os.write(self._fd, data)
                self.size += n
                data = data[n:]
        except OSError as exc:
            self.dropped_bytes += len(data)
            if not self._warned:
                self._warned = True
                log.warning("log %s: write failed, dropping output: %s", self.path, exc.strerror or exc)

    def _rotate(self) -> None:
        try:
            if self.max_files <= 1:
                # SPEC: moby truncates in place; a fresh inode lets a follower tell
                # "started over" from "nothing new" when the sizes happen to match.
                os.unlink(self.path)
            for i in range(self.max_files - 1, 1, -1):
                older = self.path.with_name(f"{self.path.name}.{i - 1}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i}"))
            if self.max_files > 1:
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            fd = self._open()
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("log %s: rotation failed, appending on: %s", self.path, exc.strerror or exc)
            return
        if self.max_files > 1:
            self._release(self._fd, 0)     # kept, and rarely read again
        os.close(self._fd)
        self._fd, self.size, self._released_at = fd, 0, 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass                     # best effort: over fs.pipe-max-size for an unprivileged daemon
    return r, w


def read_or_eof(fd: int) -> bytes:
    """One read; b"" at EOF. A pty master answers EIO once every slave fd is closed: its EOF (pty(7))."""
    try:
        return os.read(fd, READ_SIZE)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return b""
        raise


def copy_streams(sources: dict[int, str], writer: JsonFileWriter | None, stop_r: int, *,
                 clock: Callable[[], int] = time.time_ns,
                 on_output: Callable[[str, bytes], None] | None = None) -> dict[int, str]:
    """Copy each source fd (a pipe or a pty master, named "stdout" or "stderr") into ``writer``
    until every one reached EOF, or until ``stop_r`` is readable: then what is readable now
    is copied and the loop ends.

    A source at EOF is closed here, its open line written as it is; so is the open line of
    every source when stopped. Returns the sources still open (not at EOF), which the
    caller closes or hands on. ``on_output(stream, data)`` sees each chunk before it is written.
    """
    sources = dict(sources)
    encoders = {fd: StreamEncoder(name) for fd, name in sources.items()}
    poller = select.poll()
    for fd in (*encoders, stop_r):
        poller.register(fd, select.POLLIN)
    stopping = False
    wait = 0.0
    while encoders:
        ready = [fd for fd, _ in poller.poll(0 if stopping else None)]
        if stop_r in ready:
            stopping = True
            ready.remove(stop_r)
        if not ready and stopping:
            break
        out = []
        got = 0
        stamp = format_time(clock())
        for fd in ready:
            data = read_or_eof(fd)
            got += len(data)
            if data:
                if on_output is not None:
                    on_output(sources[fd], data)
                out.append(encoders[fd].encode(data, stamp=stamp))
            else:                                  # EOF: the open line goes out as it is
                out.append(encoders.pop(fd).flush(stamp=stamp))
                poller.unregister(fd)
                del sources[fd]
                os.close(fd)
        blob = out[0] if len(out) == 1 else b"".join(out)        # the one buffer as it is: no copy
        if blob and writer is not None:
            writer.write(blob)
        if 0 < got < SMALL_READ and not stopping:
            # A writer slower than us: let its small writes gather in the pipe (1 MiB: at
            # 1 GB/s it fills in 1 ms) so one round carries many lines. The wait doubles with
            # each small read in a row: a fast writer that we caught up with once loses
            # 1/8 ms, not 1 ms, while a slow one is still batched at BATCH_WAIT_S.
            wait = min(BATCH_WAIT_S, 2 * wait or BATCH_WAIT_S / 8)
            time.sleep(wait)
        else:
            wait = 0.0
    stamp = format_time(clock())
    blob = b"".join(enc.flush(stamp=stamp) for enc in encoders.values())
    if blob and writer is not None:
        writer.write(blob)
    return sources
