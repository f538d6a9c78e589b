"""A daemon per test: its own data root, exec root and cgroup parent, driven through the CLI.

Shared by tests/integration/test_daemon*.py: import ``Daemon`` and the ``daemon``
fixture. The fixture force-removes every container and stops the daemon
(SIGTERM, exit 0 expected) whatever the test did; the data root lives in
``tmp_path``, so volumes go with it.
"""

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

from .conftest import corral_command, wait_for

TIMEOUT = 60


class Daemon:
    def __init__(self, tmp: Path, cgroup_parent: str, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.data_root = tmp / "data"
        self.exec_root = tmp / "run"
        self.socket = self.exec_root / "corral.sock"
        self.cgroup_parent = cgroup_parent
        self.log = tmp / "daemon.log"
        self.process: subprocess.Popen | None = None

    def start(self, *, env: dict[str, str] | None = None) -> None:
        """Start the daemon and wait for its socket; ``env``: variables added to ours for this run."""
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [*corral_command(), "daemon", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--cgroup-parent", self.cgroup_parent, "--log-level", "debug",
                 # Many test daemons run at once: none takes the default metrics port.
                 *(() if any(a.startswith("--metrics-addr") for a in self.extra_args) else ("--metrics-addr", "none")),
                 *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **(env or {})})
        wait_for(lambda: self.socket.exists() and self.cli("ps").returncode == 0 or self._died(),
                 timeout=30, what="the daemon's socket")
        assert self.process.poll() is None, self.log.read_text()

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=TIMEOUT)
        self.process = None
        return code

    def close(self) -> None:
        """Whatever the test did: every container goes, then the daemon (which must exit 0), then
        its keeper if one is left (a test that killed the daemon leaves it holding containers)."""
        try:
            if self.process is None:
                return
            for cid in self.cli("ps", "-aq", "--no-trunc").stdout.split():
                self.cli("rm", "-f", cid)
            assert self.stop() == 0, self.log.read_text()[-3000:]
        finally:
            self.stop_keeper()

    def keeper_pid(self) -> int | None:
        """The pid of the keeper serving this exec root (SO_PEERCRED of its socket), or None."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(self.exec_root / "keeper.sock"))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        finally:
            sock.close()
        return struct.unpack("3i", creds)[0]

    def stop_keeper(self) -> None:
        pid = self.keeper_pid()
        if pid is None:
            return
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], TIMEOUT)       # readable once it is gone
        finally:
            os.close(pidfd)

    def cli(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([*corral_command(), "-H", f"unix://{self.socket}", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def ok(self, *args: str) -> str:
        out = self.cli(*args)
        assert out.returncode == 0, (args, out.stdout, out.stderr, self.log.read_text()[-3000:])
        return out.stdout

    def inspect(self, ref: str) -> dict:
        return json.loads(self.ok("inspect", ref))[0]

    def json_lines(self, *args: str) -> list[dict]:
        """A listing with ``--format json``: one object per line."""
        return [json.loads(line) for line in self.ok(*args, "--format", "json").splitlines() if line.strip()]

    def events(self, *filters: str, quiet_s: float = 1.0) -> list[dict]:
        """Every event so far (a stream from seq 0), read for ``quiet_s`` then stopped."""
        proc = subprocess.Popen([*corral_command(), "-H", f"unix://{self.socket}", "events", "--since", "0",
                                 "--format", "json", *filters], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(quiet_s)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=TIMEOUT)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(name="daemon")
def daemon_fixture(tmp_path: Path, cgroup_parent: str):
    d = Daemon(tmp_path, cgroup_parent)
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        yield d
    finally:
        d.close()
