"""--live-restore on the real kernel: containers outlive the daemon (stopped or SIGKILLed), keep
logging while it is down, and are re-adopted by the next one, which reports how those that
ended meanwhile ended; their policies apply as for any exit."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from ._daemon import Daemon
from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root

COUNTER = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def counted(d: Daemon, ref: str) -> list[int]:
    return [int(line.split()[1]) for line in d.ok("logs", ref).splitlines() if line.startswith("line ")]


@pytest.fixture(name="live")
def live_fixture(tmp_path: Path, cgroup_parent: str):
    d = Daemon(tmp_path, cgroup_parent, "--live-restore")
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        yield d
    finally:
        if d.process is None:          # a test left it down: its containers still run
            d.start()
        d.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_containers_run_and_log_while_the_daemon_is_down(live: Daemon, how: int) -> None:
    live.ok("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTER)
    wait_for(lambda: len(counted(live, "counter")) > 10, timeout=20, what="output")
    pid = live.inspect("counter")["State"]["Pid"]

    code = live.stop(how)
    assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    assert alive(pid)
    log_file = next((live.data_root / "containers").glob("*/container-json.log"))
    down = len(log_file.read_bytes().splitlines())
    # Nobody but the keeper reads its output now, and it still goes to the log.
    wait_for(lambda: len(log_file.read_bytes().splitlines()) > down + 20, timeout=20,
             what="the keeper to log while the daemon is down")
    assert alive(pid)

    live.start()
    state = live.inspect("counter")["State"]
    assert state["Running"] is True and state["Pid"] == pid, state
    mark = len(counted(live, "counter"))
    wait_for(lambda: len(counted(live, "counter")) > mark + 20, timeout=20, what="output after the restart")
    numbers = counted(live, "counter")
    if how == signal.SIGTERM:
        # A daemon that leaves in order hands over between two reads: not a line lost or doubled.
        assert numbers == list(range(len(numbers)))
    else:
        # SIGKILL may take what the daemon had read but not written yet; never out of order.
        assert numbers == sorted(set(numbers)) and numbers[0] == 0

    assert live.ok("exec", "counter", "echo", "in").strip() == "in"      # its namespaces, re-joined
    live.ok("stop", "-t", "1", "counter")
    state = live.inspect("counter")["State"]
    assert state["Running"] is False and state["ExitCode"] == 137 and not alive(pid)
    dies = [e for e in live.events("--filter", "event=die") if e["attributes"]["name"] == "counter"]
    assert [e["attributes"]["exitCode"] for e in dies] == ["137"]


def test_an_exit_while_the_daemon_is_down_is_reported_after(live: Daemon, tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.mkdir()
    wait = "while [ ! -e /t/go ]; do sleep 0.02; done; echo bye; exit"
    live.ok("run", "-d", "--name", "three", "-v", f"{trigger}:/t", "busybox", "sh", "-c", f"{wait} 3")
    live.ok("run", "-d", "--name", "retry", "--restart", "on-failure:1", "-v", f"{trigger}:/t",
            "busybox", "sh", "-c", f"{wait} 4")
    pids = {name: live.inspect(name)["State"]["Pid"] for name in ("three", "retry")}

    assert live.stop(signal.SIGKILL) == -signal.SIGKILL
    (trigger / "go").touch()
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=20, what="both to exit")

    live.start()
    # Reaped by the host's init meanwhile: the kept pidfd tells how they ended.
    three = wait_for(lambda: (s := live.inspect("three")["State"])["Status"] == "exited" and s, timeout=90,
                     what="the exit status of 'three'")
    assert three["ExitCode"] == 3 and three["Error"] == "", three
    assert live.ok("logs", "three") == "bye\n"             # written by the keeper while no daemon ran
    # on-failure:1: the exit (4) made while the daemon was down counts, and is retried once.
    retry = wait_for(lambda: (s := live.inspect("retry"))["RestartCount"] == 1 and s["State"]["Status"] == "exited"
                     and s, timeout=90, what="'retry' to be retried once")
    assert retry["State"]["ExitCode"] == 4
    events = [(e["action"], e["attributes"].get("exitCode")) for e in live.events()
              if e["attributes"].get("name") == "three"]
    assert events[-1] == ("die", "3"), events


def test_terminal_stdin_and_pause_survive_a_restart(live: Daemon) -> None:
    live.ok("run", "-dit", "--name", "shell", "busybox", "sh")
    live.ok("run", "-di", "--name", "cat", "busybox", "cat")
    live.ok("run", "-d", "--name", "paused", "busybox", "sleep", "1000")
    live.ok("pause", "paused")
    pids = {name: live.inspect(name)["State"]["Pid"] for name in ("shell", "cat", "paused")}

    shell_freezer = Path(f"/sys/fs/cgroup/freezer/{live.cgroup_parent}/{live.inspect('shell')['Id']}/freezer.state")
    assert live.stop() == 0
    # Frozen while no daemon ran (by hand, as an operator might): the freezer is believed, not the record.
    shell_freezer.write_text("FROZEN")
    live.start()
    # A closed pty master would have hung the shell up, a closed stdin ended cat.
    for name, pid in pids.items():
        state = live.inspect(name)["State"]
        assert state["Pid"] == pid and alive(pid), (name, state)
    assert live.inspect("paused")["State"]["Status"] == "paused"
    live.ok("unpause", "paused")
    assert live.inspect("paused")["State"]["Status"] == "running"
    assert live.inspect("shell")["State"]["Status"] == "paused"
    live.ok("unpause", "shell")

    # stdin still reaches cat: what an attached client types comes back in its log.
    attach = subprocess.Popen([*corral_command(), "-H", f"unix://{live.socket}", "attach", "--sig-proxy=false",
                               "cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        attach.stdin.write(b"typed after the restart\n")
        attach.stdin.flush()
        wait_for(lambda: "typed after the restart" in live.ok("logs", "cat"), timeout=20, what="cat's echo")
    finally:
        attach.kill()
        attach.wait()
        attach.stdin.close()


def test_without_live_restore_a_stop_stops_and_the_keeper_leaves(tmp_path: Path, cgroup_parent: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        d.ok("run", "-d", "--name", "sl", "--stop-timeout", "1", "busybox", "sleep", "1000")
        pid = d.inspect("sl")["State"]["Pid"]
        assert d.keeper_pid() is not None
        assert d.stop() == 0
        assert not alive(pid)
        wait_for(lambda: d.keeper_pid() is None, timeout=20, what="the keeper to exit")
        d.start()
        state = d.inspect("sl")["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 137, state      # sleep ignores SIGTERM as PID 1
    finally:
        d.close()


def test_the_config_file_turns_it_on(tmp_path: Path, cgroup_parent: str) -> None:
    config = tmp_path / "corral.toml"
    config.write_text("live-restore = true\n")
    d = Daemon(tmp_path, cgroup_parent, "--config-file", str(config))
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        d.ok("run", "-d", "--name", "sl", "--stop-timeout", "1", "busybox", "sleep", "1000")
        pid = d.inspect("sl")["State"]["Pid"]
        assert d.stop() == 0 and alive(pid)
        d.start()
        assert d.inspect("sl")["State"]["Pid"] == pid
        assert json.loads(d.ok("info", "--format", "json"))["LiveRestoreEnabled"] is True
        # SIGHUP re-reads it: turned off, the next stop stops the container.
        config.write_text("live-restore = false\n")
        d.process.send_signal(signal.SIGHUP)
        wait_for(lambda: json.loads(d.ok("info", "--format", "json"))["LiveRestoreEnabled"] is False, timeout=20,
                 what="the reload")
        assert d.stop() == 0 and not alive(pid)
        d.start()
        assert d.inspect("sl")["State"]["Status"] == "exited"
    finally:
        d.close()
