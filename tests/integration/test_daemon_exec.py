"""`corral exec` on the real kernel: namespaces, cgroup, capabilities, user/cwd/env, exit codes, events, --init."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import wait_for

pytestmark = pytest.mark.root


def _status_line(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key + ":"))


def test_exec_joins_the_containers_namespaces_cgroup_and_capabilities(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "ex", "--hostname", "boxy", "busybox", "sleep", "1000")
    init = daemon.inspect("ex")["State"]["Pid"]
    assert daemon.ok("exec", "ex", "hostname").strip() == "boxy"
    # PID namespace: ps shows the container's PIDs, the init as 1.
    ps = daemon.ok("exec", "ex", "ps", "-o", "pid,args")
    assert re.search(r"^\s*1\s+sleep 1000$", ps, re.MULTILINE), ps
    assert not any(int(line.split()[0]) > 1000 for line in ps.splitlines()[1:]), ps
    # Cgroup: what /proc/self/cgroup says inside equals what the init's says (same namespace, same cgroup).
    assert daemon.ok("exec", "ex", "cat", "/proc/self/cgroup") == daemon.ok("exec", "ex", "cat", "/proc/1/cgroup")
    host_view = {line.split(":", 1)[1] for line in Path(f"/proc/{init}/cgroup").read_text().splitlines()}
    mine = daemon.ok("exec", "-d", "ex", "sleep", "999")
    assert mine == ""
    pid = wait_for(lambda: next((p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == b"sleep\x00999\x00"),
                                None), timeout=10, what="the detached exec")
    assert {line.split(":", 1)[1] for line in (pid / "cgroup").read_text().splitlines()} == host_view
    # Capabilities: the init's (CapEff, CapBnd), and no more.
    init_status = Path(f"/proc/{init}/status").read_text()
    inside = daemon.ok("exec", "ex", "cat", "/proc/self/status")
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert _status_line(inside, key) == _status_line(init_status, key), key
    assert _status_line(inside, "CapEff") != _status_line(Path("/proc/self/status").read_text(), "CapEff")


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_exec_user_workdir_env_and_exit_codes(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("run", "-d", "--name", "ex2", "-e", "FROM_RUN=1", "-e", "SHARED=run", "busybox", "sleep", "1000")
    assert daemon.ok("exec", "ex2", "id").strip() == "uid=0 gid=0"
    # Names are looked up in the container's own /etc/passwd, as it is now.
    daemon.ok("exec", "ex2", "sh", "-c", "echo app:x:1500:1600::/home/app:/bin/sh >> /etc/passwd; "
                                         "echo app:x:1600: >> /etc/group; echo ops:x:1700:app >> /etc/group")
    assert daemon.ok("exec", "-u", "app", "ex2", "id").strip() == "uid=1500(app) gid=1600(app) groups=1700(ops)"
    assert "HOME=/home/app" in daemon.ok("exec", "-u", "app", "ex2", "env").splitlines()
    assert daemon.ok("exec", "-u", "1234:5678", "ex2", "id").strip().startswith("uid=1234 gid=5678")
    out = daemon.cli("exec", "-u", "nosuchuser", "ex2", "id")
    assert out.returncode != 0 and "unable to find user nosuchuser" in out.stderr
    assert daemon.ok("exec", "-w", "/tmp", "ex2", "pwd").strip() == "/tmp"
    assert daemon.ok("exec", "ex2", "pwd").strip() == "/"
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=2\n")
    env = daemon.ok("exec", "-e", "SHARED=exec", "--env-file", str(env_file), "ex2", "env").splitlines()
    assert {"FROM_RUN=1", "SHARED=exec", "FROM_FILE=2"} <= set(env) and "SHARED=run" not in env
    # stdout and stderr come back apart; the exit status is the command's.
    out = daemon.cli("exec", "ex2", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert daemon.cli("exec", "ex2", "true").returncode == 0
    out = daemon.cli("exec", "ex2", "no-such-command")
    assert out.returncode == 127 and "executable file not found" in out.stderr
    out = daemon.cli("exec", "ex2", "/etc/passwd")
    assert out.returncode == 126 and "permission denied" in out.stderr
    out = daemon.cli("exec", "-w", "/nope", "ex2", "true")
    assert out.returncode == 126 and "/nope" in out.stderr
    # A lot of output arrives whole.
    assert len(daemon.ok("exec", "ex2", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x")) == 300000
    assert daemon.inspect("ex2")["State"]["Running"]                    # the container is unaffected


def test_exec_in_a_stopped_or_paused_container_is_refused(daemon: Daemon) -> None:
    daemon.ok("create", "--name", "never", "busybox", "sleep", "1000")
    out = daemon.cli("exec", "never", "true")
    assert out.returncode == 125 and "is not running" in out.stderr
    daemon.ok("run", "-d", "--name", "frozen", "busybox", "sleep", "1000")
    daemon.ok("pause", "frozen")
    out = daemon.cli("exec", "frozen", "true")
    assert out.returncode == 125 and "is paused, unpause the container before exec" in out.stderr
    assert daemon.inspect("frozen")["State"]["Status"] == "paused"
    daemon.ok("unpause", "frozen")
    assert daemon.ok("exec", "frozen", "echo", "thawed").strip() == "thawed"
    out = daemon.cli("exec", "no-such-container", "true")
    assert out.returncode == 125 and "no such container" in out.stderr


def test_exec_events(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "ev", "busybox", "sleep", "1000")
    assert daemon.cli("exec", "ev", "sh", "-c", "exit 4").returncode == 4
    events = [e for e in daemon.events("--filter", "container=ev") if e["action"].startswith("exec_")]
    actions = [e["action"] for e in events]
    assert actions == ["exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die"], actions
    assert events[2]["attributes"]["exitCode"] == "4"
    assert len({e["attributes"]["execID"] for e in events}) == 1
    assert events[0]["attributes"]["name"] == "ev"


def test_init_reaps_zombies(daemon: Daemon) -> None:
    # The init forks a child that forks a grandchild and exits at once: the grandchild
    # is orphaned to PID 1, which (being `sleep`) never reaps it once it exits.
    leaver = "sh -c 'sleep 0.2 &' ; exec sleep 1000"
    for name, flags in (("plain", ()), ("tini", ("--init",))):
        daemon.ok("run", "-d", "--name", name, *flags, "busybox", "sh", "-c", leaver)
    assert daemon.ok("exec", "tini", "cat", "/proc/1/cmdline").split("\0")[:2] == ["/sbin/docker-init", "--"]

    def zombies(name: str) -> int:
        return daemon.ok("exec", name, "ps", "-o", "stat").split().count("Z")
    wait_for(lambda: zombies("plain") >= 1, timeout=10, what="a zombie without --init")
    wait_for(lambda: "sleep 0.2" not in [a.strip() for a in daemon.ok("exec", "tini", "ps", "-o", "args").splitlines()],
             timeout=10,
             what="the grandchild to exit under --init")
    assert zombies("tini") == 0
    out = daemon.cli("exec", "tini", "sh", "-c", "echo x > /sbin/docker-init")
    assert out.returncode != 0                                    # bound read-only
