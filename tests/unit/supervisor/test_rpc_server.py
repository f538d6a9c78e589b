"""supervisor.rpc_server against a raw peer that speaks the sans-IO codec.

The peer sends exactly the bytes a test wants, including broken ones. Most
tests run over a socketpair on trio's autojump clock (timeouts take no wall
time); the unix-socket ones use the real clock.
"""

from __future__ import annotations

import functools
import grp
import logging
import os
import shutil
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from protocols.rpc import (
    CLOSED,
    ERROR_CODES,
    MAX_RESPONSE_FRAME_SIZE,
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
    encode_message,
)
from supervisor import errors
from supervisor.errors import CorralError, NoSuchContainer
from supervisor.rpc_server import (
    SERVER_AGENT,
    Methods,
    peer_credentials,
    serve_rpc,
    serve_unix,
)

pytestmark = pytest.mark.anyio

TIMEOUT_S = 60  # virtual seconds on the autojump clock; a hang fails, it never waits

# --- methods under test -------------------------------------------------------

METHODS = Methods()
generator_closed: list[int] = []


@METHODS.unary("echo")
async def echo(**params: object) -> object:
    return params


@METHODS.unary("sleep")
async def sleep(seconds: float, value: object = None) -> object:
    await trio.sleep(seconds)
    return value


@METHODS.unary("fail")
async def fail(kind: str) -> None:
    if kind == "not-found":
        raise NoSuchContainer("no such container: web")
    if kind == "grouped":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, "not-found")
    raise ValueError("boom")


@METHODS.unary("big")
async def big(size: int) -> str:
    return "x" * size


@METHODS.unary("unencodable")
async def unencodable() -> object:
    return {1, 2}


@METHODS.stream("count")
async def count(n: int | None = None, tag: int = 0) -> AsyncIterator[int]:
    try:
        i = 0
        while n is None or i < n:
            yield i
            i += 1
            await trio.sleep(1)
    finally:
        generator_closed.append(tag)


# --- a raw peer ----------------------------------------------------------------


class Peer:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame_size=MAX_RESPONSE_FRAME_SIZE)

    async def send(self, *messages: object) -> None:
        await self.stream.send_all(b"".join(encode_message(m) for m in messages))  # type: ignore[arg-type]

    async def receive(self) -> object:
        while (message := self.decoder.next_message()) is NEED_DATA:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                # A unix socket closed with our bytes unread reports a reset
                # after its last data instead of EOF: closed either way.
                data = b""
            self.decoder.receive_data(data)
        return message

    async def hello(self) -> None:
        await self.send(ClientHello((1,), "test/1"))
        assert await self.receive() == ServerHello(1, SERVER_AGENT)

    async def expect_farewell(self, code: str) -> Error:
        farewell = await self.receive()
        assert isinstance(farewell, Error) and farewell.id is None and farewell.code == code, farewell
        assert await self.receive() is CLOSED
        return farewell


@asynccontextmanager
async def served(methods: Methods = METHODS, **options: object) -> AsyncIterator[Peer]:
    ours, theirs = trio.socket.socketpair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve_rpc, trio.SocketStream(theirs), methods, **options))
        async with trio.SocketStream(ours) as stream:
            yield Peer(stream)
        # The server ends on its own once we close: the nursery waits for it.


# --- hello ---------------------------------------------------------------------


async def test_hello_answers_the_version() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()


async def test_hello_picks_the_highest_common_version() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(versions={1, 2, 3}) as peer:
            await peer.send(ClientHello((2, 3, 4), "future/1"))
            assert await peer.receive() == ServerHello(3, SERVER_AGENT)


async def test_unsupported_version_is_refused_and_closed() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.send(ClientHello((2, 3), "future/1"))
            farewell = await peer.expect_farewell("UNSUPPORTED_VERSION")
            assert farewell.status == 426
            assert "[2, 3]" in farewell.message and "[1]" in farewell.message


