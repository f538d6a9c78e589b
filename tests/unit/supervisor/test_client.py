"""supervisor.client against the real server: over a socketpair on trio's autojump
clock, over a unix socket with the real clock, and once from asyncio."""

from __future__ import annotations

import functools
import grp
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trio

from protocols.errors import LocalProtocolError
from protocols.rpc import (
    CLOSED,
    NEED_DATA,
    ClientHello,
    Error,
    FrameDecoder,
    encode_message,
)
from supervisor.client import (
    Client,
    ConnectionLost,
    RpcError,
    StreamOverflow,
    connect,
    connect_stream,
)
from supervisor.errors import CorralError, NoSuchContainer, StartFailed
from supervisor.rpc_server import SERVER_AGENT, Methods, serve_rpc, serve_unix

pytestmark = pytest.mark.anyio

TIMEOUT_S = 120  # virtual seconds on the autojump clock

METHODS = Methods()
# tag -> set when that call or stream on the server has ended (finally ran)
ended: dict[str, threading.Event] = {}


def ended_event(tag: str) -> threading.Event:
    # threading.Event: the asyncio test's server runs in another thread.
    return ended.setdefault(tag, threading.Event())


@METHODS.unary("echo")
async def echo(**params: object) -> object:
    return params


@METHODS.unary("sleep")
async def sleep(seconds: float, value: object = None, tag: str = "") -> object:
    try:
        await trio.sleep(seconds)
        return value
    finally:
        ended_event(tag).set()


@METHODS.unary("fail")
async def fail(id: str) -> None:
    raise NoSuchContainer(f"no such container: {id}")


@METHODS.unary("start")
async def start(id: str) -> None:
    raise StartFailed(f'exec: "nope" in {id}: not found', exit_code=127)


@METHODS.stream("count")
async def count(n: int | None = None, tag: str = "", interval: float = 1) -> AsyncIterator[int]:
    try:
        i = 0
        while n is None or i < n:
            yield i
            i += 1
            await trio.sleep(interval)
    finally:
        ended_event(tag).set()


async def until_set(event: threading.Event) -> None:
    while not event.is_set():
        await anyio.sleep(0.01)


@asynccontextmanager
async def over_socketpair(server_options: dict | None = None, **client_options: object) -> AsyncIterator[
    tuple[Client, trio.CancelScope]
]:
    """A trio server and an anyio client on two ends of a socketpair; yields the server's scope too."""
    ours, theirs = socket.socketpair()
    async with trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()

        async def server() -> None:
            with server_scope:
                await serve_rpc(trio.SocketStream(trio.socket.from_stdlib_socket(theirs)), METHODS, **(server_options or {}))

        nursery.start_soon(server)
        stream = await anyio.abc.UNIXSocketStream.from_socket(ours)
        async with connect_stream(stream, **client_options) as client:
            yield client, server_scope


# --- calls -----------------------------------------------------------------------


async def test_call_returns_the_result() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            assert (client.server, client.version) == (SERVER_AGENT, 1)
            assert await client.call("echo", a=1, b=[b"\x00", None]) == {"a": 1, "b": [b"\x00", None]}
            assert await client.call("sleep", seconds=3, value="done") == "done"


async def test_errors_raise_rpc_error() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            with pytest.raises(RpcError) as info:
                await client.call("fail", id="web")
            assert (info.value.code, info.value.status, str(info.value)) == ("NOT_FOUND", 404, "no such container: web")
            assert isinstance(info.value, CorralError) and info.value.status_hint == 404
            with pytest.raises(RpcError, match="no rpc method 'nope'") as info:
                await client.call("nope")
            assert info.value.code == "UNIMPLEMENTED"
            with pytest.raises(RpcError, match="bad params for fail") as info:
                await client.call("fail", name="web")
            assert info.value.code == "BAD_REQUEST"
            with pytest.raises(RpcError) as info:
                await client.call("start", id="web")
            assert (info.value.code, info.value.details) == ("INTERNAL", {"exit_code": 127})


async def test_fifty_concurrent_calls_interleave() -> None:
    finished: list[int] = []

    async def one(i: int) -> None:
        # Later calls sleep less, so answers come back in the reverse order.
        assert await client.call("sleep", seconds=50 - i, value=i) == i
        finished.append(i)

    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            async with anyio.create_task_group() as tasks:
                for i in range(50):
                    tasks.start_soon(one, i)
            assert finished == list(reversed(range(50)))
            assert trio.current_time() < 60  # concurrent: 50 s in all, not 1275


async def test_a_cancelled_call_cancels_the_request() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            with anyio.move_on_after(5):
                await client.call("sleep", seconds=1000, tag="cancelled-call")
            await until_set(ended_event("cancelled-call"))
            assert trio.current_time() < 100
            assert await client.call("echo") == {}


async def test_params_over_the_request_limit_are_refused_here() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair(max_request_frame_size=200) as (client, _):
            with pytest.raises(LocalProtocolError, match="exceeds limit of 200"):
                await client.call("echo", blob=b"x" * 300)
            assert await client.call("echo", ok=True) == {"ok": True}


# --- streams -------------------------------------------------------------------------


async def test_stream_yields_items_then_ends() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _), client.stream("count", n=4) as items:
            assert [item async for item in items] == [0, 1, 2, 3]


async def test_leaving_a_stream_early_cancels_it() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            async with client.stream("count", tag="left-early") as items:
                async for item in items:
                    if item == 2:
                        break
            await until_set(ended_event("left-early"))
            assert await client.call("echo", still="ok") == {"still": "ok"}


async def test_a_stream_error_is_raised_by_the_iteration() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _), client.stream("nope") as items:
            with pytest.raises(RpcError, match="no rpc method"):
                async for _ in items:
                    pass


