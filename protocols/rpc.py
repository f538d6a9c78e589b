"""corral's RPC wire format: length-prefixed msgpack frames (docs/protocol.md).

Sans-IO: bytes in, messages out, and messages in, bytes out. Nothing here
opens a socket or knows trio; ``supervisor/rpc_server.py`` and
``supervisor/client.py`` move the bytes.

Rules this module lives by:

1. A frame is a 4-byte big-endian unsigned length, then that many bytes of one
   msgpack value, which must be a map. A length of 0 is invalid; a length over
   the receiver's limit is rejected from the header alone, before the body is
   buffered.
2. Values are JSON-shaped: nil, bool, int, float, str, bin, array, and maps
   whose keys are all str, at every depth. msgpack ext types (the timestamp
   included) are not part of the protocol. Both directions check this: the
   decoder raises ``RemoteProtocolError``, the encoder ``LocalProtocolError``,
   so a bug of ours never reaches the peer as a frame it must reject.
3. Every message has a str ``t``; its other fields are checked by
   ``parse_message``. Unknown *fields* are ignored (a version may grow
   optional fields); unknown *types* are errors (new types need a new version).
4. After the decoder raised, it stays failed: the connection is beyond repair
   (the next frame boundary is unknown), so the adapter answers once and closes.

Rejected: checking values with msgpack's ``strict_map_key`` alone. It still
allows bytes keys and nested timestamps, which the Docker API layer (JSON)
could not carry. The tree walk costs one pass over a frame of at most a few MiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError

TYPE_CHECKING = False       # typing's, without importing typing: every CLI command imports this module
if TYPE_CHECKING:
    from typing import Any

# Versions this implementation speaks; the handshake picks the highest common one.
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

# SPEC: limits. Requests carry parameters, so 1 MiB is generous; responses may
# carry an inspect document or a container list, so 16 MiB. Bulk data (logs,
# tar archives) is never one frame: such methods stream it as items.
MAX_REQUEST_FRAME_SIZE = 1 << 20
MAX_RESPONSE_FRAME_SIZE = 16 << 20
_MAX_LENGTH_FIELD = (1 << 32) - 1

# Request ids are non-negative int64, so every msgpack implementation holds them.
MAX_REQUEST_ID = (1 << 63) - 1
MAX_METHOD_LENGTH = 256
MAX_AGENT_LENGTH = 256

# Error codes and the HTTP status each maps to (h11's error_status_hint), so the
# Docker API layer answers with the same status the RPC error carries.
# SPEC: 499 is nginx's "client closed request", as gRPC maps CANCELLED; 426
# (Upgrade Required) says the peer must speak another protocol version.
ERROR_CODES: Mapping[str, int] = {
    "NOT_MODIFIED": 304,  # Docker: start of a running / stop of a stopped container
    "BAD_REQUEST": 400,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "TOO_LARGE": 413,
    "UNSUPPORTED_VERSION": 426,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}

_HEADER = struct.Struct(">I")


def status_for(code: str) -> int:
    """The HTTP status for an error ``code``; 500 for a code we do not know.

    A newer peer may send a code this version lacks; it is still an error.
    """
    return ERROR_CODES.get(code, 500)


class _Sentinel:
    """A named singleton returned instead of a frame (h11's NEED_DATA, PAUSED)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")


# --- messages ---------------------------------------------------------------


class _Message:
    """A message: a value with named fields, equal to another of its type with equal fields.

    Plain classes with ``__slots__``, not dataclasses: importing dataclasses
    pulls in inspect, ~9 ms of every CLI command's ~45 ms start. Treat them as
    immutable.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __hash__(self) -> int:         # a TypeError when a field holds a dict, as for a frozen dataclass
        return hash((type(self), *(getattr(self, name) for name in self.__slots__)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class ClientHello(_Message):
    """First frame of a client: the versions it speaks and who it is (``name/version``)."""

    __slots__ = ("versions", "client")

    def __init__(self, versions: tuple[int, ...], client: str) -> None:
        self.versions, self.client = versions, client

    def to_frame(self) -> dict[str, Any]:
        return {"t": "hello", "v": max(self.versions), "versions": list(self.versions), "client": self.client}


class ServerHello(_Message):
    """The server's answer to a ``ClientHello``: the version both will speak."""

    __slots__ = ("version", "server")

    def __init__(self, version: int, server: str) -> None:
        self.version, self.server = version, server

    def to_frame(self) -> dict[str, Any]:
        return {"t": "hello", "v": self.version, "server": self.server}


class Request(_Message):
    """Call ``method``; the client picks ``id``, unique among its requests in flight."""

    __slots__ = ("id", "method", "params")

    def __init__(self, id: int, method: str, params: dict[str, Any] | None = None) -> None:
        self.id, self.method, self.params = id, method, {} if params is None else params

    def to_frame(self) -> dict[str, Any]:
        return {"t": "req", "id": self.id, "method": self.method, "params": self.params}


class Response(_Message):
    """The result of a unary request (terminal)."""

    __slots__ = ("id", "result")

    def __init__(self, id: int, result: Any = None) -> None:
        self.id, self.result = id, result

    def to_frame(self) -> dict[str, Any]:
        return {"t": "res", "id": self.id, "result": self.result}


class Error(_Message):
    """A failed request (terminal), or with ``id=None`` a connection-level error before close.

    ``details`` carries machine-readable extras of some errors (a failed
    start's ``exit_code``); it is left out of the frame when empty.
    """

    __slots__ = ("id", "code", "message", "status", "details")

    def __init__(self, id: int | None, code: str, message: str, status: int,
                 details: dict[str, Any] | None = None) -> None:
        self.id, self.code, self.message, self.status = id, code, message, status
        self.details = {} if details is None else details

    @classmethod
    def of(cls, id: int | None, code: str, message: str, details: dict[str, Any] | None = None) -> Error:
        """An error with the status of ``code`` from ``ERROR_CODES``."""
        return cls(id, code, message, status_for(code), details)

    def to_frame(self) -> dict[str, Any]:
        frame = {"t": "err", "id": self.id, "code": self.code, "message": self.message, "status": self.status}
        if self.details:
            frame["details"] = self.details
        return frame


class Item(_Message):
    """One value of a streaming answer; zero or more precede its ``End``."""

    __slots__ = ("id", "item")

    def __init__(self, id: int, item: Any) -> None:
        self.id, self.item = id, item

    def to_frame(self) -> dict[str, Any]:
        return {"t": "item", "id": self.id, "item": self.item}


class End(_Message):
    """A streaming answer finished normally (terminal)."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id

    def to_frame(self) -> dict[str, Any]:
        return {"t": "end", "id": self.id}


class Cancel(_Message):
    """The client no longer wants request ``id``; ignored if it already finished."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id

    def to_frame(self) -> dict[str, Any]:
        return {"t": "cancel", "id": self.id}


Message = ClientHello | ServerHello | Request | Response | Error | Item | End | Cancel
TERMINAL = (Response, Error, End)


def negotiate_version(offered: Iterable[int], supported: Iterable[int] = SUPPORTED_VERSIONS) -> int | None:
    """The highest version in both sets, or None when they share none."""
    common = set(offered) & set(supported)
    return max(common) if common else None


# --- values -----------------------------------------------------------------

_SCALARS = (type(None), bool, int, float, str, bytes)


class _BadValue(ValueError):
    pass


def _check_value(value: object) -> None:
    """Raise ``_BadValue`` unless ``value`` is JSON-shaped (rule 2).

    Iterative, not recursive: msgpack nests up to 1024 levels, deeper than
    Python's default recursion limit.
    """
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, dict):
            for key, item in v.items():
                if not isinstance(key, str):
                    raise _BadValue(f"map key {key!r} is not a string")
                pending.append(item)
        elif isinstance(v, (list, tuple)):
            pending.extend(v)
        elif not isinstance(v, _SCALARS):
            raise _BadValue(f"a value of type {type(v).__name__} is not allowed")


