"""Attach and terminals in the daemon: live output to attached clients, their stdin, the pty's size.

::

    container --pipes or pty master--> copier thread (logs.Capture) --> json-file log
                                            │ on_output (thread) -> run_sync_soon
                                            v
                               ContainerStreams._publish --> one channel per attached client
                                                              (container.attach stream items)
    client --container.stdin {data, eof}--> ProcessInput.write --> stdin pipe / pty master
    client --container.resize {h, w}-----> TIOCSWINSZ on the master (the kernel sends SIGWINCH)

Rules:

1. The container never waits for an attached client, as it never waits for
   its log (logs.py rule 1). Each client has a queue counted in bytes; a
   client that falls ``MAX_BEHIND_BYTES`` behind is cut off with an error
   (its output is still in the log). Docker blocks the container instead.
2. A client is subscribed before it learns it is attached (the first item of
   ``container.attach``), so ``run -it`` and ``start -a`` attach, then start:
   nothing the container writes first is missed.
3. An attach lasts one run: when the run ends (its output drained, as for
   ``die``), every client's stream ends, and the CLI asks ``container.wait``
   for the status. A client attached while the container is stopped waits
   for the next start (the API's behaviour; the CLI refuses that for
   ``attach``, as docker's does).
4. Input is written from trio, never blocking the loop: the fds are
   non-blocking and a full pipe is awaited with ``wait_writable``. One
   client's write is whole before the next one's starts (a lock).
   ``container.stdin`` calls of one client are answered in order, so a client
   that awaits each call before the next keeps its bytes in order.
5. Stdin EOF from a client closes the process's stdin only with
   ``StdinOnce`` (``run -i``); for a terminal it does nothing (the user types
   ^D, which the line discipline turns into EOF).

Detach keys are matched by the client (``protocols.detach``), which stops
reading and leaves the stream: nothing of the sequence reaches the container.

Rejected designs:

- Following the json-file log for attach (as ``run`` without ``-i`` does):
  100 ms polls are too slow for typing, and the ``none`` driver has no log.
- Streaming stdin as a second stream on the connection: the protocol's
  streams go server -> client only; unary calls in order are enough.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from protocols.jsonlog import LogConfig
from runtime.terminal import open_container_pts, open_devpts, open_pty, set_window_size

from .errors import Conflict, InvalidRequest, Unavailable
from .logs import Capture

if TYPE_CHECKING:
    from runtime.spawn import Child

    from .engine import Engine

log = logging.getLogger("corral.attach")
MAX_BEHIND_BYTES = 8 << 20        # rule 1: an attached client's queue before it is cut off
STDIN_CHUNK_MAX = 1 << 19         # a client's chunk (the request frame limit is 1 MiB)


class ProcessInput:
    """The daemon's end of one process's stdin, and its terminal if it has one.

    ``fd`` is a pipe's write end, or (``tty``) a copy of the pty master: then
    writing types into the terminal, and ``resize`` sets its window size.
    """

    def __init__(self, fd: int, *, tty: bool, stdin: bool, stdin_once: bool = False) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self.tty = tty
        self.stdin = stdin                # the process reads what clients send
        self.stdin_once = stdin_once
        self._lock = trio.Lock()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def keepable(self) -> int | None:
        """A copy of the stdin pipe's write end for the keeper (keeper.py), or None.

        Only for stdin that stays open (``-i`` without StdinOnce): a copy held
        elsewhere would keep a StdinOnce container from ever seeing EOF.
        """
        if self.tty or not self.stdin or self.stdin_once or self._fd < 0:
            return None
        return os.dup(self._fd)

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` (rule 4); nothing when stdin is closed or the process stopped reading."""
        async with self._lock:
            view = memoryview(data)
            while view and self._fd >= 0 and self.stdin:
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_writable(self._fd)
                    except trio.ClosedResourceError:
                        return                # the run ended meanwhile
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.EIO):
                        return                # nobody reads it any more (EPIPE), the pty hung up (EIO)
                    raise
                view = view[n:]

    def end_of_input(self) -> None:
        """A client's stdin ended (rule 5)."""
        if not self.tty and self.stdin_once:
            self.stdin = False
            if self._fd >= 0:
                self.close()

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ on the master.

        Raises:
            InvalidRequest: no terminal, or a size out of range.
        """
        if not self.tty:
            raise InvalidRequest("the process has no terminal (it was not started with -t)")
        if self._fd < 0:
            return
        try:
            set_window_size(self._fd, rows, cols)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    def close(self) -> None:
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
            self._fd = -1


@dataclass(eq=False)
class Subscriber:
    """One attached client: a queue of ``(stream, bytes)`` counted in bytes (rule 1)."""

    streams: frozenset[str]
    send: trio.MemorySendChannel = field(init=False, repr=False)
    receive: trio.MemoryReceiveChannel = field(init=False, repr=False)
    behind: int = 0
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel(math.inf)


class ContainerStreams:
    """One container's live stdio across its runs: attached clients, stdin, terminal."""

    def __init__(self) -> None:
        self.tty = False
        self.open_stdin = False
        self.stdin_once = False
        self.console_size: tuple[int, int] = (0, 0)
        # The options of the spec's devpts at /dev/pts: the terminal's instance is made with them.
        self.devpts_options: tuple[str, ...] | None = None
        self.input: ProcessInput | None = None
        self._subscribers: set[Subscriber] = set()
        self._token: trio.lowlevel.TrioToken | None = None

    def configure(self, body: dict[str, Any], config: dict[str, Any]) -> None:
        """From Docker's create body (OpenStdin, StdinOnce) and the OCI config (terminal, consoleSize)."""
        process = config.get("process") or {}
        self.tty = bool(process.get("terminal"))
        self.open_stdin = bool(body.get("OpenStdin"))
        self.stdin_once = bool(body.get("StdinOnce"))
        size = process.get("consoleSize") or {}
        self.console_size = (int(size.get("height") or 0), int(size.get("width") or 0))
        self.devpts_options = next((tuple(m.get("options") or ()) for m in config.get("mounts") or ()
                                    if m.get("destination") == "/dev/pts" and m.get("type") == "devpts"), None)

    # -- a run (task.py) --

    def open_run(self, log_path: str | None,
                 log_config: LogConfig) -> tuple[Capture | None, tuple[int, int, int], list[int]]:
        """The capture (None: output to /dev/null), the init's stdio, and our copies of its ends to close once
        it is spawned. With a terminal the stdio is the pty slave twice and then its devpts instance, which
        the init mounts at /dev/pts (``runtime.spawn.spawn_init``), or the slave three times.

        Also makes ``input`` for this run. Call from trio.

        Raises:
            OSError: no pty, or the log cannot be opened (nothing is left open).
        """
        self._token = trio.lowlevel.current_trio_token()
        on_output = self._on_output
        if self.tty:
            # In a devpts instance of its own, which the init mounts at /dev/pts, so the
            # terminal is /dev/pts/0 in there (runtime/terminal.py rule 1); else the host's.
            devpts = -1
            if self.devpts_options is not None:
                try:
                    devpts = open_devpts(self.devpts_options)
                except OSError as exc:
                    log.warning("no devpts instance for the container's terminal (%s): it gets one of the "
                                "host's, which has no name inside the container", exc)
            try:
                master, slave = open_pty(rows=self.console_size[0], cols=self.console_size[1],
                                         devpts=devpts if devpts >= 0 else None)
            except BaseException:
                if devpts >= 0:
                    os.close(devpts)
                raise
            try:
                ours = os.dup(master)
                try:
                    capture = Capture.open_tty(log_path, log_config, master, on_output=on_output)
                except BaseException:
                    os.close(ours)
                    raise
            except BaseException:
                os.close(master)
                os.close(slave)
                if devpts >= 0:
                    os.close(devpts)
                raise
            self.input = ProcessInput(ours, tty=True, stdin=self.open_stdin)
            if devpts >= 0:
                return capture, (slave, slave, devpts), [slave, devpts]
            return capture, (slave, slave, slave), [slave]
        if log_path is None and not self.open_stdin:
            # SPEC: the none driver without -i/-t keeps the old /dev/null output (no copier
            # thread): attach shows nothing then. Docker would still stream it.
            null_in = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            null_out = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            return None, (null_in, null_out, null_out), [null_in, null_out]
        capture = Capture.open(log_path, log_config, on_output=on_output)
        try:
            if self.open_stdin:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                self.input = ProcessInput(stdin_w, tty=False, stdin=True, stdin_once=self.stdin_once)
            else:
                stdin_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            capture.close_write_ends()
            capture.stop()
            raise
        return capture, (stdin_r, capture.stdout_w, capture.stderr_w), [stdin_r]

    def adopt_run(self, log_path: str | None, log_config: LogConfig, fds: dict[str, int]) -> Capture | None:
        """Like ``open_run``, for a run an earlier daemon started (--live-restore): the capture
        and ``input`` from what the keeper kept (``fds``; taken). Call from trio.

        Raises:
            OSError: the log cannot be opened (``fds`` are closed).
        """
        self._token = trio.lowlevel.current_trio_token()
        stdin = fds.pop("stdin", -1)
        try:
            if "tty" in fds:
                self.input = ProcessInput(os.dup(fds["tty"]), tty=True, stdin=self.open_stdin)
            elif stdin >= 0:
                self.input = ProcessInput(stdin, tty=False, stdin=True, stdin_once=self.stdin_once)
                stdin = -1
            if not fds:
                return None
            return Capture.adopt(log_path, log_config, fds, on_output=self._on_output)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        finally:
            if stdin >= 0:
                os.close(stdin)

    def run_ended(self) -> None:
        """The run's output is drained: stdin closes and every attached client's stream ends (rule 3)."""
        if self.input is not None:
            self.input.close()
            self.input = None
        subscribers, self._subscribers = self._subscribers, set()
        for sub in subscribers:
            sub.send.close()

    def _on_output(self, stream: str, data: bytes) -> None:
        # The copier thread: hop to trio only when someone listens (a set read is atomic).
        if self._subscribers and self._token is not None:
            try:
                self._token.run_sync_soon(self._publish, stream, data)
            except trio.RunFinishedError:
                pass

    def _publish(self, stream: str, data: bytes) -> None:
        for sub in list(self._subscribers):
            if stream not in sub.streams:
                continue
            if sub.behind + len(data) > MAX_BEHIND_BYTES:
                sub.overflowed = True
                self._subscribers.discard(sub)
                sub.send.close()
                continue
            sub.behind += len(data)
            sub.send.send_nowait((stream, data))

    # -- clients --

    def subscribe(self, streams: frozenset[str]) -> Subscriber:
        sub = Subscriber(streams)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.send.close()

    @property
    def attached(self) -> int:
        return len(self._subscribers)


