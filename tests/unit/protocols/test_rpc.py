"""protocols.rpc: frames and messages, every byte split, every malformed input; no sockets."""

from __future__ import annotations

import struct

import msgpack
import pytest

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.rpc import (
    CLOSED,
    ERROR_CODES,
    MAX_REQUEST_ID,
    NEED_DATA,
    Cancel,
    ClientHello,
    End,
    Error,
    FrameDecoder,
    Item,
    Request,
    Response,
    ServerHello,
    encode_frame,
    encode_message,
    negotiate_version,
    parse_message,
    status_for,
)

MESSAGES = [
    ClientHello((1,), "corral-cli/0.1.0"),
    ClientHello((1, 2, 5), "future/9"),
    ServerHello(1, "corral/0.1.0"),
    Request(1, "container.create", {"image": "busybox", "cmd": ["sh", "-c", "true"], "env": {"A": "1"}}),
    Request(MAX_REQUEST_ID, "system.ping"),
    Response(1, {"id": "abc", "blob": b"\x00\xff", "n": -3, "f": 1.5, "ok": True, "none": None}),
    Response(2, None),
    Error.of(3, "NOT_FOUND", "no such container: web"),
    Error.of(None, "TOO_LARGE", "frame of 9 bytes exceeds limit of 8"),
    Error.of(5, "INTERNAL", "exec: \"nope\": not found", {"exit_code": 127}),
    Item(4, {"seq": 1, "type": "container", "action": "start"}),
    Item(4, []),
    End(4),
    Cancel(4),
]


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def decode_all(decoder: FrameDecoder) -> list[object]:
    out = []
    while (message := decoder.next_message()) is not NEED_DATA:
        out.append(message)
        if message is CLOSED:
            break
    return out


def feed(chunks: list[bytes], **kwargs: int) -> list[object]:
    decoder = FrameDecoder(**kwargs)
    out: list[object] = []
    for chunk in filter(None, chunks):  # b"" would mean EOF
        decoder.receive_data(chunk)
        out += decode_all(decoder)
    decoder.receive_data(b"")
    out += decode_all(decoder)
    return out


# --- round trips and splits ---------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: object) -> None:
    assert feed([encode_message(message, max_frame_size=1 << 20)]) == [message, CLOSED]


def test_several_frames_fed_byte_by_byte() -> None:
    wire = b"".join(encode_message(m) for m in MESSAGES)
    assert feed([wire[i:i + 1] for i in range(len(wire))]) == [*MESSAGES, CLOSED]


def test_several_frames_split_at_every_point() -> None:
    wire = b"".join(encode_message(m) for m in MESSAGES[3:9])
    for cut in range(len(wire) + 1):
        assert feed([wire[:cut], wire[cut:]]) == [*MESSAGES[3:9], CLOSED], cut


def test_need_data_until_the_frame_is_complete() -> None:
    wire = encode_message(End(7))
    decoder = FrameDecoder()
    for byte in wire[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(wire[-1:])
    assert decoder.next_frame() == {"t": "end", "id": 7}
    assert decoder.next_frame() is NEED_DATA


def test_clean_eof_is_closed_and_stays_closed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    decoder.receive_data(b"")  # a second EOF is harmless
    assert decoder.next_frame() is CLOSED
    assert decoder.next_frame() is CLOSED


def test_data_after_eof_is_a_caller_bug() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError, match="after end of stream"):
        decoder.receive_data(b"x")


# --- framing errors -------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 11])
def test_eof_in_the_middle_of_a_frame(cut: int) -> None:
    wire = encode_message(Request(1, "system.ping"))
    decoder = FrameDecoder()
    decoder.receive_data(wire[:cut])
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        decoder.next_frame()


def test_oversize_header_is_rejected_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.receive_data(struct.pack(">I", 101))  # the header alone
    with pytest.raises(RemoteProtocolError, match="101 bytes exceeds limit of 100") as info:
        decoder.next_frame()
    assert info.value.status_hint == 413


def test_frame_at_the_limit_is_accepted() -> None:
    body = msgpack.packb({"t": "end", "id": 1, "pad": "x" * 80})
    decoder = FrameDecoder(max_frame_size=len(body))
    decoder.receive_data(raw_frame(body))
    assert decoder.next_message() == End(1)


def test_zero_length_frame_is_invalid() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="0 bytes"):
        decoder.next_frame()


def test_the_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(raw_frame(b"\xc1") + encode_message(End(1)))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        decoder.next_frame()


@pytest.mark.parametrize("size", [0, -1, 1 << 32])
def test_max_frame_size_is_checked(size: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_size=size)


# --- bodies that are not a frame ------------------------------------------------

BAD_BODIES = {
    "never-used byte 0xc1": b"\xc1",
    "truncated map": b"\x82\xa1t",
    "two values": msgpack.packb({"t": "end", "id": 1}) + b"\xc0",
    "invalid utf-8": b"\x81\xa1t\xa2\xff\xfe",
    "array": msgpack.packb(["t", "end"]),
    "integer": msgpack.packb(7),
    "nil": b"\xc0",
    "int key": msgpack.packb({"t": "end", 1: 2}),
    "bytes key": msgpack.packb({"t": "end", b"id": 1}),
    "nested bytes key": msgpack.packb({"t": "req", "id": 1, "method": "m", "params": {b"k": 1}}),
    "ext type": msgpack.packb({"t": "item", "id": 1, "item": msgpack.ExtType(5, b"x")}),
    "timestamp": msgpack.packb({"t": "item", "id": 1, "item": msgpack.Timestamp(1, 0)}),
    "no t": msgpack.packb({"id": 1}),
    "t not a string": msgpack.packb({"t": 1, "id": 1}),
    "deeper than msgpack's stack": b"\x91" * 5000 + b"\xc0",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_garbage_bodies_are_remote_errors(body: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(raw_frame(body))
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


# --- fields -----------------------------------------------------------------------

BAD_FRAMES = {
    "unknown type": {"t": "subscribe", "id": 1},
    "req without id": {"t": "req", "method": "m"},
    "id is a bool": {"t": "req", "id": True, "method": "m"},
    "id is a string": {"t": "req", "id": "1", "method": "m"},
    "id is negative": {"t": "req", "id": -1, "method": "m"},
    "id over int64": {"t": "req", "id": MAX_REQUEST_ID + 1, "method": "m"},
    "id is a float": {"t": "end", "id": 1.0},
    "req id is nil": {"t": "req", "id": None, "method": "m"},
    "empty method": {"t": "req", "id": 1, "method": ""},
    "method not a string": {"t": "req", "id": 1, "method": ["m"]},
    "method too long": {"t": "req", "id": 1, "method": "m" * 257},
    "params a list": {"t": "req", "id": 1, "method": "m", "params": [1]},
    "res without result": {"t": "res", "id": 1},
    "item without item": {"t": "item", "id": 1},
    "cancel without id": {"t": "cancel"},
    "err without code": {"t": "err", "id": 1, "message": "x", "status": 500},
    "err status a string": {"t": "err", "id": 1, "code": "INTERNAL", "message": "x", "status": "500"},
    "err message nil": {"t": "err", "id": 1, "code": "INTERNAL", "message": None, "status": 500},
    "err details a list": {"t": "err", "id": 1, "code": "INTERNAL", "message": "", "status": 500, "details": [1]},
    "hello without v": {"t": "hello", "client": "c/1"},
    "hello v zero": {"t": "hello", "v": 0, "client": "c/1"},
    "hello v a bool": {"t": "hello", "v": True, "client": "c/1"},
    "hello neither side": {"t": "hello", "v": 1},
    "hello both sides": {"t": "hello", "v": 1, "client": "c/1", "server": "s/1"},
    "hello empty name": {"t": "hello", "v": 1, "client": ""},
    "hello versions not a list": {"t": "hello", "v": 1, "versions": 1, "client": "c/1"},
    "hello versions empty": {"t": "hello", "v": 1, "versions": [], "client": "c/1"},
    "hello v not the highest": {"t": "hello", "v": 1, "versions": [1, 2], "client": "c/1"},
    "hello versions hold a string": {"t": "hello", "v": 2, "versions": [2, "1"], "client": "c/1"},
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_fields_are_remote_errors(frame: dict) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_message(frame)
    # The decoder applies the same checks to what arrives on the wire.
    decoder = FrameDecoder()
    decoder.receive_data(raw_frame(msgpack.packb(frame)))
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def test_unknown_fields_are_ignored() -> None:
    frame = {"t": "req", "id": 9, "method": "m", "deadline_ms": 5, "trace": {"x": 1}}
    assert parse_message(frame) == Request(9, "m", {})


def test_defaults_for_optional_fields() -> None:
    assert parse_message({"t": "hello", "v": 3, "client": "c/1"}) == ClientHello((3,), "c/1")
    assert parse_message({"t": "err", "id": None, "code": "X", "message": "", "status": 599}) == Error(None, "X", "", 599)


# --- encoding -------------------------------------------------------------------


def test_encode_frame_enforces_the_limit() -> None:
    frame = {"t": "item", "id": 1, "item": "x" * 100}
    size = len(msgpack.packb(frame))
    assert len(encode_frame(frame, max_frame_size=size)) == size + 4
    with pytest.raises(LocalProtocolError, match="exceeds limit") as info:
        encode_frame(frame, max_frame_size=size - 1)
    assert info.value.status_hint == 413


UNENCODABLE = {
    "not a map": ["t", "end"],
    "an object": {"t": "res", "id": 1, "result": object()},
    "a set": {"t": "res", "id": 1, "result": {1, 2}},
    "int beyond 64 bits": {"t": "res", "id": 1, "result": 1 << 70},
    "bytes key": {"t": "res", "id": 1, "result": {b"k": 1}},
    "int key": {"t": "res", "id": 1, "result": {1: 1}},
    "timestamp": {"t": "res", "id": 1, "result": msgpack.Timestamp(1, 0)},
}


@pytest.mark.parametrize("frame", UNENCODABLE.values(), ids=UNENCODABLE.keys())
def test_unencodable_frames_are_local_errors(frame: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(frame)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [Request(-1, "m"), Request(1, ""), Response(True, 1), Error(1, "NO_SUCH_CODE", "x", 500), ClientHello((0,), "c")],
    ids=["negative id", "empty method", "bool id", "unknown code", "version 0"],
)
def test_encode_message_refuses_what_a_receiver_would_refuse(message: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(message)  # type: ignore[arg-type]


def test_tuples_encode_as_arrays() -> None:
    assert feed([encode_message(Response(1, (1, (2, 3))))]) == [Response(1, [1, [2, 3]]), CLOSED]


# --- tables ---------------------------------------------------------------------


def test_error_codes_and_status() -> None:
    assert Error.of(1, "NOT_FOUND", "x").status == 404
    assert "details" not in Error.of(1, "NOT_FOUND", "x").to_frame()  # only when there are some
    assert status_for("CANCELLED") == 499
    assert status_for("SOMETHING_NEWER") == 500
    assert all(isinstance(code, str) and code.isupper() for code in ERROR_CODES)


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [((1,), {1}, 1), ((1, 2, 3), {1, 2}, 2), ((2,), {1}, None), ((1, 3), {2, 3, 4}, 3), ((), {1}, None)],
)
def test_negotiate_picks_the_highest_common_version(offered: tuple, supported: set, chosen: int | None) -> None:
    assert negotiate_version(offered, supported) == chosen