def _reject_ext(code: int, data: bytes) -> object:
    raise _BadValue(f"msgpack ext type {code} is not allowed")


# --- decoding ---------------------------------------------------------------


class FrameDecoder:
    """Length-prefixed msgpack frames. Bytes in, frames (or messages) out; no sockets.

    Args:
        max_frame_size: the largest body accepted, in bytes (a server takes
            requests, ``MAX_REQUEST_FRAME_SIZE``; a client takes responses,
            ``MAX_RESPONSE_FRAME_SIZE``).
    """

    def __init__(self, *, max_frame_size: int = MAX_REQUEST_FRAME_SIZE) -> None:
        if not 1 <= max_frame_size <= _MAX_LENGTH_FIELD:
            raise ValueError(f"max_frame_size must be in 1..{_MAX_LENGTH_FIELD}, not {max_frame_size}")
        self._buf = bytearray()
        self._eof = False
        self._max = max_frame_size
        self._failed: RemoteProtocolError | None = None

    @property
    def max_frame_size(self) -> int:
        return self._max

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its end.

        Raises:
            RuntimeError: data after end of stream (a bug in the caller).
        """
        if data:
            if self._eof:
                raise RuntimeError("received data after end of stream")
            self._buf += data
        else:
            self._eof = True

    def next_frame(self) -> dict[str, Any] | _Sentinel:
        """The next complete frame as a dict, ``NEED_DATA``, or ``CLOSED`` at a clean EOF.

        Raises:
            RemoteProtocolError: zero-length or oversized frame (``status_hint``
                413 for oversize, known from the header alone), a body that is
                not exactly one msgpack map with str keys and allowed values, a
                map without a str ``t``, or EOF in the middle of a frame. The
                decoder is failed from then on and raises again if called.
        """
        if self._failed is not None:
            raise RemoteProtocolError(f"decoder already failed: {self._failed}")
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._failed = exc
            raise

    def _next_frame(self) -> dict[str, Any] | _Sentinel:
        if len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size == 0:
                raise RemoteProtocolError("frame of 0 bytes: a frame carries one msgpack map")
            if size > self._max:
                exc = RemoteProtocolError(f"frame of {size} bytes exceeds limit of {self._max}")
                exc.status_hint = 413
                raise exc
            end = _HEADER.size + size
            if len(self._buf) >= end:
                body = bytes(self._buf[_HEADER.size:end])
                del self._buf[:end]
                return _decode_body(body)
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise RemoteProtocolError(f"stream ended in the middle of a frame ({len(self._buf)} bytes left)")
        return CLOSED

    def next_message(self) -> Message | _Sentinel:
        """Like ``next_frame``, then ``parse_message`` on the frame."""
        frame = self.next_frame()
        if frame is NEED_DATA or frame is CLOSED:
            return frame
        try:
            return parse_message(frame)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:
            self._failed = exc
            raise


def _decode_body(body: bytes) -> dict[str, Any]:
    try:
        # raw=False: str stays str (invalid UTF-8 is an error), bin stays bytes.
        # strict_map_key=True (msgpack's default) refuses int/array keys early;
        # _check_value then refuses bytes keys and timestamps.
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_reject_ext)
        _check_value(value)
    except (ValueError, TypeError) as exc:  # msgpack's errors (ExtraData, FormatError, StackError) are ValueErrors
        raise RemoteProtocolError(f"frame body is not a valid msgpack value: {exc or type(exc).__name__}") from exc
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"frame body is a {type(value).__name__}, not a map")
    if not isinstance(value.get("t"), str):
        raise RemoteProtocolError("frame has no string field 't'")
    return value


# --- messages <-> frames ----------------------------------------------------


def _field(frame: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in frame:
        raise RemoteProtocolError(f"{frame.get('t')!s} frame: missing field '{name}'")
    value = frame[name]
    # bool is an int in Python, never a valid int field here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise RemoteProtocolError(f"{frame.get('t')!s} frame: field '{name}' must be {what}, not {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _request_id(frame: Mapping[str, Any], *, nullable: bool = False) -> int | None:
    if nullable and frame.get("id", 0) is None:
        return None
    value = _field(frame, "id", int, "an integer request id")
    if not 0 <= value <= MAX_REQUEST_ID:
        raise RemoteProtocolError(f"{frame['t']} frame: id {value} is outside 0..{MAX_REQUEST_ID}")
    return value


def _bounded_str(frame: Mapping[str, Any], name: str, limit: int) -> str:
    value = _field(frame, name, str, "a string")
    if not 0 < len(value) <= limit:
        raise RemoteProtocolError(f"{frame['t']} frame: field '{name}' must be 1..{limit} characters long")
    return value


def _version(value: Any, t: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RemoteProtocolError(f"{t} frame: version {value!r} is not a positive integer")
    return value


def _parse_hello(frame: Mapping[str, Any]) -> ClientHello | ServerHello:
    version = _version(_field(frame, "v", int, "a positive integer"), "hello")
    if ("client" in frame) == ("server" in frame):
        raise RemoteProtocolError("hello frame: needs exactly one of 'client' and 'server'")
    if "server" in frame:
        return ServerHello(version, _bounded_str(frame, "server", MAX_AGENT_LENGTH))
    versions = frame.get("versions", [version])
    if not isinstance(versions, list) or not versions:
        raise RemoteProtocolError("hello frame: 'versions' must be a non-empty list")
    versions = tuple(sorted({_version(v, "hello") for v in versions}))
    if max(versions) != version:
        raise RemoteProtocolError(f"hello frame: 'v' ({version}) must be the highest of 'versions' {list(versions)}")
    return ClientHello(versions, _bounded_str(frame, "client", MAX_AGENT_LENGTH))


def _parse_request(frame: Mapping[str, Any]) -> Request:
    request_id = _request_id(frame)
    method = _bounded_str(frame, "method", MAX_METHOD_LENGTH)
    params = frame.get("params", {})
    if not isinstance(params, dict):
        raise RemoteProtocolError(f"req frame: field 'params' must be a map, not {params!r}")
    return Request(request_id, method, params)


def _parse_error(frame: Mapping[str, Any]) -> Error:
    request_id = _request_id(frame, nullable=True)
    code = _bounded_str(frame, "code", MAX_METHOD_LENGTH)
    message = _field(frame, "message", str, "a string")
    status = _field(frame, "status", int, "an integer")
    details = frame.get("details", {})
    if not isinstance(details, dict):
        raise RemoteProtocolError(f"err frame: field 'details' must be a map, not {details!r}")
    return Error(request_id, code, message, status, details)


def _parse_with_value(cls: type, key: str) -> Any:
    def parse(frame: Mapping[str, Any]) -> Any:
        request_id = _request_id(frame)
        if key not in frame:
            raise RemoteProtocolError(f"{frame['t']} frame: missing field '{key}'")
        return cls(request_id, frame[key])

    return parse


_PARSERS = {
    "hello": _parse_hello,
    "req": _parse_request,
    "res": _parse_with_value(Response, "result"),
    "err": _parse_error,
    "item": _parse_with_value(Item, "item"),
    "end": lambda frame: End(_request_id(frame)),
    "cancel": lambda frame: Cancel(_request_id(frame)),
}


def parse_message(frame: Mapping[str, Any]) -> Message:
    """Check a decoded frame's fields and return its message.

    Args:
        frame: a map as ``FrameDecoder.next_frame`` returns it.

    Raises:
        RemoteProtocolError: unknown ``t``, a missing field, or a field of the
            wrong type or range. Unknown extra fields are ignored.
    """
    t = frame.get("t")
    parser = _PARSERS.get(t) if isinstance(t, str) else None
    if parser is None:
        raise RemoteProtocolError(f"unknown frame type {t!r}")
    return parser(frame)


# --- encoding ---------------------------------------------------------------


def encode_frame(frame: Mapping[str, Any], *, max_frame_size: int = MAX_REQUEST_FRAME_SIZE) -> bytes:
    """One frame: the length header and the msgpack body of ``frame``.

    Raises:
        LocalProtocolError: ``frame`` is not a map of allowed values (rule 2),
            msgpack cannot encode it (an int beyond 64 bits), or the body exceeds
            ``max_frame_size`` (then ``status_hint`` is 413).
    """
    if not isinstance(frame, dict):
        raise LocalProtocolError(f"a frame must be a map, not {type(frame).__name__}")
    try:
        _check_value(frame)
        body = msgpack.packb(frame, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode frame: {exc}") from exc
    if len(body) > max_frame_size:
        exc = LocalProtocolError(f"frame of {len(body)} bytes exceeds limit of {max_frame_size}")
        exc.status_hint = 413
        raise exc
    return _HEADER.pack(len(body)) + body


def encode_message(message: Message, *, max_frame_size: int = MAX_REQUEST_FRAME_SIZE) -> bytes:
    """``encode_frame`` of a message, after checking its fields as a receiver would.

    Raises:
        LocalProtocolError: a field is invalid (an id out of range, an empty
            method, an error code not in ``ERROR_CODES``), or as ``encode_frame``.
    """
    frame = message.to_frame()
    try:
        parse_message(frame)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None
    if isinstance(message, Error) and message.code not in ERROR_CODES:
        raise LocalProtocolError(f"error code {message.code!r} is not in ERROR_CODES")
    return encode_frame(frame, max_frame_size=max_frame_size)
