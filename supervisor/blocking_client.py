"""The CLI's connection to the daemon: blocking, one request at a time, no event loop.

Most verbs make one request after another (``ps``, ``inspect``, ``run -d``,
``logs``); for them a blocking socket with the sans-IO ``protocols.rpc`` is
all it takes, and the command pays for no anyio or asyncio import (~40 ms,
more than the daemon's answer). The verbs that must read and write at once
(attach, ``-it``, ``stats``, cp) use the anyio client (``client.py``).

The client's errors live here, so that both clients raise the same ones and
neither import costs the other's.
"""

from __future__ import annotations

# The C module, not socket.py: that one converts the module's constants to enums and imports
# selectors, ~2.5 ms of every CLI command's start; a blocking connect/send/recv needs none of it.
from _socket import AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, socket
from collections.abc import Iterator

from protocols import rpc

from .errors import CorralError
from .version import VERSION

TYPE_CHECKING = False       # typing's, without importing typing (~3 ms of every CLI command's start)
if TYPE_CHECKING:
    from typing import Any, Self

CLIENT_AGENT = f"corral-client/{VERSION}"
_RECEIVE_SIZE = 65536


class RpcError(CorralError):
    """The daemon answered a request with an error.

    Attributes:
        code: the error code (``NOT_FOUND``...), possibly one newer than ours.
        message: the daemon's message.
        status: the HTTP status the daemon gave (``status_hint`` too).
        details: machine-readable extras (``exit_code`` of a failed start).
    """

    def __init__(
        self, code: str, message: str, status: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = self.status_hint = rpc.status_for(code) if status is None else status
        self._details = details or {}

    @property
    def details(self) -> dict[str, Any]:
        return self._details

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r}, {self.status})"


class ConnectionLost(ConnectionError):
    """The connection to the daemon ended (or broke) before the answer came.

    Attributes:
        error: the daemon's last word (an ``RpcError``) if it said why, else None.
    """

    def __init__(self, message: str, error: RpcError | None = None) -> None:
        super().__init__(message)
        self.error = error


class BlockingClient:
    """One blocking connection to the daemon: the hello, then one request at a time.

    The sans-IO ``protocols.rpc`` does the framing (STYLE.md: the adapter stays
    boring); a CLI that makes one request after another needs no reader task.
    Leaving a ``stream`` early closes the connection, which cancels it on the daemon.

    Raises:
        OSError: the socket cannot be reached. RpcError: the hello was refused.
        ConnectionLost: the daemon closed the connection or broke the protocol.
    """

    def __init__(self, path: str, *, agent: str = CLIENT_AGENT) -> None:
        self._rpc = rpc
        self._decoder = rpc.FrameDecoder(max_frame_size=rpc.MAX_RESPONSE_FRAME_SIZE)
        self._next_id = 0
        self._sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
        try:
            self._sock.connect(path)
            offered = tuple(sorted(rpc.SUPPORTED_VERSIONS))
            self._send(rpc.ClientHello(offered, agent))
            reply = self._receive()
            if isinstance(reply, rpc.Error):
                raise RpcError(reply.code, reply.message, details=reply.details)
            if not isinstance(reply, rpc.ServerHello) or reply.version not in offered:
                raise ConnectionLost(f"the daemon did not answer the hello: {reply!r}")
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, message: Any) -> None:
        rpc = self._rpc
        try:
            frame = rpc.encode_message(message, max_frame_size=rpc.MAX_REQUEST_FRAME_SIZE)
        except rpc.LocalProtocolError as exc:       # a Dockerfile over 1 MiB, say
            raise RpcError("BAD_REQUEST", f"the request cannot be sent: {exc}") from None
        self._sock.sendall(frame)

    def _receive(self) -> Any:
        rpc = self._rpc
        try:
            while True:
                message = self._decoder.next_message()
                if message is rpc.CLOSED:
                    raise ConnectionLost("the daemon closed the connection")
                if message is not rpc.NEED_DATA:
                    break
                self._decoder.receive_data(self._sock.recv(_RECEIVE_SIZE))
        except rpc.RemoteProtocolError as exc:
            raise ConnectionLost(f"the daemon sent an invalid frame: {exc}") from None
        if isinstance(message, rpc.Error) and message.id is None:
            raise ConnectionLost(f"the daemon closed the connection: {message.code}: {message.message}")
        return message

    def _request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        self._send(self._rpc.Request(self._next_id, method, params))
        return self._next_id

    def _answer(self, request_id: int) -> Any:
        message = self._receive()
        if getattr(message, "id", None) != request_id:
            raise ConnectionLost(f"the daemon answered a request that was not made: {message!r}")
        if isinstance(message, self._rpc.Error):
            raise RpcError(message.code, message.message, details=message.details)
        return message

    def call(self, method: str, /, **params: Any) -> Any:
        """A unary method's result.

        Raises:
            RpcError, ConnectionLost, OSError.
        """
        message = self._answer(self._request(method, params))
        if not isinstance(message, self._rpc.Response):
            raise ConnectionLost(f"{method} streamed where a result was expected")
        return message.result

    def stream(self, method: str, /, **params: Any) -> Iterator[Any]:
        """A streaming method's items, until its end.

        Raises:
            RpcError, ConnectionLost, OSError.
        """
        request_id = self._request(method, params)
        while True:
            message = self._answer(request_id)
            if isinstance(message, self._rpc.Item):
                yield message.item
            elif isinstance(message, self._rpc.End):
                return
            else:
                raise ConnectionLost(f"{method} answered with a result where items were expected")
