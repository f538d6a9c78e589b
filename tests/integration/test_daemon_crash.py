"""A daemon SIGKILLed while containers run: after a restart the state is consistent,
no container runs twice, policies apply, and the event journal resumes without a gap."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from supervisor._crashpoints import FAIL_ENV

from .conftest import wait_for
from ._daemon import Daemon

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_then_restart(tmp_path: Path, cgroup_parent: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        d.ok("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "1000")
        d.ok("run", "-d", "--name", "once", "busybox", "sleep", "1000")
        d.ok("run", "--name", "done", "busybox", "true")
        old_always, old_once = d.inspect("always")["State"]["Pid"], d.inspect("once")["State"]["Pid"]
        before = d.events()
        last_seq = before[-1]["seq"]

        assert d.stop(signal.SIGKILL) == -signal.SIGKILL      # no clean-up of any kind
        assert alive(old_always) and alive(old_once)          # the inits outlive a killed daemon

        d.start()
        wait_for(lambda: d.inspect("always")["State"]["Running"], timeout=20, what="always to run again")
        # The leftovers of the dead daemon were killed, not adopted twice.
        wait_for(lambda: not alive(old_always) and not alive(old_once), timeout=10, what="old inits gone")
        always = d.inspect("always")
        assert always["State"]["Pid"] != old_always
        once = d.inspect("once")["State"]
        # The keeper held its pidfd: how it ended is known (the restore killed it).
        assert once["Running"] is False and once["ExitCode"] == 137, once
        assert "without --live-restore" in once["Error"] and "SIGKILL" in once["Error"]
        assert d.inspect("done")["State"]["ExitCode"] == 0             # recorded before the kill, kept
        assert sorted(row["Names"][0] for row in d.json_lines("ps")) == ["/always"]

        # Zero loss: the journal continues after the last seq seen before the kill.
        after = d.events()
        seqs = [e["seq"] for e in after]
        assert seqs == list(range(1, len(seqs) + 1))                  # contiguous, from 1
        assert [e["seq"] for e in after[:len(before)]] == [e["seq"] for e in before]
        assert any(e["seq"] > last_seq and e["action"] == "start" and e["attributes"]["name"] == "always"
                   for e in after)
    finally:
        d.close()


def test_one_containers_failing_supervision_leaves_the_daemon_and_the_others(tmp_path: Path,
                                                                             cgroup_parent: str) -> None:
    """A bug, or a journal on a full disk, in one container's task after it started (here an
    injected failure before its ``die`` is journaled) ends that container's supervision only."""
    d = Daemon(tmp_path, cgroup_parent)
    d.start(env={FAIL_ENV: "exit:before-event"})
    try:
        d.ok("image", "bootstrap", "busybox")
        d.ok("run", "-d", "--name", "other", "busybox", "sleep", "1000")
        other = d.inspect("other")["State"]["Pid"]
        d.ok("run", "-d", "--name", "failing", "busybox", "true")
        wait_for(lambda: d.inspect("failing")["State"]["Status"] == "exited", timeout=20, what="failing to stop")
        state = d.inspect("failing")["State"]
        assert "supervision failed: injected failure at exit:before-event" in state["Error"], state
        assert "its supervision failed" in d.log.read_text()
        assert d.process.poll() is None and alive(other) and d.inspect("other")["State"]["Running"]
        assert d.cli("wait", "failing").returncode == 0           # done is set: nothing waits forever
        d.ok("rm", "failing")
        d.ok("stop", "-t", "1", "other")                          # the daemon supervises on
        assert not alive(other)
    finally:
        d.close()