async def test_a_slow_consumer_overflows_instead_of_stalling_the_connection() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair(max_stream_buffer=2) as (client, _):
            async with client.stream("count", tag="overflowed") as items:
                await trio.sleep(10)  # ten items arrive meanwhile
                assert await client.call("echo", x=1) == {"x": 1}  # the connection is not stalled
                received = []
                with pytest.raises(StreamOverflow, match="fell 2 items behind"):
                    async for item in items:
                        received.append(item)
                assert received == [0, 1]
            await until_set(ended_event("overflowed"))


async def test_unary_and_streaming_calls_cannot_be_mixed_up() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, _):
            with pytest.raises(RpcError, match="count streams; use Client.stream"):
                await client.call("count", tag="called")
            await until_set(ended_event("called"))
            async with client.stream("echo") as items:
                with pytest.raises(RpcError, match="echo is a unary method"):
                    async for _ in items:
                        pass


# --- the connection ----------------------------------------------------------------------


async def test_losing_the_connection_fails_every_waiter() -> None:
    outcomes: list[BaseException] = []

    async def waiter() -> None:
        try:
            await client.call("sleep", seconds=1000)
        except ConnectionLost as exc:
            outcomes.append(exc)

    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair() as (client, server):
            async with anyio.create_task_group() as tasks:
                for _ in range(3):
                    tasks.start_soon(waiter)
                await trio.sleep(1)
                server.cancel()  # the daemon goes away with three calls in flight
            assert len(outcomes) == 3 and all("closed the connection" in str(e) for e in outcomes)
            with pytest.raises(ConnectionLost):
                await client.call("echo")


async def test_the_daemons_last_word_is_attached() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with over_socketpair({"max_request_frame_size": 100}) as (client, _):
            with pytest.raises(ConnectionLost) as info:
                await client.call("echo", blob="x" * 200)
            assert info.value.error is not None and info.value.error.code == "TOO_LARGE"


async def test_unsupported_version_raises_at_connect() -> None:
    ours, theirs = socket.socketpair()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc, trio.SocketStream(trio.socket.from_stdlib_socket(theirs)), METHODS)
            with pytest.raises(RpcError) as info:
                async with connect_stream(await anyio.abc.UNIXSocketStream.from_socket(ours), versions=(2,)):
                    pass
    assert info.value.code == "UNSUPPORTED_VERSION" and info.value.status == 426


# --- over a unix socket, real clock -------------------------------------------------------

real_clock = pytest.mark.parametrize("anyio_backend", ["trio"])


def own_group() -> str:
    return grp.getgrgid(os.getegid()).gr_name


@real_clock
async def test_a_garbage_client_is_closed_while_another_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "corral.sock"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, path, METHODS, group=own_group()))
            async with connect(path) as client:
                async with client.stream("count", n=3, interval=0.01) as items:
                    assert await items.__anext__() == 0
                    # Meanwhile a second connection sends junk after its hello.
                    async with await trio.open_unix_socket(os.fspath(path)) as junk:
                        await junk.send_all(encode_message(ClientHello((1,), "junk/1")) + b"\x00\x00\x00\x01\xc1")
                        decoder = FrameDecoder()
                        frames = []
                        while (message := decoder.next_message()) is not CLOSED:
                            if message is NEED_DATA:
                                decoder.receive_data(await junk.receive_some(65536))
                            else:
                                frames.append(message)
                        assert [type(f).__name__ for f in frames] == ["ServerHello", "Error"]
                        assert isinstance(frames[1], Error) and frames[1].code == "BAD_REQUEST"
                    assert [item async for item in items] == [1, 2]
                assert await client.call("echo", after="junk") == {"after": "junk"}
            nursery.cancel_scope.cancel()


@real_clock
async def test_connect_raises_plain_exceptions_not_groups(tmp_path: Path) -> None:
    path = tmp_path / "corral.sock"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, path, METHODS, group=own_group()))
            with pytest.raises(RpcError, match="no such container: db"):
                async with connect(path) as client:
                    await client.call("fail", id="db")
            nursery.cancel_scope.cancel()
    with pytest.raises(FileNotFoundError):
        async with connect(path):
            pass


# --- from asyncio ----------------------------------------------------------------------------


@pytest.fixture
def trio_daemon(tmp_path: Path) -> Iterator[Path]:
    """serve_unix in a trio run of its own thread, for a client on another event loop."""
    path = tmp_path / "corral.sock"
    ready = threading.Event()
    run: dict[str, object] = {}

    async def main() -> None:
        run["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            run["scope"] = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(serve_unix, path, METHODS, group=own_group()))
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), name="trio-daemon")
    thread.start()
    try:
        assert ready.wait(10), "the trio daemon did not start"
        yield path
    finally:
        if "scope" in run:
            trio.from_thread.run_sync(run["scope"].cancel, trio_token=run["token"])  # type: ignore[union-attr]
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_client_works_from_asyncio(trio_daemon: Path) -> None:
    with anyio.fail_after(20):
        async with connect(trio_daemon) as client:
            assert await client.call("echo", loop="asyncio") == {"loop": "asyncio"}
            with pytest.raises(RpcError) as info:
                await client.call("fail", id="web")
            assert info.value.code == "NOT_FOUND"
            results = {}

            async def one(i: int) -> None:
                results[i] = await client.call("sleep", seconds=0.01 * (10 - i), value=i)

            async with anyio.create_task_group() as tasks:
                for i in range(10):
                    tasks.start_soon(one, i)
            assert results == {i: i for i in range(10)}
            async with client.stream("count", tag="asyncio-stream", interval=0.01) as items:
                async for item in items:
                    if item == 1:
                        break
            await until_set(ended_event("asyncio-stream"))
