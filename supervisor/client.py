"""The RPC client of corral's socket, on anyio so trio and asyncio programs can use it.

::

    async with connect("/run/corral/corral.sock") as client:
        info = await client.call("container.inspect", id="web")
        async with client.stream("system.events", since=0) as events:
            async for event in events:
                ...

Rules this module lives by:

1. One reader task hands each frame to the request waiting for its id; one
   writer task sends every frame, so a cancelled caller never leaves half a
   frame on the wire (as in ``rpc_server.py``).
2. The reader never waits for a consumer. A stream's items queue up to
   ``max_stream_buffer``; beyond that the stream is cancelled and its consumer
   gets ``StreamOverflow``. A reader that waited instead would stall every
   other request on the connection, and deadlock a consumer that makes a call
   from inside its ``async for``.
3. A caller that leaves early (cancelled, or out of ``stream()``) sends
   ``cancel`` for its id; frames that still arrive for it are dropped.
4. When the connection ends, every waiter gets its own ``ConnectionLost``; if
   the daemon said why (an ``err`` frame with id nil), that error is attached.

This module uses anyio only, never trio (STYLE.md: a module does not mix them).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from protocols.errors import RemoteProtocolError
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
)

from .blocking_client import CLIENT_AGENT, ConnectionLost, RpcError

DEFAULT_SOCKET = "/run/corral/corral.sock"
DEFAULT_STREAM_BUFFER = 1024
_RECEIVE_SIZE = 65536


class StreamOverflow(Exception):
    """A stream's consumer fell ``max_stream_buffer`` items behind; the stream was cancelled."""


class _Pending:
    """One request in flight: a channel for its items and, at the end, its outcome."""

    def __init__(self, method: str, *, streaming: bool, buffer: int) -> None:
        self.method = method
        self.streaming = streaming
        self.send, self.receive = anyio.create_memory_object_stream[Any](buffer)
        self.outcome: Message | BaseException | None = None

    def finish(self, outcome: Message | BaseException) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self.send.close()  # wakes the waiter: its receive() ends once the queue is empty

    def result(self) -> Any:
        """The unary result, None after a normal end of stream, or raise the failure."""
        outcome = self.outcome
        if isinstance(outcome, Response):
            if self.streaming:
                raise RpcError("BAD_REQUEST", f"{self.method} is a unary method; use Client.call()")
            return outcome.result
        if isinstance(outcome, End):
            return None
        if isinstance(outcome, Error):
            raise RpcError(outcome.code, outcome.message, outcome.status, outcome.details)
        if isinstance(outcome, ConnectionLost):
            # A fresh exception per waiter: one instance raised in many tasks
            # would pile up their tracebacks.
            raise ConnectionLost(str(outcome), outcome.error)
        if isinstance(outcome, BaseException):
            raise outcome
        raise AssertionError(f"request for {self.method} has no outcome yet")


class _Items:
    """The async iterator ``Client.stream`` hands out."""

    def __init__(self, pending: _Pending) -> None:
        self._pending = pending

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._pending.receive.receive()
        except anyio.EndOfStream:
            pass
        self._pending.result()  # raises unless the stream ended normally
        raise StopAsyncIteration


