"""The msgpack RPC server: ``protocols.rpc`` frames over a trio stream (docs/protocol.md).

A thin adapter: the codec is sans-IO in ``protocols/rpc.py``, the methods are
registered in a ``Methods`` table (the Engine's calls, later), and this module
only moves frames and runs each request in its own task.

Rules this module lives by:

1. One task reads, one task writes, one task per request. A slow stream never
   holds up another request on the same connection.
2. Every frame goes out through one memory channel to the writer task, so a
   frame is queued whole or not at all. Cancelling a request (the client's
   ``cancel``) can therefore never cut a frame in half.
3. Every request gets exactly one terminal frame (``res``, ``err`` or ``end``),
   except when the connection itself goes away.
4. A ``CorralError`` from a method becomes an ``err`` frame with its code. Any
   other exception is a bug in that method: it is logged with its traceback and
   answered ``INTERNAL``; the connection and the daemon carry on. (STYLE.md
   lets bugs propagate, but here one broken method must not take the daemon and
   every client down with it; the traceback still reaches the log.)
5. A frame we cannot parse ends the connection: we answer one ``err`` with
   ``id`` nil (``TOO_LARGE`` or ``BAD_REQUEST``), then close. Other
   connections never notice.

Rejected: serializing ``send_all`` calls with a ``trio.Lock``. A request
cancelled in the middle of ``send_all`` would leave half a frame on the wire
and corrupt the stream for every other request; shielding the send instead
would let a peer that stops reading hold the connection open forever.
"""

from __future__ import annotations

import functools
import grp
import inspect
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.rpc import (
    CLOSED,
    MAX_REQUEST_FRAME_SIZE,
    MAX_RESPONSE_FRAME_SIZE,
    NEED_DATA,
    SUPPORTED_VERSIONS,
    Cancel,
    ClientHello,
    End,
    Error,
    FrameDecoder,
    Item,
    Message,
    Request,
    Response,
    ServerHello,
    encode_message,
    negotiate_version,
)

from .errors import CorralError, InvalidRequest, NoSuchMethod
from .version import VERSION

log = logging.getLogger("corral.rpc")

SERVER_AGENT = f"corral/{VERSION}"
DEFAULT_SOCKET = "/run/corral/corral.sock"
DEFAULT_MAX_IN_FLIGHT = 128
HELLO_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
_RECEIVE_SIZE = 65536
# Frames queued for the writer before request tasks wait: enough to keep the
# socket busy, small enough that a peer that stops reading stalls its streams.
_OUTGOING_FRAMES = 16

PeerCheck = Callable[[trio.abc.Stream], bool]


# --- methods ----------------------------------------------------------------


@dataclass(frozen=True)
class _Method:
    name: str
    fn: Callable[..., Any]
    streaming: bool
    signature: inspect.Signature


