"""The CLI's side of attach: ``corral attach``, and the attached parts of ``run``, ``start -a`` and ``exec``.

One session is four tasks over one RPC connection:

- output: the ``container.attach`` (or ``exec.start``) stream's items to our
  stdout/stderr (a terminal's raw bytes all go to stdout); its end ends the
  session;
- input: our stdin, a chunk at a time, as ``container.stdin``/``exec.stdin``
  calls, each awaited before the next (so they stay in order); with a
  terminal, through the detach-key matcher (``protocols.detach``): the
  sequence ends the session and nothing of it is sent; at EOF one call with
  ``eof`` true;
- resize: with a terminal, our window size at start and on every SIGWINCH;
- signals (``--sig-proxy``, without a terminal): SIGINT/SIGTERM become
  ``container.kill``.

While attached with a terminal and stdin, our terminal is in raw mode; it is
restored on every way out (end, detach, error, cancellation).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import termios
import tty as tty_mode
from collections.abc import Awaitable, Callable
from contextlib import contextmanager

from protocols.detach import DetachKeysError, EscapeMatcher

from .blocking_client import RpcError
from .commands import add_attach_flags, detach_keys_of, terminal_size

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every CLI command's start)
if TYPE_CHECKING:
    from typing import Any

    from anyio import CancelScope

READ_SIZE = 32 * 1024          # one stdin call's data (the request frame limit is 1 MiB)
PROXIED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_parsers(sub) -> None:
    sp = sub.add_parser("attach", help="attach to a running container's input and output")
    sp.add_argument("--no-stdin", action="store_true", help="do not forward our stdin")
    add_attach_flags(sp)
    sp.add_argument("container")


@contextmanager
def raw_terminal(fd: int, enabled: bool):
    """Raw mode on ``fd`` for the block (cfmakeraw, as docker's term.MakeRaw); restored however it ends."""
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty_mode.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pollable(fd: int) -> bool:
    """Whether epoll can watch ``fd`` (a terminal, pipe or socket; not a regular file or /dev/null)."""
    mode = os.fstat(fd).st_mode
    return os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class Session:
    """One attach, as the module docstring draws it. ``run()`` returns once it is over.

    Attributes after ``run()``: ``detached`` (the detach keys ended it), ``exit_code``
    (an exec's ``ExitCode`` item, if one came).
    """

    def __init__(self, items, *, tty: bool, stdin: bool, send_input: Callable[[bytes, bool], Awaitable[Any]],
                 resize: Callable[[int, int], Awaitable[Any]] | None = None,
                 kill: Callable[[str], Awaitable[Any]] | None = None, detach_keys: bytes = b"\x10\x11") -> None:
        self._items = items
        self.tty = tty
        self.stdin = stdin
        self._send_input = send_input
        self._resize = resize
        self._kill = kill
        self._matcher = EscapeMatcher(detach_keys) if tty else None
        self.detached = False
        self.exit_code: int | None = None

    async def run(self) -> None:
        import anyio     # here, not at the top: only the verbs that attach pay for it (blocking_client.py)

        with raw_terminal(0, self.tty and self.stdin and os.isatty(0)):
            async with anyio.create_task_group() as tasks:
                if self.stdin:
                    tasks.start_soon(self._forward_stdin, tasks.cancel_scope)
                if self.tty and self._resize is not None and terminal_size() is not None:
                    tasks.start_soon(self._follow_window_size)
                if not self.tty and self._kill is not None:
                    tasks.start_soon(self._proxy_signals)
                await self._copy_output()
                tasks.cancel_scope.cancel()

    async def _copy_output(self) -> None:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        async for item in self._items:
            if "data" in item:
                stream = out if self.tty or item.get("stream") != "stderr" else err
                stream.write(item["data"])
                stream.flush()
            elif "ExitCode" in item:
                self.exit_code = int(item["ExitCode"])

    async def _forward_stdin(self, scope: CancelScope) -> None:
        import anyio

        pollable = _pollable(0)
        try:
            while True:
                if pollable:
                    await anyio.wait_readable(0)
                data = os.read(0, READ_SIZE)
                if not data:
                    if self._matcher is not None:
                        held = self._matcher.flush()
                        if held:
                            await self._send_input(held, False)
                    await self._send_input(b"", True)
                    return
                if self._matcher is not None:
                    data, detached = self._matcher.feed(data)
                    if data:
                        await self._send_input(data, False)
                    if detached:
                        self.detached = True
                        scope.cancel()
                        return
                else:
                    await self._send_input(data, False)
        except RpcError:
            return                # it stopped (or closed its stdin) meanwhile: the output says the rest

    async def _follow_window_size(self) -> None:
        import anyio

        with anyio.open_signal_receiver(signal.SIGWINCH) as winches:
            await self._send_size()
            async for _ in winches:
                await self._send_size()

    async def _send_size(self) -> None:
        size = terminal_size()
        if size is not None and self._resize is not None:
            try:
                await self._resize(*size)
            except RpcError:
                pass              # not running any more: the output stream is about to end

    async def _proxy_signals(self) -> None:
        import anyio

        with anyio.open_signal_receiver(*PROXIED_SIGNALS) as signals:
            async for signum in signals:
                try:
                    await self._kill(signal.Signals(signum).name)
                except RpcError:
                    pass


async def attach_container(client, ref: str, *, stdin: bool, detach_keys: bytes, sig_proxy: bool,
                           on_attached: Callable[[], Awaitable[Any]] | None = None) -> bool:
    """Attach to ``ref`` (``on_attached`` runs once the daemon has us: ``run``/``start -a`` start it there).

    Returns:
        True when the user detached; False when the container's run ended.

    Raises:
        RpcError: from the daemon (attach, or ``on_attached``).
    """
    async with client.stream("container.attach", id=ref) as items:
        items = aiter(items)
        first = await anext(items)            # {"attached": true, "tty", "stdin", "running"}: we are in
        if on_attached is not None:
            await on_attached()
        tty = bool(first.get("tty"))
        forward = stdin and bool(first.get("stdin"))

        async def send_input(data: bytes, eof: bool) -> None:
            await client.call("container.stdin", id=ref, data=data, eof=eof)

        async def resize(h: int, w: int) -> None:
            await client.call("container.resize", id=ref, h=h, w=w)

        async def kill(name: str) -> None:
            await client.call("container.kill", id=ref, signal=name)

        session = Session(items, tty=tty, stdin=forward, send_input=send_input, resize=resize,
                          kill=kill if sig_proxy else None, detach_keys=detach_keys)
        await session.run()
    return session.detached


async def attach_exec(client, exec_id: str, *, tty: bool, stdin: bool, detach_keys: bytes) -> tuple[bool, int]:
    """Start the exec and attach to it; (detached, its exit code)."""
    async with client.stream("exec.start", id=exec_id) as items:
        async def send_input(data: bytes, eof: bool) -> None:
            await client.call("exec.stdin", id=exec_id, data=data, eof=eof)

        async def resize(h: int, w: int) -> None:
            await client.call("exec.resize", id=exec_id, h=h, w=w)

        session = Session(items, tty=tty, stdin=stdin, send_input=send_input, resize=resize if tty else None,
                          detach_keys=detach_keys)
        await session.run()
    return session.detached, session.exit_code if session.exit_code is not None else 0


def say_detached() -> None:
    """What docker prints once the detach keys were read (our terminal is restored by then)."""
    print("read escape sequence", file=sys.stderr, flush=True)


async def cmd_attach(client, args) -> int:
    """docker attach: exit 1 for a missing, stopped or paused container; the container's status when it exits."""
    try:
        keys = detach_keys_of(args)
    except DetachKeysError as exc:
        print(f"corral: invalid detach keys: {exc}", file=sys.stderr)
        return 125
    try:
        info = await client.call("container.inspect", id=args.container)
    except RpcError as exc:
        if exc.code == "NOT_FOUND":
            print(f"corral: No such container: {args.container}", file=sys.stderr)
            return 1
        raise
    state = info["State"]
    if state.get("Paused"):
        print("corral: You cannot attach to a paused container, unpause it first", file=sys.stderr)
        return 1
    if not state.get("Running"):
        print("corral: You cannot attach to a stopped container, start it first", file=sys.stderr)
        return 1
    if await attach_container(client, info["Id"], stdin=not args.no_stdin, detach_keys=keys,
                              sig_proxy=args.sig_proxy):
        say_detached()
        return 0
    result = await client.call("container.wait", id=info["Id"])
    return int(result["StatusCode"])


VERBS = {"attach": cmd_attach}