class Client:
    """A connection to the daemon after the hello. Make it with ``connect``."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        *,
        max_request_frame_size: int,
        max_response_frame_size: int,
        max_stream_buffer: int,
    ) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_size=max_response_frame_size)
        self._max_request = max_request_frame_size
        self._max_stream_buffer = max_stream_buffer
        # Unbounded: each caller queues at most its request and one cancel, so
        # the queue is bounded by the number of callers; a cancel must never wait.
        self._outgoing, self._to_send = anyio.create_memory_object_stream[bytes](math.inf)
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._lost: ConnectionLost | None = None
        self.server: str | None = None
        self.version: int | None = None

    async def call(self, method: str, /, **params: Any) -> Any:
        """Call a unary method and return its result.

        Raises:
            RpcError: the daemon answered with an error.
            ConnectionLost: the connection ended first.
            LocalProtocolError: params are not msgpack-able or over the request size limit.
        """
        request_id, pending = self._start(method, params, streaming=False, buffer=0)
        try:
            with pending.receive:
                try:
                    await pending.receive.receive()
                except anyio.EndOfStream:
                    pass
            return pending.result()
        finally:
            self._forget(request_id, pending)

    @asynccontextmanager
    async def stream(self, method: str, /, **params: Any) -> AsyncIterator[AsyncIterator[Any]]:
        """Call a streaming method; iterate the context value for its items.

        Leaving the block before the end cancels the stream on the daemon.
        Iteration raises ``RpcError``, ``ConnectionLost`` or ``StreamOverflow``.
        """
        request_id, pending = self._start(method, params, streaming=True, buffer=self._max_stream_buffer)
        try:
            with pending.receive:
                yield _Items(pending)
        finally:
            self._forget(request_id, pending)

    def _start(self, method: str, params: dict[str, Any], *, streaming: bool, buffer: int) -> tuple[int, _Pending]:
        if self._lost is not None:
            raise ConnectionLost(str(self._lost), self._lost.error)
        request_id = next(self._ids)
        frame = encode_message(Request(request_id, method, params), max_frame_size=self._max_request)
        pending = _Pending(method, streaming=streaming, buffer=buffer)
        self._pending[request_id] = pending  # before sending: the answer may be quick
        try:
            self._outgoing.send_nowait(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The writer is gone; the reader is about to report why.
            pass
        return request_id, pending

    def _forget(self, request_id: int, pending: _Pending) -> None:
        if self._pending.pop(request_id, None) is not None:
            # Still in flight: the caller left early, tell the daemon to stop.
            self._send_nowait(Cancel(request_id))
        pending.finish(anyio.ClosedResourceError(f"request for {pending.method} was abandoned"))

    def _send_nowait(self, message: Message) -> None:
        try:
            self._outgoing.send_nowait(encode_message(message, max_frame_size=self._max_request))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # connection gone: there is nobody left to tell

    # --- tasks -------------------------------------------------------------

    async def _handshake(self, agent: str, versions: Iterable[int]) -> None:
        offered = tuple(sorted(set(versions)))
        try:
            await self._stream.send(encode_message(ClientHello(offered, agent)))
            reply = await self._next_message()
        except (anyio.BrokenResourceError, OSError) as exc:
            raise ConnectionLost(f"connection to the daemon broke during the hello: {exc}") from exc
        if reply is CLOSED:
            raise ConnectionLost("the daemon closed the connection during the hello")
        if isinstance(reply, Error):
            raise RpcError(reply.code, reply.message, reply.status, reply.details)
        if not isinstance(reply, ServerHello):
            raise RemoteProtocolError(f"expected a server hello, got {reply!r}")
        if reply.version not in offered:
            raise RemoteProtocolError(f"daemon chose protocol version {reply.version}, we offered {list(offered)}")
        self.server, self.version = reply.server, reply.version

    async def _next_message(self) -> Message | object:
        while True:
            message = self._decoder.next_message()
            if message is not NEED_DATA:
                return message
            try:
                data = await self._stream.receive(_RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            self._decoder.receive_data(data)

    async def _read_frames(self) -> None:
        try:
            while True:
                message = await self._next_message()
                if message is CLOSED:
                    lost = ConnectionLost("the daemon closed the connection")
                    break
                if isinstance(message, Error) and message.id is None:
                    error = RpcError(message.code, message.message, message.status, message.details)
                    lost = ConnectionLost(f"the daemon closed the connection: {message.code}: {message.message}", error)
                    break
                self._dispatch(message)
        except RemoteProtocolError as exc:
            lost = ConnectionLost(f"the daemon sent an invalid frame: {exc}")
        except (anyio.BrokenResourceError, OSError) as exc:
            lost = ConnectionLost(f"connection to the daemon broke: {exc}")
        self._fail_all(lost)

    def _dispatch(self, message: Message) -> None:
        if not isinstance(message, (Response, Error, Item, End)):
            raise RemoteProtocolError(f"a server may not send {type(message).__name__} frames after the hello")
        pending = self._pending.get(message.id)
        if pending is None:
            return  # a request we gave up on: its cancel and this frame crossed
        if not isinstance(message, Item):
            del self._pending[message.id]
            pending.finish(message)
        elif not pending.streaming:
            self._abandon(message.id, pending, RpcError("BAD_REQUEST", f"{pending.method} streams; use Client.stream()"))
        else:
            try:
                pending.send.send_nowait(message.item)
            except anyio.WouldBlock:
                self._abandon(message.id, pending, StreamOverflow(
                    f"consumer of {pending.method} fell {self._max_stream_buffer} items behind; stream cancelled"
                ))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the consumer left; its exit sends the cancel

    def _abandon(self, request_id: int, pending: _Pending, error: BaseException) -> None:
        del self._pending[request_id]
        pending.finish(error)
        self._send_nowait(Cancel(request_id))

    async def _write_frames(self) -> None:
        async with self._to_send:
            try:
                async for frame in self._to_send:
                    await self._stream.send(frame)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                # Nothing more can be sent. The daemon closed its end, so the
                # reader sees EOF (and the daemon's last error frame) and fails
                # the waiters with the real reason; new calls fail at once.
                pass

    def _fail_all(self, lost: ConnectionLost) -> None:
        if self._lost is None:
            self._lost = lost
        self._outgoing.close()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.finish(lost)


@asynccontextmanager
async def connect_stream(
    stream: anyio.abc.ByteStream,
    *,
    agent: str = CLIENT_AGENT,
    versions: Iterable[int] = SUPPORTED_VERSIONS,
    max_request_frame_size: int = MAX_REQUEST_FRAME_SIZE,
    max_response_frame_size: int = MAX_RESPONSE_FRAME_SIZE,
    max_stream_buffer: int = DEFAULT_STREAM_BUFFER,
) -> AsyncIterator[Client]:
    """Say hello over ``stream`` and yield a ``Client``; close the stream on exit.

    Raises:
        RpcError: the daemon refused the hello (``UNSUPPORTED_VERSION``,
            ``PERMISSION_DENIED``).
        ConnectionLost: the connection ended during the hello.
        RemoteProtocolError: the daemon's answer was not a valid hello.
    """
    async with stream:
        client = Client(
            stream,
            max_request_frame_size=max_request_frame_size,
            max_response_frame_size=max_response_frame_size,
            max_stream_buffer=max_stream_buffer,
        )
        body_error: BaseException | None = None
        try:
            await client._handshake(agent, versions)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client._read_frames)
                tasks.start_soon(client._write_frames)
                try:
                    yield client
                except BaseException as exc:  # noqa: BLE001 - re-raised below, untouched
                    # Re-raised below, outside the task group, so the caller
                    # sees its own exception and not an ExceptionGroup around it.
                    body_error = exc
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            client._fail_all(ConnectionLost("the client was closed"))
            client._to_send.close()
        if body_error is not None:
            raise body_error


@asynccontextmanager
async def connect(path: str | os.PathLike[str] = DEFAULT_SOCKET, **options: Any) -> AsyncIterator[Client]:
    """Connect to the daemon's unix socket and say hello; see ``connect_stream``.

    Raises:
        OSError: the socket cannot be reached (``FileNotFoundError``,
            ``ConnectionRefusedError``, ``PermissionError``), and as ``connect_stream``.
    """
    stream = await anyio.connect_unix(path)
    async with connect_stream(stream, **options) as client:
        yield client
