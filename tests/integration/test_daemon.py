"""`corral daemon` and the `corral` CLI on the real kernel: each test has its own daemon,
data root, exec root and cgroup parent, removed whatever happens."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import wait_for

pytestmark = pytest.mark.root


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


def test_a_root_busy_on_the_host_does_not_stop_the_daemon(daemon: Daemon) -> None:
    """An operator's shell in a container's root keeps it busy when the container stops:
    the root is detached instead (it used to end the daemon), and the container starts again."""
    cid = daemon.ok("run", "-d", "busybox", "sleep", "100").strip()
    rootfs = daemon.data_root / "containers" / cid / "rootfs"
    shell = subprocess.Popen(["sleep", "60"], cwd=rootfs)
    try:
        daemon.ok("stop", "-t", "0", cid)
        assert daemon.inspect(cid)["State"]["Status"] == "exited"
        assert not _mounted(rootfs)                        # detached: out of the tree
        daemon.ok("start", cid)
        assert daemon.inspect(cid)["State"]["Running"] and _mounted(rootfs)
        daemon.ok("rm", "-f", cid)
        assert daemon.ok("ps", "-aq") == "" and shell.poll() is None
    finally:
        shell.kill()
        shell.wait()


def _mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


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
    events = daemon.events("--filter", "container=ev")
    assert [e["action"] for e in events] == ["create", "start", "die"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert events[-1]["attributes"]["exitCode"] == "0" and events[-1]["attributes"]["name"] == "ev"


def test_sigterm_stops_containers_and_restart_brings_always_back(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "100")
    daemon.ok("run", "-d", "--name", "plain", "busybox", "sleep", "100")
    pid = daemon.inspect("keeper")["State"]["Pid"]
    assert daemon.stop() == 0
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    daemon.start()
    wait_for(lambda: daemon.inspect("keeper")["State"]["Running"], timeout=10, what="keeper to come back")
    assert daemon.inspect("plain")["State"]["Running"] is False


def _open_files_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no 'Max open files' line")


def test_daemon_raises_its_open_files_limit(tmp_path: Path, cgroup_parent: str) -> None:
    # Started with the usual soft limit of 1024 (a login shell's), it takes the hard limit:
    # each running container holds several of its descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.skip(f"the hard open-files limit is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    d = Daemon(tmp_path, cgroup_parent)
    try:
        d.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert _open_files_limits(d.process.pid) == (str(hard), str(hard))
    finally:
        d.close()