class Methods:
    """The table of RPC methods a server offers.

    A unary method is an ``async def`` returning the result; a streaming method
    is an async generator yielding items. Either takes the request's params as
    keyword arguments::

        methods = Methods()

        @methods.unary("container.inspect")
        async def inspect(id: str) -> dict: ...

        @methods.stream("system.events")
        async def events(since: int = 0): ...   # yields events

    Params that do not fit the signature are answered ``BAD_REQUEST`` before the
    method runs. An async generator must not ``yield`` inside a nursery or a
    cancel scope of its own (trio's rule for generators).
    """

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}

    def unary(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register an ``async def`` as method ``name``; returns it unchanged."""
        return functools.partial(self._add, name, streaming=False)

    def stream(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register an async generator function as streaming method ``name``."""
        return functools.partial(self._add, name, streaming=True)

    def _add(self, name: str, fn: Callable[..., Any], *, streaming: bool) -> Callable[..., Any]:
        if name in self._methods:
            raise ValueError(f"rpc method {name!r} is already registered")
        wanted = inspect.isasyncgenfunction if streaming else inspect.iscoroutinefunction
        if not wanted(fn):
            kind = "an async generator function" if streaming else "an async function"
            raise TypeError(f"rpc method {name!r} must be {kind}, not {fn!r}")
        self._methods[name] = _Method(name, fn, streaming, inspect.signature(fn))
        return fn

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        return sorted(self._methods)

    def bind(self, name: str, params: dict[str, Any]) -> tuple[bool, Callable[[], Any]]:
        """The method ``name`` with ``params`` bound: ``(streaming, call)``.

        Raises:
            NoSuchMethod: no method has this name.
            InvalidRequest: params do not fit the method's signature.
        """
        method = self._methods.get(name)
        if method is None:
            raise NoSuchMethod(f"no rpc method {name!r}")
        try:
            bound = method.signature.bind(**params)
        except TypeError as exc:
            raise InvalidRequest(f"bad params for {name}: {exc}") from None
        return method.streaming, functools.partial(method.fn, *bound.args, **bound.kwargs)


def _expected_error(exc: Exception) -> CorralError | None:
    """The ``CorralError`` a method failed with, also when a nursery wrapped it alone."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, CorralError) else None


def _farewell(exc: RemoteProtocolError) -> Error:
    code = "TOO_LARGE" if exc.status_hint == 413 else "BAD_REQUEST"
    return Error.of(None, code, str(exc))


def _unencodable(method: str, request_id: int, exc: LocalProtocolError) -> Error:
    """The error that replaces an answer we cannot send."""
    if exc.status_hint == 413:
        return Error.of(request_id, "TOO_LARGE", f"answer of {method} is too large: {exc}")
    log.error("rpc method %s returned a value msgpack cannot carry: %s", method, exc)
    return Error.of(request_id, "INTERNAL", f"answer of {method} cannot be encoded: {exc}")


# --- one connection -----------------------------------------------------------


class _Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        methods: Methods,
        *,
        peer_ok: PeerCheck | None,
        server_agent: str,
        versions: Iterable[int],
        max_request_frame_size: int,
        max_response_frame_size: int,
        max_in_flight: int,
        hello_timeout_s: float,
        close_timeout_s: float,
    ) -> None:
        self._stream = stream
        self._methods = methods
        self._peer_ok = peer_ok
        self._agent = server_agent
        self._versions = frozenset(versions)
        self._decoder = FrameDecoder(max_frame_size=max_request_frame_size)
        self._max_response = max_response_frame_size
        self._max_in_flight = max_in_flight
        self._hello_timeout_s = hello_timeout_s
        self._close_timeout_s = close_timeout_s
        self._to_writer, self._from_handlers = trio.open_memory_channel[bytes](_OUTGOING_FRAMES)
        self._in_flight: dict[int, trio.CancelScope] = {}

    async def run(self) -> None:
        async with self._stream, trio.open_nursery() as connection:
            connection.start_soon(self._write_frames, connection.cancel_scope)
            async with self._to_writer:  # closing it lets the writer finish the queue
                await self._converse()
            # Flush what is queued (a farewell error), but never wait forever
            # on a peer that has stopped reading.
            connection.cancel_scope.deadline = trio.current_time() + self._close_timeout_s

    async def _converse(self) -> None:
        reply = await self._handshake()
        if reply is not None:
            await self._send(reply)
        if not isinstance(reply, ServerHello):
            return
        async with trio.open_nursery() as requests:
            farewell = await self._read_requests(requests)
            # Stop every request before the farewell, so nothing follows it.
            requests.cancel_scope.cancel()
        if farewell is not None:
            await self._send(farewell)

    async def _handshake(self) -> Message | None:
        """The reply to the client's hello: ServerHello, an Error, or None (the peer left)."""
        with trio.move_on_after(self._hello_timeout_s):
            try:
                message = await self._next_message()
            except RemoteProtocolError as exc:
                return _farewell(exc)
            if message is CLOSED:
                return None
            if not isinstance(message, ClientHello):
                return Error.of(None, "BAD_REQUEST", f"expected a client hello first, got {message!r}")
            # After the hello, so the refusal is an answer the client reads.
            if self._peer_ok is not None and not self._peer_ok(self._stream):
                return Error.of(None, "PERMISSION_DENIED", "permission denied: this peer may not use the corral socket")
            version = negotiate_version(message.versions, self._versions)
            if version is None:
                return Error.of(
                    None,
                    "UNSUPPORTED_VERSION",
                    f"client speaks protocol versions {list(message.versions)}, "
                    f"this server speaks {sorted(self._versions)}",
                )
            log.debug("rpc client %s speaks version %d", message.client, version)
            return ServerHello(version, self._agent)
        return Error.of(None, "BAD_REQUEST", f"no hello within {self._hello_timeout_s:g} s")

    async def _read_requests(self, requests: trio.Nursery) -> Error | None:
        """Start a task per request until EOF (None) or a protocol violation (the farewell)."""
        while True:
            try:
                message = await self._next_message()
            except RemoteProtocolError as exc:
                return _farewell(exc)
            if message is CLOSED:
                # SPEC: no half-close; a client that ends its side is gone, so
                # its requests (an endless event stream too) are cancelled.
                return None
            if isinstance(message, Cancel):
                scope = self._in_flight.get(message.id)
                if scope is not None:  # else it already finished: the answer crossed the cancel
                    scope.cancel()
            elif not isinstance(message, Request):
                return Error.of(None, "BAD_REQUEST", f"a client may not send {type(message).__name__} frames")
            elif message.id in self._in_flight:
                return Error.of(None, "BAD_REQUEST", f"request id {message.id} is already in flight")
            elif len(self._in_flight) >= self._max_in_flight:
                await self._send(
                    Error.of(message.id, "UNAVAILABLE", f"more than {self._max_in_flight} requests in flight")
                )
            else:
                # Registered before the task starts, so a cancel right behind it finds it.
                self._in_flight[message.id] = scope = trio.CancelScope()
                requests.start_soon(self._answer, message, scope, name=f"rpc {message.method}#{message.id}")

    async def _answer(self, request: Request, scope: trio.CancelScope) -> None:
        terminal: Message | None = None
        try:
            with scope:
                terminal = await self._execute(request)
            if scope.cancelled_caught:
                terminal = Error.of(request.id, "CANCELLED", f"{request.method} was cancelled by the client")
        finally:
            # Forget the id before answering: once the client reads the
            # terminal frame it may reuse the id.
            del self._in_flight[request.id]
        assert terminal is not None
        await self._send(terminal, method=request.method)

    async def _execute(self, request: Request) -> Message:
        method = request.method
        try:
            streaming, call = self._methods.bind(method, request.params)
            if not streaming:
                return Response(request.id, await call())
            async with aclosing(call()) as items:
                async for item in items:
                    await self._send(Item(request.id, item))
            return End(request.id)
        except LocalProtocolError as exc:  # an item we cannot encode
            return _unencodable(method, request.id, exc)
        except Exception as exc:
            expected = _expected_error(exc)
            if expected is not None:
                return Error.of(request.id, expected.code, str(expected), expected.details)
            log.exception("rpc method %s failed (request %d); answering INTERNAL", method, request.id)
            return Error.of(request.id, "INTERNAL", f"internal error in {method}: {type(exc).__name__}: {exc}")

    async def _send(self, message: Message, *, method: str | None = None) -> None:
        try:
            frame = encode_message(message, max_frame_size=self._max_response)
        except LocalProtocolError as exc:
            if method is None or message.id is None:
                raise  # one of our own control frames: a bug here
            frame = encode_message(_unencodable(method, message.id, exc))
        await self._to_writer.send(frame)

    async def _next_message(self) -> Message | object:
        while True:
            message = self._decoder.next_message()
            if message is not NEED_DATA:
                return message
            try:
                data = await self._stream.receive_some(_RECEIVE_SIZE)
            except trio.BrokenResourceError:
                return CLOSED  # reset by the peer: nobody is left to answer
            self._decoder.receive_data(data)

    async def _write_frames(self, connection: trio.CancelScope) -> None:
        async with self._from_handlers:
            try:
                async for frame in self._from_handlers:
                    await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The peer is gone, so no answer can reach it: stop the whole connection.
                connection.cancel()


async def serve_rpc(
    stream: trio.abc.Stream,
    methods: Methods,
    *,
    peer_ok: PeerCheck | None = None,
    server_agent: str = SERVER_AGENT,
    versions: Iterable[int] = SUPPORTED_VERSIONS,
    max_request_frame_size: int = MAX_REQUEST_FRAME_SIZE,
    max_response_frame_size: int = MAX_RESPONSE_FRAME_SIZE,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    hello_timeout_s: float = HELLO_TIMEOUT_S,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> None:
    """Serve one RPC connection until the client leaves or breaks the protocol.

    Args:
        stream: the connection; closed on return.
        methods: the methods to offer.
        peer_ok: called with ``stream`` after the client's hello; False answers
            ``PERMISSION_DENIED`` and closes.
        server_agent: our name in the server hello.
        versions: protocol versions we speak; the highest common one is used.
        max_request_frame_size: largest frame accepted from the client.
        max_response_frame_size: largest frame we send; a larger answer becomes
            a ``TOO_LARGE`` error for that request.
        max_in_flight: requests beyond this many at once are answered ``UNAVAILABLE``.
        hello_timeout_s: how long a new client may take to say hello.
        close_timeout_s: how long to try to flush the last frames before closing.

    Returns when the connection is done. Peer misbehaviour and disconnects are
    handled here and never raised; an exception out of this is a bug.
    """
    connection = _Connection(
        stream,
        methods,
        peer_ok=peer_ok,
        server_agent=server_agent,
        versions=versions,
        max_request_frame_size=max_request_frame_size,
        max_response_frame_size=max_response_frame_size,
        max_in_flight=max_in_flight,
        hello_timeout_s=hello_timeout_s,
        close_timeout_s=close_timeout_s,
    )
    await connection.run()


# --- the unix socket ------------------------------------------------------------

# struct ucred { pid_t pid; uid_t uid; gid_t gid; };  (socket(7), SO_PEERCRED)
_UCRED = struct.Struct("3i")


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process that connected ``sock``, as the kernel recorded it at connect."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def group_peer_check(gid: int | None) -> PeerCheck:
    """A ``peer_ok`` that admits root, our own uid, and members of group ``gid``.

    The socket file's mode already keeps others out; this is the second lock,
    for a socket made too open by hand or an fd passed to another process.
    Membership is the peer's gid at connect or its listing in the group database.
    """

    def peer_ok(stream: trio.abc.Stream) -> bool:
        pid, uid, peer_gid = peer_credentials(stream.socket)  # type: ignore[attr-defined]
        if uid in (0, os.geteuid()) or (gid is not None and (peer_gid == gid or _listed_in_group(uid, gid))):
            return True
        log.warning("rejected rpc peer pid=%d uid=%d gid=%d: not root nor in group %s", pid, uid, peer_gid, gid)
        return False

    return peer_ok


def _listed_in_group(uid: int, gid: int) -> bool:
    import pwd  # only needed on this rare path

    try:
        return pwd.getpwuid(uid).pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


async def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket left by a daemon that died; refuse to touch a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            await probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)
            return
        except FileNotFoundError:
            return
    raise FileExistsError(f"another process is serving on {path}")


def _give_to_group(path: Path, group: str) -> int | None:
    """chown ``path`` to ``group``; its gid, or None if that is impossible (then logged)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        st = os.stat(path)
        log.warning(
            "group %r does not exist: %s stays %d:%d, so only root (and its owner) can connect",
            group, path, st.st_uid, st.st_gid,
        )
        return None
    try:
        os.chown(path, -1, gid)
    except PermissionError as exc:
        log.warning("cannot give %s to group %r: %s; only its owner can connect", path, group, exc)
        return None
    return gid


async def serve_unix(
    path: str | os.PathLike[str],
    methods: Methods,
    *,
    mode: int = 0o660,
    group: str = "corral",
    backlog: int = 128,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve RPC on a unix socket until cancelled; remove the socket file then.

    Args:
        path: the socket file; a stale one (nobody listening) is removed first.
        methods: the methods to offer.
        mode: permission bits of the socket file; connecting needs write permission.
        group: owner group of the socket file; if it does not exist the file keeps
            our uid:gid and a warning is logged.
        backlog: ``listen(2)`` backlog.
        task_status: ``started(path)`` once clients can connect.
        **options: passed to ``serve_rpc`` (limits, timeouts).

    Raises:
        FileExistsError: ``path`` is not a socket, or another process serves on it.
        OSError: binding failed (no such directory, permissions).
    """
    path = Path(path)
    await _remove_stale_socket(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    inode = os.stat(path).st_ino
    try:
        # Mode and group are set before listen(2): until then every connect is
        # refused, so there is no moment when the socket is more open than asked.
        # (Rejected: umask around bind, which is process-wide and races threads.)
        os.chmod(path, mode)
        gid = _give_to_group(path, group)
        sock.listen(backlog)
        listener = trio.SocketListener(sock)
        handler = functools.partial(serve_rpc, methods=methods, peer_ok=group_peer_check(gid), **options)
        async with listener, trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, [listener])
            log.info("rpc listening on %s (mode %o, gid %s)", path, mode, gid)
            task_status.started(path)
    finally:
        sock.close()
        _unlink_if_ours(path, inode)


def _unlink_if_ours(path: Path, inode: int) -> None:
    # A later daemon may have replaced a socket it judged stale; leave that one be.
    try:
        if os.lstat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass
