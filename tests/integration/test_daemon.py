"""`corral daemon` and the `corral` CLI on the real kernel: each test has its own daemon,
data root, exec root and cgroup parent, removed whatever happens."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root
TIMEOUT = 60


class Daemon:
    def __init__(self, tmp: Path, cgroup_parent: str) -> None:
        self.data_root = tmp / "data"
        self.exec_root = tmp / "run"
        self.socket = self.exec_root / "corral.sock"
        self.cgroup_parent = cgroup_parent
        self.log = tmp / "daemon.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [*corral_command(), "daemon", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--cgroup-parent", self.cgroup_parent, "--log-level", "debug"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
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

    def cli(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([*corral_command(), "-H", f"unix://{self.socket}", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> str:
        out = self.cli(*args)
        assert out.returncode == 0, (args, out.stdout, out.stderr, self.log.read_text()[-3000:])
        return out.stdout

    def inspect(self, ref: str) -> dict:
        return json.loads(self.ok("inspect", ref))[0]


@pytest.fixture
def daemon(tmp_path: Path, cgroup_parent: str):
    d = Daemon(tmp_path, cgroup_parent)
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        yield d
    finally:
        if d.process is not None:
            # Whatever the test did: containers go, then the daemon.
            for cid in d.cli("ps", "-aq", "--no-trunc").stdout.split():
                d.cli("rm", "-f", cid)
            assert d.stop() == 0, d.log.read_text()[-3000:]


def test_images_and_foreground_run(daemon: Daemon) -> None:
    assert "busybox" in daemon.ok("images") and "latest" in daemon.ok("images")
    out = daemon.cli("run", "--rm", "busybox", "sh", "-c", "echo hello; echo $HOSTNAME | wc -c; exit 3")
    assert (out.returncode, out.stdout) == (3, "hello\n13\n")
    assert daemon.ok("ps", "-aq") == ""                      # --rm removed it


def test_command_not_found_is_127(daemon: Daemon) -> None:
    out = daemon.cli("run", "--rm", "busybox", "no-such-command")
    assert out.returncode == 127 and "executable file not found" in out.stderr


def test_detached_ps_stop_and_exit_status(daemon: Daemon) -> None:
    cid = daemon.ok("run", "-d", "--name", "sleeper", "busybox", "sleep", "100").strip()
    assert len(cid) == 64
    ps = daemon.ok("ps")
    assert "sleeper" in ps and "Up " in ps and cid[:12] in ps
    started = time.monotonic()
    daemon.ok("stop", "-t", "1", "sleeper")        # PID 1 ignores SIGTERM: SIGKILL after 1 s
    assert time.monotonic() - started >= 1.0
    state = daemon.inspect("sleeper")["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 137, False)
    assert "Exited (137)" in daemon.ok("ps", "-a") and "sleeper" not in daemon.ok("ps")


def test_restart_on_failure_exact_count(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 5")
    assert daemon.ok("wait", "flaky").strip() == "5"
    info = daemon.inspect("flaky")
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 5
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}


def test_names_rename_rm_and_conflicts(daemon: Daemon) -> None:
    daemon.ok("create", "--name", "one", "busybox", "true")
    out = daemon.cli("create", "--name", "one", "busybox", "true")
    assert out.returncode == 125 and 'name "/one" is already in use' in out.stderr
    daemon.ok("rename", "one", "two")
    assert daemon.inspect("two")["Name"] == "/two"
    daemon.ok("start", "two")
    daemon.ok("wait", "two")
    daemon.ok("rm", "two")
    assert daemon.cli("inspect", "two").returncode != 0
    out = daemon.cli("create", "--name", "x", "busybox", "true")      # moby wants 2 characters or more
    assert out.returncode == 125 and "invalid container name (x)" in out.stderr
    out = daemon.cli("run", "--rm", "nosuchimage:1", "true")
    assert out.returncode == 125 and "no such image" in out.stderr


def test_pause_unpause_kill(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "pz", "busybox", "sleep", "100")
    daemon.ok("pause", "pz")
    assert daemon.inspect("pz")["State"]["Paused"] is True
    assert "(Paused)" in daemon.ok("ps")
    daemon.ok("unpause", "pz")
    assert daemon.inspect("pz")["State"]["Status"] == "running"
    daemon.ok("kill", "pz")
    assert daemon.ok("wait", "pz").strip() == "137"


def test_limits_and_oom(daemon: Daemon) -> None:
    out = daemon.cli("run", "--name", "hog", "-m", "32m", "--memory-swap", "32m", "busybox",
                     "sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived')
    assert out.returncode == 137 and "survived" not in out.stdout
    assert daemon.inspect("hog")["State"]["OOMKilled"] is True


def test_events_journal_and_resume(daemon: Daemon) -> None:
    daemon.ok("run", "--name", "ev", "busybox", "true")
    events = _events(daemon, "--filter", "container=ev")
    assert [e["action"] for e in events] == ["create", "start", "die"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert events[-1]["attributes"]["exitCode"] == "0" and events[-1]["attributes"]["name"] == "ev"


def _events(daemon: Daemon, *filters: str) -> list[dict]:
    """Every event so far: a stream from seq 0, read until it stays quiet."""
    proc = subprocess.Popen([*corral_command(), "-H", f"unix://{daemon.socket}", "events", "--since", "0",
                             "--format", "json", *filters], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=TIMEOUT)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_sigterm_stops_containers_and_restart_brings_always_back(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "100")
    daemon.ok("run", "-d", "--name", "plain", "busybox", "sleep", "100")
    pid = daemon.inspect("keeper")["State"]["Pid"]
    assert daemon.stop() == 0
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    daemon.start()
    wait_for(lambda: daemon.inspect("keeper")["State"]["Running"], timeout=10, what="keeper to come back")
    assert daemon.inspect("plain")["State"]["Running"] is False
