"""attach and terminals on the real kernel: the CLI driven through a real pseudo-terminal.

Each interactive test opens a pty, starts ``corral`` on its slave as a session
leader with it as controlling terminal (as a shell would), types into the
master and reads the screen until the expected text shows up. Every read has a
deadline; nothing asserts on time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root

DEADLINE_S = 20.0


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """``corral ARGS`` on the slave of a pty we hold the master of."""

    def __init__(self, daemon: Daemon, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        _set_size(slave, rows, cols)

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.process = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", *args],
                                            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                            # Two syscalls, no locks: safe after fork.
                                            preexec_fn=controlling_terminal)  # noqa: PLW1509
        finally:
            os.close(slave)
        self.screen = b""
        self._seen = 0

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, text: bytes, *, deadline_s: float = DEADLINE_S) -> bytes:
        """Read until ``text`` appears after what earlier expects consumed; returns the screen up to it."""
        end = time.monotonic() + deadline_s
        while True:
            at = self.screen.find(text, self._seen)
            if at >= 0:
                upto = self.screen[:at + len(text)]
                self._seen = at + len(text)
                return upto
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} on the screen within {deadline_s}s; screen: {self.screen[-800:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:          # EIO: the CLI closed the terminal (it exited)
                    data = b""
                if not data:
                    raise AssertionError(f"the CLI left before {text!r} appeared; screen: {self.screen[-800:]!r}")
                self.screen += data

    def resize(self, rows: int, cols: int) -> None:
        """What a terminal emulator does: the new size on the pty, SIGWINCH to the program."""
        _set_size(self.master, rows, cols)
        self.process.send_signal(signal.SIGWINCH)

    def wait(self) -> int:
        """The CLI's exit status (bounded); the rest of its output is drained meanwhile."""
        end = time.monotonic() + DEADLINE_S
        while self.process.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.process.wait(timeout=5)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def open_terminal(daemon: Daemon, *args: str, **size) -> Terminal:
        t = Terminal(daemon, *args, **size)
        opened.append(t)
        return t
    yield open_terminal
    for t in opened:
        t.close()


def _wait_for_size(t: Terminal, size: bytes) -> None:
    """The resize is an RPC the CLI makes on SIGWINCH: ask ``stty size`` until the shell sees it (bounded)."""
    for _ in range(10):
        t.send(b"stty size\r")
        try:
            t.expect(size, deadline_s=2)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the terminal never became {size!r}; screen: {t.screen[-800:]!r}")


def _running(daemon: Daemon, name: str) -> bool:
    return daemon.inspect(name)["State"]["Running"]


def test_run_it_types_resizes_detaches_reattaches_and_exits_with_the_shells_status(daemon: Daemon, terminals) -> None:
    t = terminals(daemon, "run", "-it", "--name", "shell", "busybox", "sh", rows=31, cols=101)
    t.expect(b"# ")
    t.send(b"echo hi-$((1+2))\r")
    t.expect(b"hi-3")                     # the shell's answer, not the echo of what we typed
    t.send(b"stty size; [ -t 0 ] && echo is-a-tty\r")
    t.expect(b"31 101")                   # the size at start (ConsoleSize at create)
    t.expect(b"is-a-tty")
    t.resize(42, 123)
    _wait_for_size(t, b"42 123")
    # ^C reaches the container through its terminal (no signal to the CLI): the shell lives on.
    t.send(b"sleep 100\r")
    wait_for(lambda: "sleep 100" in daemon.ok("exec", "shell", "ps", "-o", "args"), timeout=DEADLINE_S,
             what="sleep to run in the foreground")
    t.send(b"\x03")
    t.send(b"echo after-$((5*5))\r")
    t.expect(b"after-25")
    t.send(b"\x10\x11")                   # ctrl-p ctrl-q
    t.expect(b"read escape sequence")
    assert t.wait() == 0
    assert _running(daemon, "shell")
    assert "shell" in daemon.ok("ps")
    # Back in: the same shell, then its exit status is the CLI's.
    t2 = terminals(daemon, "attach", "shell")
    t2.send(b"echo back-$((2+2))\r")
    t2.expect(b"back-4")
    t2.send(b"exit 3\r")
    assert t2.wait() == 3
    assert daemon.inspect("shell")["State"]["ExitCode"] == 3
    # A terminal's output is logged as stdout (Docker's json-file does the same).
    logs = daemon.data_root / "containers" / daemon.inspect("shell")["Id"] / "container-json.log"
    entries = [json.loads(line) for line in logs.read_text().splitlines()]
    assert {e["stream"] for e in entries} == {"stdout"}
    assert "hi-3" in "".join(e["log"] for e in entries)