def streams_of(sup: Any) -> ContainerStreams:
    """The container's ``ContainerStreams`` (made on first use; ``Supervised.streams``)."""
    if sup.streams is None:
        sup.streams = ContainerStreams()
    return sup.streams


# --- the Engine's side: what the RPC methods call ---------------------------------------


async def attach_container(engine: Engine, ref: str, *, stdout: bool = True,
                           stderr: bool = True) -> AsyncIterator[dict[str, Any]]:
    """The ``container.attach`` stream: ``{"attached": true, ...}``, then output items until the run ends.

    Raises:
        NoSuchContainer; Unavailable: this client fell too far behind (rule 1).
    """
    e = engine._get(ref)
    streams = streams_of(e.sup)
    streams.configure(e.body, e.sup.config)
    wanted = frozenset(name for name, on in (("stdout", stdout), ("stderr", stderr)) if on)
    sub = streams.subscribe(wanted)
    try:
        yield {"attached": True, "tty": streams.tty, "stdin": streams.open_stdin, "running": e.running}
        async with sub.receive:
            async for stream, data in sub.receive:
                sub.behind -= len(data)
                yield {"stream": stream, "data": data}
        if sub.overflowed:
            raise Unavailable(f"attach to {e.sup.id[:12]}: this client fell {MAX_BEHIND_BYTES >> 20} MiB behind "
                              "the container's output and was cut off; the rest is in its log")
    finally:
        streams.unsubscribe(sub)