async def test_request_before_hello_is_refused() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.send(Request(1, "echo"))
            await peer.expect_farewell("BAD_REQUEST")


async def test_silent_client_is_dropped_after_the_hello_timeout() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(hello_timeout_s=10) as peer:
            farewell = await peer.expect_farewell("BAD_REQUEST")
            assert "no hello within 10 s" in farewell.message


async def test_rejected_peer_gets_permission_denied() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(peer_ok=lambda stream: False) as peer:
            await peer.send(ClientHello((1,), "test/1"))
            farewell = await peer.expect_farewell("PERMISSION_DENIED")
            assert farewell.status == 403


async def test_peer_check_sees_the_peer_credentials() -> None:
    seen = []

    def peer_ok(stream: trio.SocketStream) -> bool:
        seen.append(peer_credentials(stream.socket))
        return True

    with trio.fail_after(TIMEOUT_S):
        async with served(peer_ok=peer_ok) as peer:
            await peer.hello()
    assert seen == [(os.getpid(), os.geteuid(), os.getegid())]


# --- requests --------------------------------------------------------------------


async def test_unary_call() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "echo", {"a": [1, b"\x00"], "b": None}))
            assert await peer.receive() == Response(1, {"a": [1, b"\x00"], "b": None})


@pytest.mark.parametrize(
    ("request_", "code", "status", "text"),
    [
        (Request(5, "nope"), "UNIMPLEMENTED", 501, "no rpc method 'nope'"),
        (Request(5, "sleep", {"secs": 1}), "BAD_REQUEST", 400, "bad params for sleep"),
        (Request(5, "fail", {"kind": "not-found"}), "NOT_FOUND", 404, "no such container: web"),
        (Request(5, "fail", {"kind": "grouped"}), "NOT_FOUND", 404, "no such container: web"),
        (Request(5, "big", {"size": 2000}), "TOO_LARGE", 413, "answer of big is too large"),
    ],
    ids=["unknown method", "bad params", "corral error", "corral error in a group", "answer too large"],
)
async def test_expected_failures_become_error_frames(request_: Request, code: str, status: int, text: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(max_response_frame_size=1000) as peer:
            await peer.hello()
            await peer.send(request_)
            error = await peer.receive()
            assert isinstance(error, Error) and (error.id, error.code, error.status) == (5, code, status)
            assert text in error.message
            # The connection carries on.
            await peer.send(Request(6, "echo", {"x": 1}))
            assert await peer.receive() == Response(6, {"x": 1})


@pytest.mark.parametrize("method", ["fail", "unencodable"])
async def test_a_buggy_method_answers_internal_and_is_logged(method: str, caplog: pytest.LogCaptureFixture) -> None:
    params = {"kind": "bug"} if method == "fail" else {}
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, method, params), Request(2, "echo"))
            answers = {m.id: m for m in [await peer.receive(), await peer.receive()]}  # in either order
            error = answers[1]
            assert isinstance(error, Error) and (error.code, error.status) == ("INTERNAL", 500)
            assert answers[2] == Response(2, {})
    assert any(r.levelno >= logging.ERROR and method in r.getMessage() for r in caplog.records)


async def test_stream_items_then_end() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "count", {"n": 3}))
            assert [await peer.receive() for _ in range(4)] == [Item(1, 0), Item(1, 1), Item(1, 2), End(1)]


async def test_cancel_stops_a_stream_and_closes_its_generator() -> None:
    generator_closed.clear()
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "count", {"tag": 11}))
            assert [await peer.receive() for _ in range(3)] == [Item(1, 0), Item(1, 1), Item(1, 2)]
            await peer.send(Cancel(1))
            while isinstance(message := await peer.receive(), Item):
                pass  # items already on their way before the cancel
            assert isinstance(message, Error) and (message.id, message.code, message.status) == (1, "CANCELLED", 499)
            assert generator_closed == [11]
            # A cancel for a finished or unknown id is ignored; the id is free again.
            await peer.send(Cancel(1), Cancel(99), Request(1, "echo"))
            assert await peer.receive() == Response(1, {})