def test_run_it_exit_status_and_custom_detach_keys(daemon: Daemon, terminals) -> None:
    t = terminals(daemon, "run", "-it", "--detach-keys", "ctrl-a,x", "--name", "keys", "busybox", "sh")
    t.expect(b"# ")
    t.send(b"\x10\x11echo still-$((3+4))\r")   # the default keys mean nothing now: they reach the shell
    t.expect(b"still-7")
    t.send(b"\x01")                             # the first key alone: held back ...
    t.send(b"x")                                # ... then the sequence is complete
    t.expect(b"read escape sequence")
    assert t.wait() == 0
    assert _running(daemon, "keys")
    t2 = terminals(daemon, "attach", "--detach-keys", "ctrl-a,x", "keys")
    t2.send(b"\x01y\r")                         # a broken sequence goes through as typed
    t2.send(b"echo ok-$((1+1)); exit 5\r")
    t2.expect(b"ok-2")
    assert t2.wait() == 5
    out = daemon.cli("run", "-it", "--detach-keys", "ctrl-ctrl", "busybox", "true")
    assert out.returncode == 125 and "detach-keys" in out.stderr


def test_exec_it_gets_its_own_terminal(daemon: Daemon, terminals) -> None:
    daemon.ok("run", "-d", "--name", "host", "busybox", "sleep", "1000")
    t = terminals(daemon, "exec", "-it", "host", "sh", rows=20, cols=70)
    t.expect(b"# ")
    t.send(b"stty size; echo pid-$$\r")
    t.expect(b"20 70")
    t.expect(b"pid-")
    t.resize(25, 90)
    _wait_for_size(t, b"25 90")
    t.send(b"exit 6\r")
    assert t.wait() == 6
    assert _running(daemon, "host")            # the container is unaffected
    execs = [e for e in daemon.events("--filter", "container=host") if e["action"] == "exec_die"]
    assert execs and execs[-1]["attributes"]["exitCode"] == "6"


def test_tty_names_the_terminal_inside_the_container(daemon: Daemon, terminals) -> None:
    # Docker's terminals are of the container's own devpts: `tty` prints /dev/pts/0 there.
    t = terminals(daemon, "run", "-it", "--name", "named", "busybox", "sh", rows=30, cols=100)
    t.expect(b"# ")
    t.send(b'echo "tty=$(tty) pts=$(ls /dev/pts | tr \'\\n\' ,)"; stty size\r')
    t.expect(b"tty=/dev/pts/0 pts=0,ptmx,")
    t.expect(b"30 100")
    t.resize(33, 111)
    _wait_for_size(t, b"33 111")
    # An exec beside it: the next terminal of the same devpts.
    t2 = terminals(daemon, "exec", "-it", "named", "sh", rows=20, cols=70)
    t2.expect(b"# ")
    t2.send(b'echo "tty=$(tty)"; stty size\r')
    t2.expect(b"tty=/dev/pts/1")
    t2.expect(b"20 70")
    t2.resize(21, 71)
    _wait_for_size(t2, b"21 71")
    t2.send(b"exit 4\r")
    assert t2.wait() == 4
    t.send(b"exit 0\r")
    assert t.wait() == 0
    # exec -it into a container started without a terminal: the first of its devpts.
    daemon.ok("run", "-d", "--name", "plain", "busybox", "sleep", "1000")
    t3 = terminals(daemon, "exec", "-it", "plain", "sh")
    t3.expect(b"# ")
    t3.send(b'echo "tty=$(tty)"; exit 0\r')
    t3.expect(b"tty=/dev/pts/0")
    assert t3.wait() == 0
    # Without -i the CLI's output is a pipe, the container's is still a terminal.
    assert daemon.ok("run", "--rm", "-t", "busybox", "tty").strip() == "/dev/pts/0"
    assert daemon.ok("exec", "-t", "plain", "tty").strip() == "/dev/pts/0"


