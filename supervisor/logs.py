"""Container logs: stdout and stderr captured into json-file logs, and read back (``corral logs``).

Capture, one run of one container (``Capture``):

    container --pipe (1 MiB)--> copier thread --StreamEncoder--> JsonFileWriter --> container-json.log

Reading (``read_logs``): a ``LogCursor`` walks the files oldest to newest,
or starts ``tail`` entries from the end, then follows the live file across
rotations; its blocking reads run in worker threads.

Rules this module lives by:

1. The container never waits on us when nobody reads its logs. The copier is
   an OS thread of its own per run that blocks in poll(2)/read(2), encodes a
   whole chunk (up to 1 MiB) at once and writes it with one write(2); no trio
   scheduling sits between the pipe and the file.
2. A run's output is in the file before the run is reported exited: the task
   awaits ``Capture.wait_drained()`` (EOF on both pipes) before ``die``. EOF
   comes when every process holding the write ends is gone, which the end of
   the init's PID namespace guarantees; a grace period covers the rest.
3. Writing and rotating the file, and the copy loop itself, live in
   ``logfile.py`` (trio-free: the keeper runs the same loop while no daemon
   does); its rules hold here: whole lines per file, failed writes dropped
   and counted while the pipe keeps draining.

Rejected designs:

- A trio task per container reading the pipe with ``trio.lowlevel.FdStream``
  and writing the file: write(2) to a regular file cannot be made
  non-blocking, and under dirty-page throttling (``balance_dirty_pages``) it
  stalls for tens of milliseconds; in the event loop that stalls every
  container and every client. Each chunk would also cost a loop wake-up.
- One thread for all containers: a slow disk write for one would delay them all.
- ``trio.to_thread.run_sync`` for the copier: its default limiter (40 threads)
  is shared with every other blocking call of the daemon; 40 logging
  containers would starve them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from protocols.errors import RemoteProtocolError
from protocols.jsonlog import (
    LogConfig,
    LogConfigError,
    entry_time_ns,
    parse_entry,
    parse_log_config,
    parse_timestamp,
    read_tail,
)

from .errors import InvalidRequest
from .logfile import JsonFileWriter, copy_streams, make_pipe

log = logging.getLogger("corral.logs")

LOG_FILE = "container-json.log"
DRAIN_GRACE_S = 5.0              # after the init exited, how long EOF may take before we stop reading
BATCH_BYTES = 256 * 1024         # read_logs: file bytes per worker-thread hop and per RPC item
FOLLOW_POLL_S = 0.1


def log_path_for(container_dir: Path | str, config: LogConfig) -> str | None:
    """Where a container's json-file log lives; None for the ``none`` driver (inspect's LogPath is "")."""
    return None if config.type == "none" else str(Path(container_dir) / LOG_FILE)


def log_config_of(body: dict, *, strict: bool = True) -> LogConfig:
    """A create body's ``HostConfig.LogConfig``, checked.

    ``strict=False`` is for records read back at daemon start: a config this
    version refuses (written by another one) falls back to the default, logged,
    rather than keeping the daemon from starting.

    Raises:
        InvalidRequest: an unsupported driver or a malformed ``--log-opt`` (strict only).
    """
    host_config = body.get("HostConfig") or {}
    try:
        return parse_log_config(host_config.get("LogConfig") if isinstance(host_config, dict) else None)
    except LogConfigError as exc:
        if not strict:
            log.warning("stored log config refused (%s); using json-file without limits", exc)
            return LogConfig()
        raise InvalidRequest(str(exc)) from None


def rotated_files(path: Path | str) -> list[Path]:
    """The log and its rotated copies that exist, oldest first: ``log.N`` ... ``log.1``, ``log``."""
    path = Path(path)
    older = []
    i = 1
    while (candidate := path.with_name(f"{path.name}.{i}")).exists():
        older.append(candidate)
        i += 1
    return [*reversed(older), *([path] if path.exists() else [])]


# --- writing -----------------------------------------------------------------------------


# --- capture -----------------------------------------------------------------------------


class Capture:
    """The stdout and stderr pipes of one run and the thread copying them to the json-file log.

    ::

        capture = Capture.open(path, config)          # in trio: the thread starts
        child = await host.spawn(..., stdio=(null, capture.stdout_w, capture.stderr_w))
        capture.close_write_ends()                     # the init holds them now
        ...
        await capture.wait_drained()                   # EOF on both: everything is on disk

    A container with a terminal has one source instead of two pipes: the pty
    master (``open_tty``), logged as "stdout" as Docker logs it; a read that
    fails with EIO (every slave fd closed) is its EOF. Without a log file
    (driver ``none``) the copier still runs for ``on_output``. ``on_output``
    (stream, bytes) is called in the copier thread with each chunk as read,
    before it is written: it must not block (attach.py hands it to trio).
    """

    def __init__(self, writer: JsonFileWriter | None, pipes: list[tuple[int, int]], *,
                 clock: Callable[[], int] = time.time_ns, tty_master: int = -1,
                 on_output: Callable[[str, bytes], None] | None = None) -> None:
        if tty_master >= 0:
            self._sources, self.stdout_w, self.stderr_w = {tty_master: "stdout"}, -1, -1
            named = {"tty": tty_master}
        else:
            (out_r, self.stdout_w), (err_r, self.stderr_w) = pipes
            named = {name: fd for name, fd in (("stdout", out_r), ("stderr", err_r)) if fd >= 0}
            self._sources = {fd: name for name, fd in named.items()}
        # Copies of the read ends for the keeper (keeper.py), made before the copier
        # could close one at EOF: a number closed by then may name another file.
        self._keep_fds = {name: os.dup(fd) for name, fd in named.items()}
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._writer = writer
        self._clock = clock
        self._on_output = on_output
        self._token = trio.lowlevel.current_trio_token()
        self._drained = trio.Event()
        name = writer.path.parent.name[:12] if writer is not None else "(none)"
        self._thread = threading.Thread(target=self._copy, name=f"log {name}", daemon=True)

    @classmethod
    def open(cls, path: str | Path | None, config: LogConfig, *,
             on_output: Callable[[str, bytes], None] | None = None) -> Capture:
        """Pipes, the log file (none when ``path`` is None), and the copier thread, started. Call from trio.

        Raises:
            OSError: the log file cannot be opened (nothing is left open then).
        """
        writer = JsonFileWriter(path, max_size_bytes=config.max_size_bytes, max_files=config.max_files) \
            if path is not None else None
        pipes: list[tuple[int, int]] = []
        try:
            pipes = [make_pipe(), make_pipe()]
            capture = cls(writer, pipes, on_output=on_output)
        except BaseException:
            if writer is not None:
                writer.close()
            for fd in (fd for pair in pipes for fd in pair):
                os.close(fd)
            raise
        capture._thread.start()
        return capture

    @classmethod
    def adopt(cls, path: str | Path | None, config: LogConfig, fds: dict[str, int], *,
              on_output: Callable[[str, bytes], None] | None = None) -> Capture:
        """Copy the output of a run an earlier daemon started, from the read ends the keeper
        kept (``fds``: "stdout" and "stderr", or "tty"; one may be gone, at EOF). Takes ``fds``.

        Raises:
            OSError: the log file cannot be opened (``fds`` are then left to the caller).
        """
        writer = JsonFileWriter(path, max_size_bytes=config.max_size_bytes, max_files=config.max_files) \
            if path is not None else None
        if "tty" in fds:
            capture = cls(writer, [], tty_master=fds["tty"], on_output=on_output)
        else:
            capture = cls(writer, [(fds.get("stdout", -1), -1), (fds.get("stderr", -1), -1)], on_output=on_output)
        capture._thread.start()
        return capture

    def take_keep_fds(self) -> dict[str, int]:
        """Copies of the output's read ends for the keeper, by name ("stdout", "stderr" or "tty");
        the caller closes them."""
        fds, self._keep_fds = self._keep_fds, {}
        return fds

    @classmethod
    def open_tty(cls, path: str | Path | None, config: LogConfig, master: int, *,
                 on_output: Callable[[str, bytes], None] | None = None) -> Capture:
        """Like ``open``, reading a pty master instead of two pipes; it takes ``master`` (closes it at EOF).

        Raises:
            OSError: the log file cannot be opened (``master`` is then left to the caller).
        """
        writer = JsonFileWriter(path, max_size_bytes=config.max_size_bytes, max_files=config.max_files) \
            if path is not None else None
        capture = cls(writer, [], tty_master=master, on_output=on_output)
        capture._thread.start()
        return capture

    def close_write_ends(self) -> None:
        """Close our copies of the write ends (after the spawn, failed or not): EOF is then up to the container."""
        for name in ("stdout_w", "stderr_w"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    async def wait_drained(self, *, grace_s: float | None = None) -> None:
        """Wait until both pipes reached EOF and everything is written (rule 2).

        With ``grace_s``, stop waiting for EOF after that long: what is in the pipes
        then is copied and the thread ends (someone else holds a write end).
        """
        self.close_write_ends()
        if grace_s is not None:
            with trio.move_on_after(grace_s):
                await self._drained.wait()
            if not self._drained.is_set():
                log.warning("log %s: pipes still open %.0f s after the init exited; stopped reading",
                            self._writer.path if self._writer is not None else "(none)", grace_s)
                self.stop()
        await self._drained.wait()
        for fd in self.take_keep_fds().values():
            os.close(fd)
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def stop(self) -> None:
        """Ask the thread to copy what is readable now and end, without waiting for EOF."""
        if self._stop_w < 0:
            return
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass                 # already asked (the pipe is full) or already done

    @property
    def dropped_bytes(self) -> int:
        return self._writer.dropped_bytes if self._writer is not None else 0

    # -- the thread --

    def _copy(self) -> None:
        left: dict[int, str] = {}        # on a bug: leak the fds rather than close reused numbers
        try:
            left = copy_streams(self._sources, self._writer, self._stop_r, clock=self._clock,
                                on_output=self._on_output)
        except Exception:                 # a bug here must not leave the task waiting forever
            log.exception("log copier for %s failed", self._writer.path if self._writer is not None else "(none)")
        finally:
            for fd in left:                 # the stop pipe is closed by wait_drained, in trio
                os.close(fd)
            if self._writer is not None:
                self._writer.close()
            try:
                self._token.run_sync_soon(self._drained.set)
            except trio.RunFinishedError:
                pass


# --- reading -----------------------------------------------------------------------------


class LogCursor:
    """A reading position in a container's json-file log and its rotated copies (blocking calls).

    It holds an open file descriptor, so a file renamed or deleted by rotation is
    still read to its end before the cursor moves to the next newer file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1
        self._ino = 0
        self._offset = 0
        self._rest = b""                   # an entry not yet complete (being written)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, path: Path, offset: int = 0) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self.close()
        self._fd, self._ino, self._offset, self._rest = fd, os.fstat(fd).st_ino, offset, b""
        return True

    def start_at_beginning(self) -> None:
        for path in rotated_files(self.path):
            if self._open(path):
                return

    def start_with_tail(self, n: int) -> list[bytes]:
        """The last ``n`` entries (oldest first); the cursor then stands after the last one."""
        lines: list[bytes] = []
        for i, path in enumerate(reversed(rotated_files(self.path))):
            if i == 0 and path == self.path:
                # The live file: the cursor follows from where the tail ends.
                if not self._open(path):
                    continue
                with os.fdopen(os.dup(self._fd), "rb") as f:
                    end = os.fstat(f.fileno()).st_size
                    got = read_tail(f, n, end=end)
                    self._offset = _end_of_complete(f, end)
            else:
                try:
                    with open(path, "rb") as f:
                        got = read_tail(f, n - len(lines))
                except FileNotFoundError:           # rotated away meanwhile
                    continue
            lines[:0] = got
            if len(lines) >= n:
                break
        return lines

    def read(self, max_bytes: int = BATCH_BYTES) -> bytes:
        """Whole entries after the cursor, up to about ``max_bytes``; b"" at the live end."""
        while self._fd >= 0 or self._reopen_live():
            data = os.pread(self._fd, max_bytes, self._offset)
            if data:
                self._offset += len(data)
                data = self._rest + data if self._rest else data
                cut = data.rfind(b"\n") + 1
                self._rest = data[cut:]
                if cut:
                    return data[:cut]
                continue
            if os.fstat(self._fd).st_size < self._offset:     # truncated (max-file 1)
                self._offset, self._rest = 0, b""
                continue
            if not self._next_file():
                return b""
        return b""

    def _reopen_live(self) -> bool:
        return self._open(self.path) if self.path.exists() else False

    def _next_file(self) -> bool:
        """At the end of our file: move on if it was rotated; False if it is (still) the live one."""
        try:
            if os.stat(self.path).st_ino == self._ino:
                return False
        except FileNotFoundError:
            return False
        files = rotated_files(self.path)
        inodes = []
        for path in files:
            try:
                inodes.append(os.stat(path).st_ino)
            except FileNotFoundError:
                inodes.append(-1)
        # The next newer file after ours; ours gone (rotated past max-file): the oldest left.
        at = inodes.index(self._ino) + 1 if self._ino in inodes else 0
        for path in files[at:]:
            if self._open(path):
                return True
        return False


