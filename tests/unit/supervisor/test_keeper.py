"""The keeper process for real (no root needed): it holds fds across "daemon" connections,
copies held output into the json-file log only while no daemon is connected, hands
everything back on hello, and exits once it holds nothing and its daemon left."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from runtime.spawn import ExitStatus, reaped_status
from supervisor.keeper import KeeperClient, KeeperError


def _wait(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _keeper_pid(path: Path) -> int | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(str(path))
        return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    except OSError:
        return None
    finally:
        sock.close()


@pytest.fixture
def keeper_path(tmp_path: Path):
    path = tmp_path / "keeper.sock"
    yield path
    pid = _keeper_pid(path)          # a test that failed half-way: stop the keeper it started
    if pid is not None:
        pidfd = os.pidfd_open(pid)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], 10)
        os.close(pidfd)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_output_is_logged_only_while_no_daemon_is_connected(tmp_path: Path, keeper_path: Path) -> None:
    log_path = tmp_path / "c.log"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sleeper = subprocess.Popen(["sleep", "1000"])
    pidfd = os.pidfd_open(sleeper.pid)
    try:
        client = KeeperClient.open(keeper_path)
        assert client.hello() == []
        client.hold("c1", sleeper.pid, {"pidfd": pidfd, "stdout": out_r, "stderr": err_r},
                    {"path": str(log_path), "max_size": 0, "max_files": 1})
        os.write(out_w, b"while connected\n")
        time.sleep(0.2)
        assert not log_path.exists()            # a daemon is there: the keeper does not read (rule 3)
        client.close()                          # the daemon leaves
        _wait(lambda: len(_lines(log_path)) == 1, what="the keeper to log what was waiting")
        os.write(out_w, b"one\n")
        os.write(err_w, b"two\n")
        _wait(lambda: len(_lines(log_path)) == 3, what="the keeper to log while no daemon is there")
        entries = _lines(log_path)
        assert [(e["stream"], e["log"]) for e in entries] == [
            ("stdout", "while connected\n"), ("stdout", "one\n"), ("stderr", "two\n")]

        again = KeeperClient.open(keeper_path)  # the same keeper answers the next daemon
        held = again.hello()
        assert [(h.id, h.pid, sorted(h.fds), h.copied) for h in held] == [
            ("c1", sleeper.pid, ["pidfd", "stderr", "stdout"], len(b"while connected\none\ntwo\n"))]
        fds = held[0].fds
        os.write(out_w, b"for the daemon\n")
        assert os.read(fds["stdout"], 100) == b"for the daemon\n"   # stopped copying: the pipe is ours again
        assert os.read(fds["stdout"], 0) == b""
        sleeper.kill()
        sleeper.wait()
        assert reaped_status(fds["pidfd"]) == ExitStatus(signal=signal.SIGKILL)   # its pidfd still tells
        for fd in fds.values():
            os.close(fd)
        again.release("c1")
        again.close()
        _wait(lambda: _keeper_pid(keeper_path) is None, what="the keeper to exit holding nothing")
        assert not keeper_path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        for fd in (pidfd, out_r, out_w, err_r, err_w):
            os.close(fd)


def test_a_stream_that_ends_while_no_daemon_is_there_is_not_handed_back(tmp_path: Path, keeper_path: Path) -> None:
    log_path = tmp_path / "c.log"
    out_r, out_w = os.pipe()
    try:
        client = KeeperClient.open(keeper_path)
        client.hello()
        client.hold("c2", os.getpid(), {"stdout": out_r}, {"path": str(log_path), "max_size": 0, "max_files": 1})
        client.close()
        os.write(out_w, b"partial line")
        os.close(out_w)
        out_w = -1
        _wait(lambda: _lines(log_path), what="the open line at EOF")
        assert _lines(log_path)[0]["log"] == "partial line"
        again = KeeperClient.open(keeper_path)
        held = again.hello()
        assert [(h.id, h.fds) for h in held] == [("c2", {})]       # EOF: nothing left to hand back
        again.release("c2")
        again.close()
    finally:
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)


def test_a_bad_request_gets_an_error_and_the_keeper_goes_on(keeper_path: Path) -> None:
    client = KeeperClient.open(keeper_path)
    client.hello()
    with pytest.raises(KeeperError, match="bad request"):
        client._call({"op": "nonsense"})
    r, w = os.pipe()
    try:
        with pytest.raises(KeeperError, match="do not match"):
            client._call({"op": "hold", "id": "x", "pid": 1, "fds": ["stdout", "stderr"], "log": None}, [r])
    finally:
        os.close(r)
        os.close(w)
    assert client.hello() == []
    client.close()


def test_reaped_status_reads_the_exit_of_a_process_someone_else_reaped() -> None:
    child = subprocess.Popen(["sh", "-c", "exit 42"])
    pidfd = os.pidfd_open(child.pid)
    try:
        child.wait()                                          # reaped by "someone else": us, via Popen
        assert reaped_status(pidfd) == ExitStatus(code=42)
    finally:
        os.close(pidfd)
    running = subprocess.Popen(["sleep", "1000"])
    pidfd = os.pidfd_open(running.pid)
    try:
        assert reaped_status(pidfd) is None                  # still running
        running.kill()
        select.select([pidfd], [], [], 10)
        assert reaped_status(pidfd) is None                  # a zombie: not reaped yet
        running.wait()
        assert reaped_status(pidfd) == ExitStatus(signal=signal.SIGKILL)
    finally:
        os.close(pidfd)