def test_dev_console_is_the_containers_terminal(daemon: Daemon) -> None:
    # As runc binds it: what is written to /dev/console reaches the container's terminal.
    script = 'stat -c "%t:%T" /dev/console /dev/pts/0; echo to-the-console > /dev/console'
    out = daemon.ok("run", "--rm", "-t", "busybox", "sh", "-c", script).replace("\r\n", "\n").splitlines()
    assert out[0] == out[1] and out[0].startswith("88:"), out      # 136 (0x88): a devpts terminal
    assert out[2] == "to-the-console"
    # Without a terminal there is no console to give it.
    assert daemon.cli("run", "--rm", "busybox", "test", "-e", "/dev/console").returncode == 1


def test_run_i_forwards_piped_stdin(daemon: Daemon) -> None:
    base = [*corral_command(), "-H", f"unix://{daemon.socket}"]
    done = subprocess.run([*base, "run", "-i", "--rm", "busybox", "cat"], input=b"data\n", capture_output=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"data\n"), done.stderr
    # More than a pipe holds, in order, then EOF (StdinOnce): wc ends and counts every byte.
    blob = bytes(range(256)) * 2000
    done = subprocess.run([*base, "run", "-i", "--rm", "busybox", "sh", "-c", "md5sum; exit 9"], input=blob,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 9, done.stderr
    assert done.stdout.split()[0].decode() == hashlib.md5(blob).hexdigest()
    # Without -i the container's stdin is empty, whatever ours holds.
    done = subprocess.run([*base, "run", "--rm", "busybox", "wc", "-c"], input=b"ignored", capture_output=True,
                          timeout=60, check=False)
    assert done.stdout.split() == [b"0"]


def test_start_a_streams_output_and_returns_the_status(daemon: Daemon) -> None:
    daemon.ok("create", "--name", "once", "busybox", "sh", "-c", "echo out; echo err >&2; exit 4")
    out = daemon.cli("start", "-a", "once")
    assert (out.returncode, out.stdout, out.stderr) == (4, "out\n", "err\n")
    # start -ai: the container's stdin is ours for this run.
    daemon.ok("create", "-i", "--name", "reader", "busybox", "sh", "-c", "read line; echo got-$line")
    done = subprocess.run([*corral_command(), "-H", f"unix://{daemon.socket}", "start", "-ai", "reader"],
                          input=b"abc\n", capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"got-abc\n"), done.stderr


def test_attach_to_a_missing_or_stopped_container_is_an_error(daemon: Daemon) -> None:
    out = daemon.cli("attach", "nope")
    assert out.returncode == 1 and "No such container: nope" in out.stderr
    daemon.ok("create", "--name", "idle", "busybox", "true")
    out = daemon.cli("attach", "idle")
    assert out.returncode == 1 and "You cannot attach to a stopped container, start it first" in out.stderr
    daemon.ok("run", "-d", "--name", "napping", "busybox", "sleep", "1000")
    daemon.ok("pause", "napping")
    out = daemon.cli("attach", "napping")
    assert out.returncode == 1 and "paused" in out.stderr
    daemon.ok("unpause", "napping")
    assert _running(daemon, "napping")


def test_attach_proxies_signals_without_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("run", "-d", "--name", "trapper", "busybox", "sh", "-c",
              "trap 'echo got-term; exit 7' TERM; while true; do echo tick; sleep 0.1; done")
    proc = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", "attach", "--no-stdin", "trapper"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        seen = b""
        end = time.monotonic() + DEADLINE_S
        while b"tick" not in seen:               # output flows: the CLI has its signal handlers
            assert time.monotonic() < end, seen
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                seen += os.read(proc.stdout.fileno(), 4096)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 7, err
    assert b"got-term" in seen + out
    wait_for(lambda: not _running(daemon, "trapper"), timeout=10, what="the container to stop")