def _end_of_complete(f, end: int) -> int:
    """Offset just after the last newline before ``end`` (0 if none)."""
    pos = end
    while pos > 0:
        size = min(65536, pos)
        pos -= size
        f.seek(pos)
        cut = f.read(size).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
    return 0


@dataclass(frozen=True)
class LogQuery:
    """What ``docker logs`` asks for, decoded (Docker's GET /containers/{id}/logs parameters)."""

    stdout: bool = True
    stderr: bool = True
    since_ns: int = 0                # 0: from the beginning
    until_ns: int = 0                # 0: no end
    timestamps: bool = False
    tail: int | None = None          # None: all


def make_query(*, stdout: bool = True, stderr: bool = True, since: str | float | None = None,
               until: str | float | None = None, timestamps: bool = False, tail: str | int | None = "all",
               now_ns: int | None = None) -> LogQuery:
    """Docker's logs parameters -> ``LogQuery``.

    ``since``/``until``: Unix seconds (``"1764408058.5"`` or a number), an RFC 3339
    time (UTC without a zone), or a duration before now (``"10m"``); empty or 0: unset.
    ``tail``: a count, or ``"all"``/None/negative for everything.

    Raises:
        InvalidRequest: neither stream, an unreadable time, a bad tail.
    """
    if not stdout and not stderr:
        raise InvalidRequest("you must choose at least one stream")
    now = time.time_ns() if now_ns is None else now_ns

    def moment(name: str, value: str | float | None) -> int:
        if value is None or value == "" or value == 0:
            return 0
        if isinstance(value, bool):
            raise InvalidRequest(f"{name}: not a time: {value!r}")
        if isinstance(value, int):
            return value * 1_000_000_000
        if isinstance(value, float):
            return int(value * 1_000_000_000)
        try:
            return parse_timestamp(str(value), now_ns=now, local=False)
        except ValueError as exc:
            raise InvalidRequest(f"{name}: {exc}") from None

    if tail is None or tail == "all" or tail == "":
        count = None
    elif isinstance(tail, int) and not isinstance(tail, bool) or isinstance(tail, str) and tail.lstrip("-").isdecimal():
        count = int(tail)
        count = None if count < 0 else count
    else:
        raise InvalidRequest(f"tail: not a number or \"all\": {tail!r}")
    return LogQuery(stdout=bool(stdout), stderr=bool(stderr), since_ns=moment("since", since),
                    until_ns=moment("until", until), timestamps=bool(timestamps), tail=count)


def select_entries(blob: bytes, q: LogQuery) -> tuple[list[list], bool]:
    """Entries of ``blob`` (whole json lines) that ``q`` wants -> (``[[stream, bytes], ...]``, past ``until``).

    A line that is not a json-file entry is skipped (a file cut by a crash).
    """
    out: list[list] = []
    filter_time = q.since_ns or q.until_ns
    for line in blob.split(b"\n"):
        if not line:
            continue
        try:
            e = parse_entry(line)
        except RemoteProtocolError:
            continue
        if e.stream == "stdout" and not q.stdout or e.stream == "stderr" and not q.stderr:
            continue
        if filter_time:
            try:
                t = entry_time_ns(e.time)
            except ValueError:
                continue
            if q.until_ns and t > q.until_ns:
                return out, True
            if t < q.since_ns:
                continue
        text = f"{e.time} {e.log}" if q.timestamps else e.log
        out.append([e.stream, text.encode("utf-8", "replace")])
    return out, False


async def read_logs(path: str | Path, q: LogQuery, *, running: Callable[[], bool] | None = None,
                    stopped: trio.Event | None = None) -> AsyncIterator[list[list]]:
    """Batches of ``[stream, bytes]`` entries from a container's json-file log, oldest first.

    Args:
        running: for ``-f``: follow while this says the container runs; None: do not follow.
        stopped: set when the container stops (it wakes the follower at once).

    The follower reads on until ``running()`` is false and the files hold nothing
    more: the task drains the pipes before the container counts as stopped, so
    nothing written before the stop is missed.
    """
    cursor = LogCursor(path)
    try:
        if q.tail is not None:
            lines = await trio.to_thread.run_sync(cursor.start_with_tail, q.tail)
            batch, past = select_entries(b"".join(lines), q)
            if batch:
                yield batch
            if past:
                return
        else:
            await trio.to_thread.run_sync(cursor.start_at_beginning)
        while True:
            follow = running is not None and running()
            batch, past = await trio.to_thread.run_sync(_read_batch, cursor, q)
            if batch is None:
                if not follow:
                    return
                if q.until_ns and time.time_ns() > q.until_ns:
                    return
                if stopped is not None and not stopped.is_set():
                    with trio.move_on_after(FOLLOW_POLL_S):
                        await stopped.wait()
                else:
                    await trio.sleep(FOLLOW_POLL_S)
                continue
            if batch:
                yield batch
            if past:
                return
    finally:
        cursor.close()


def _read_batch(cursor: LogCursor, q: LogQuery) -> tuple[list[list] | None, bool]:
    """One cursor read, decoded (worker thread); None at the live end."""
    blob = cursor.read()
    if not blob:
        return None, False
    return select_entries(blob, q)