def _input_of(engine: Engine, ref: str) -> tuple[Any, ContainerStreams, ProcessInput]:
    e = engine._get(ref)
    streams = streams_of(e.sup)
    if not e.running or streams.input is None:
        raise Conflict(f"container {e.sup.id[:12]} is not running")
    return e, streams, streams.input


async def container_stdin(engine: Engine, ref: str, data: bytes = b"", eof: bool = False) -> None:
    """``container.stdin``: write ``data`` to the container's stdin, then end this client's input if ``eof``.

    Raises:
        NoSuchContainer; Conflict: not running, or created without ``-i``; InvalidRequest: a chunk too big.
    """
    e, streams, stdin = _input_of(engine, ref)
    if not streams.open_stdin:
        raise Conflict(f"container {e.sup.id[:12]} was created without -i (OpenStdin): it has no stdin")
    await _feed(stdin, data, eof)          # after a StdinOnce EOF: dropped, as the pipe is closed


async def _feed(stdin: ProcessInput, data: bytes, eof: bool) -> None:
    if not isinstance(data, bytes) or len(data) > STDIN_CHUNK_MAX:
        raise InvalidRequest(f"stdin data must be bin of at most {STDIN_CHUNK_MAX} bytes")
    if data:
        await stdin.write(data)
    if eof:
        stdin.end_of_input()