async def test_cancel_stops_a_unary_call() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "sleep", {"seconds": 1000}))
            await trio.sleep(1)
            await peer.send(Cancel(1))
            error = await peer.receive()
            assert isinstance(error, Error) and (error.id, error.code) == (1, "CANCELLED")
            assert trio.current_time() < 100


async def test_a_slow_request_does_not_hold_up_others() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "sleep", {"seconds": 30, "value": "slow"}), Request(2, "count", {"n": 2}))
            await peer.send(Request(3, "echo", {"fast": True}))
            first = [await peer.receive() for _ in range(4)]
            assert Response(3, {"fast": True}) in first and End(2) in first
            assert await peer.receive() == Response(1, "slow")


async def test_eof_from_the_client_cancels_its_requests() -> None:
    generator_closed.clear()
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "count", {"tag": 7}))
            assert await peer.receive() == Item(1, 0)
            await peer.stream.send_eof()
            while isinstance(await peer.receive(), Item):
                pass
    assert generator_closed == [7]


async def test_too_many_requests_in_flight_are_unavailable() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(max_in_flight=2) as peer:
            await peer.hello()
            await peer.send(*(Request(i, "sleep", {"seconds": 5, "value": i}) for i in range(3)))
            error = await peer.receive()
            assert isinstance(error, Error) and (error.id, error.code, error.status) == (2, "UNAVAILABLE", 503)
            assert {await peer.receive(), await peer.receive()} == {Response(0, 0), Response(1, 1)}


# --- protocol violations end the connection ------------------------------------------


async def test_duplicate_id_in_flight_ends_the_connection() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(Request(1, "sleep", {"seconds": 5}), Request(1, "echo"))
            farewell = await peer.expect_farewell("BAD_REQUEST")
            assert "request id 1 is already in flight" in farewell.message


@pytest.mark.parametrize("message", [Response(1, None), ClientHello((1,), "again/1"), End(1)])
async def test_frames_a_client_may_not_send(message: object) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.send(message)
            await peer.expect_farewell("BAD_REQUEST")


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x00\x00\x00\x02\xc1\xc1", "BAD_REQUEST"),
        (b"\x00\x00\x00\x00", "BAD_REQUEST"),
        # "GET " read as a length is 1.2 GB: refused from the header alone.
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "TOO_LARGE"),
    ],
    ids=["not msgpack", "empty frame", "http"],
)
async def test_garbage_gets_an_error_and_the_connection_closes(wire: bytes, code: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.stream.send_all(wire)
            await peer.expect_farewell(code)


async def test_oversize_frame_is_refused_from_its_header() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(max_request_frame_size=1024) as peer:
            await peer.hello()
            await peer.stream.send_all(struct.pack(">I", 1025))  # no body ever follows
            farewell = await peer.expect_farewell("TOO_LARGE")
            assert farewell.status == 413 and "1025" in farewell.message


async def test_truncated_frame_then_eof() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served() as peer:
            await peer.hello()
            await peer.stream.send_all(encode_message(Request(1, "echo"))[:9])
            await peer.stream.send_eof()
            farewell = await peer.expect_farewell("BAD_REQUEST")
            assert "middle of a frame" in farewell.message


# --- Methods and errors ----------------------------------------------------------------


def test_methods_refuse_duplicates_and_the_wrong_kind() -> None:
    methods = Methods()
    methods.unary("a")(echo)
    with pytest.raises(ValueError, match="already registered"):
        methods.stream("a")(count)
    with pytest.raises(TypeError, match="async generator"):
        methods.stream("b")(echo)
    with pytest.raises(TypeError, match="async function"):
        methods.unary("c")(count)
    assert methods.names() == ["a"] and "a" in methods


def test_every_corral_error_has_a_known_code_and_its_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, CorralError)]
    assert len(classes) > 3
    for cls in classes:
        assert ERROR_CODES[cls.code] == cls.status_hint, cls
    with pytest.raises(TypeError, match="not in protocols.rpc.ERROR_CODES"):
        type("Bad", (CorralError,), {"code": "NOPE"})


