"""The daemon's attach plumbing with real ptys and pipes (no root): fan-out, stdin, window size, cut-off."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import trio

from protocols.jsonlog import LogConfig
from runtime.terminal import window_size
from supervisor import attach
from supervisor.attach import MAX_BEHIND_BYTES, ContainerStreams, ProcessInput


def test_a_terminal_run_fans_out_logs_as_stdout_and_takes_keys_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "container-json.log"
    got: list[tuple[str, bytes]] = []

    async def main() -> None:
        streams = ContainerStreams()
        streams.configure({"OpenStdin": True}, {"process": {"terminal": True, "consoleSize": {"height": 7, "width": 9}}})
        sub = streams.subscribe(frozenset({"stdout", "stderr"}))
        capture, stdio, theirs = streams.open_run(str(path), LogConfig())
        slave = os.dup(stdio[0])                        # "the container"
        for fd in theirs:
            os.close(fd)
        assert window_size(slave) == (7, 9)             # the size asked for at create
        streams.input.resize(30, 100)
        assert window_size(slave) == (30, 100)
        await streams.input.write(b"typed\n")
        assert os.read(slave, 100) == b"typed\n"        # through the line discipline
        os.write(slave, b"hello\n")
        os.close(slave)                                 # the master reads EIO now: EOF
        with trio.fail_after(10):
            await capture.wait_drained()
        streams.run_ended()
        async for item in sub.receive:
            got.append(item)

    trio.run(main)
    screen = b"".join(data for _, data in got)
    assert b"typed" in screen and b"hello" in screen                  # echo, then output
    assert {stream for stream, _ in got} == {"stdout"}
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert {d["stream"] for d in docs} == {"stdout"}
    assert "hello\r\n" in "".join(d["log"] for d in docs)             # the pty's ONLCR, as Docker logs it


def test_without_a_devpts_instance_the_terminal_is_the_hosts(monkeypatch) -> None:
    # runtime/terminal.py rule 3: no fsmount (Linux < 5.2): a working terminal all the same.
    def no_mount_api(options):
        raise OSError(errno.ENOSYS, "fsopen devpts: Function not implemented")
    monkeypatch.setattr(attach, "open_devpts", no_mount_api)
    mounts = [{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance"]}]

    async def main() -> None:
        streams = ContainerStreams()
        streams.configure({}, {"process": {"terminal": True}, "mounts": mounts})
        assert streams.devpts_options == ("newinstance",)
        capture, stdio, theirs = streams.open_run(None, LogConfig())
        assert stdio[0] == stdio[1] == stdio[2] and os.isatty(stdio[0]) and theirs == [stdio[0]]
        for fd in theirs:
            os.close(fd)
        with trio.fail_after(10):
            await capture.wait_drained()
        streams.run_ended()

    trio.run(main)


def test_a_client_that_falls_behind_is_cut_off_and_the_others_are_not() -> None:
    async def main() -> None:
        streams = ContainerStreams()
        slow = streams.subscribe(frozenset({"stdout"}))
        fast = streams.subscribe(frozenset({"stdout"}))
        chunk = b"x" * (1 << 20)
        for _ in range(MAX_BEHIND_BYTES // len(chunk) + 1):
            streams._publish("stdout", chunk)
            fast.behind -= len(fast.receive.receive_nowait()[1])      # what the RPC stream does per item
        assert slow.overflowed and not fast.overflowed
        assert streams.attached == 1
        streams._publish("stderr", b"not wanted")                     # a stream it did not ask for
        streams.run_ended()
        assert [item async for item in fast.receive] == []

    trio.run(main)


def test_stdin_once_closes_the_pipe_at_the_clients_eof() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stdin = ProcessInput(w, tty=False, stdin=True, stdin_once=True)
        big = bytes(range(256)) * 1024                                # more than a pipe holds: backpressure
        received = bytearray()

        async def reader() -> None:
            while True:
                await trio.lowlevel.wait_readable(r)
                data = os.read(r, 65536)
                if not data:
                    return
                received.extend(data)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await stdin.write(big)
                stdin.end_of_input()                                  # EOF for the process
        assert bytes(received) == big and stdin.closed
        await stdin.write(b"dropped")                                 # after EOF: nothing, no error
        os.close(r)

    trio.run(main)


def test_without_stdin_once_a_clients_eof_leaves_stdin_open() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stdin = ProcessInput(w, tty=False, stdin=True, stdin_once=False)
        stdin.end_of_input()
        await stdin.write(b"still")
        assert os.read(r, 10) == b"still"
        stdin.close()
        os.close(r)

    trio.run(main)