def container_resize(engine: Engine, ref: str, h: int, w: int) -> None:
    """``container.resize``: the window size of the container's terminal (Docker's ``h``, ``w``).

    Raises:
        NoSuchContainer; Conflict: not running; InvalidRequest: no terminal, a bad size.
    """
    _check_size(h, w)
    _, _, stdin = _input_of(engine, ref)
    stdin.resize(h, w)


def _check_size(h: Any, w: Any) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise InvalidRequest("resize: h and w must be integers")


async def exec_stdin(engine: Engine, exec_id: str, data: bytes = b"", eof: bool = False) -> None:
    """``exec.stdin``: as ``container.stdin``, for an exec started with ``-i``; waits until it is spawned.

    Raises:
        NoSuchExec; Conflict: not started with ``-i``, or finished.
    """
    stdin = await engine.execs.input_of(exec_id)
    await _feed(stdin, data, eof)


async def exec_resize(engine: Engine, exec_id: str, h: int, w: int) -> None:
    """``exec.resize``: the window size of an exec's terminal; waits until it is spawned.

    Raises:
        NoSuchExec; Conflict: finished; InvalidRequest: no terminal, a bad size.
    """
    _check_size(h, w)
    stdin = await engine.execs.input_of(exec_id, need_stdin=False)
    stdin.resize(h, w)


def _exec_pty(init: Child | None, rows: int, cols: int) -> tuple[int, int]:
    """An exec's pty pair in the container's own devpts (runtime/terminal.py rule 1), else the host's (rule 3)."""
    if init is not None:
        try:
            devpts = open_container_pts(init.pid, init.pidfd)
        except OSError as exc:
            log.warning("exec terminal: cannot open /dev/pts of pid %d (%s): it gets one of the host's", init.pid, exc)
        else:
            try:
                return open_pty(rows=rows, cols=cols, devpts=devpts)
            except OSError as exc:
                log.warning("exec terminal: no pty in /dev/pts of pid %d (%s): it gets one of the host's",
                            init.pid, exc)
            finally:
                os.close(devpts)
    return open_pty(rows=rows, cols=cols)


def exec_stdio(
    *, tty: bool, stdin: bool, rows: int = 0, cols: int = 0, init: Child | None = None,
) -> tuple[ProcessInput | None, list[tuple[int, int]], tuple[int, int, int], list[int]]:
    """An exec's stdio when a client is attached.

    Args:
        init: the container's running init (``Child``): a terminal is allocated in
            its /dev/pts, so it has a name in the container; the host's without it.

    Returns:
        (input or None, our read ends as ``(fd, stream number)``, the child's 0/1/2,
        fds to close once it is spawned).
    """
    if tty:
        master, slave = _exec_pty(init, rows, cols)
        try:
            ours = os.dup(master)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return ProcessInput(ours, tty=True, stdin=stdin), [(master, 1)], (slave, slave, slave), [slave]
    fds: list[int] = []
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        fds += [out_r, out_w]
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        fds += [err_r, err_w]
        if stdin:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            fds += [in_r, in_w]
        else:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    # docker exec -i: the client's EOF is the process's EOF.
    process_input = ProcessInput(in_w, tty=False, stdin=True, stdin_once=True) if in_w >= 0 else None
    return process_input, [(out_r, 1), (err_r, 2)], (in_r, out_w, err_w), [in_r, out_w, err_w]