# --- the unix socket (real clock) ---------------------------------------------------------

real_clock = pytest.mark.parametrize("anyio_backend", ["trio"])


def own_group() -> str:
    return grp.getgrgid(os.getegid()).gr_name


async def raw_call(path: Path, request: Request) -> object:
    async with await trio.open_unix_socket(os.fspath(path)) as stream:
        peer = Peer(stream)
        await peer.hello()
        await peer.send(request)
        return await peer.receive()


@real_clock
async def test_unix_socket_mode_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "corral.sock"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(functools.partial(serve_unix, path, METHODS, group=own_group())) == path
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
            assert st.st_gid == os.getegid()
            assert await raw_call(path, Request(1, "echo", {"v": 1})) == Response(1, {"v": 1})
            nursery.cancel_scope.cancel()
    assert not path.exists()


@real_clock
async def test_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "corral.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.fspath(path))  # bound, never listening: what a dead daemon leaves
    stale.close()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, path, METHODS, group=own_group()))
            with pytest.raises(FileExistsError, match="another process"):
                await serve_unix(path, METHODS)
            assert await raw_call(path, Request(1, "echo")) == Response(1, {})
            nursery.cancel_scope.cancel()
    path.write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        await serve_unix(path, METHODS)
    assert path.read_text() == "not a socket"


@real_clock
async def test_missing_group_keeps_the_owner_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "corral.sock"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, path, METHODS, group="corral-no-such-group"))
            assert os.stat(path).st_gid == os.getegid()
            nursery.cancel_scope.cancel()
    assert "group 'corral-no-such-group' does not exist" in caplog.text


@pytest.mark.root
@real_clock
async def test_socket_belongs_to_the_group(tmp_path: Path) -> None:
    path = tmp_path / "corral.sock"
    group = grp.getgrgid(65534).gr_name  # nogroup
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, path, METHODS, group=group))
            assert os.stat(path).st_gid == 65534
            nursery.cancel_scope.cancel()


# The unprivileged peer uses only the stdlib, so it needs no access to the venv.
_NOBODY_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.hex())
"""


def _system_python() -> str:
    # The venv's interpreter may live under a directory nobody cannot search (/root).
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


@pytest.mark.root
@real_clock
async def test_peer_outside_the_group_is_refused_by_its_credentials() -> None:
    # mode 0666 lets anyone connect, so only the SO_PEERCRED check stands in the way.
    with tempfile.TemporaryDirectory(prefix="corral-rpc-") as run_dir:
        os.chmod(run_dir, 0o755)  # nobody must reach the socket; pytest's tmp_path is 0700
        path = Path(run_dir) / "corral.sock"
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(serve_unix, path, METHODS, mode=0o666, group="corral-no-such-group")
                )
                hello = encode_message(ClientHello((1,), "nobody/1")).hex()
                done = await trio.run_process(
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     _system_python(), "-I", "-c", _NOBODY_CLIENT, os.fspath(path), hello],
                    capture_stdout=True,
                )
                # Root on the same socket is still welcome.
                assert await raw_call(path, Request(1, "echo")) == Response(1, {})
                nursery.cancel_scope.cancel()
    decoder = FrameDecoder()
    decoder.receive_data(bytes.fromhex(done.stdout.decode()))
    decoder.receive_data(b"")
    farewell = decoder.next_message()
    assert isinstance(farewell, Error) and (farewell.id, farewell.code) == (None, "PERMISSION_DENIED")
    assert decoder.next_message() is CLOSED
