"""The container task on the real kernel: spawner, pidfds, cgroups, restart policy, stop."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio

from runtime.cgroups import Resources
from supervisor._host import open_linux_host
from supervisor.restart import parse_restart_policy
from supervisor.task import Supervised, supervise

from .conftest import runc_spec

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


def container(rootfs: Path, tmp_path: Path, cgroup_parent: str, args: list[str], **kw) -> Supervised:
    config = runc_spec()
    config["process"].update(terminal=False, args=args)
    config["root"]["path"] = str(rootfs)
    return Supervised(id="t" * 64, name="t", config=config, bundle=str(tmp_path), cgroup=f"{cgroup_parent}/t",
                      log_path=str(tmp_path / "out.log"), **kw)


def run(c: Supervised, *, stop_after_s: float | None = None) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []

    async def publish(action, _c, attributes) -> None:
        events.append((action, attributes))

    async def main() -> None:
        with trio.fail_after(60):
            async with open_linux_host() as host:
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(supervise, c, host, publish)
                        if stop_after_s is not None:
                            await trio.sleep(stop_after_s)
                            c.stopped_by_user = True
                            nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        await host.remove_cgroup(c.cgroup)

    trio.run(main)
    return events


def test_on_failure_2_restarts_twice_then_gives_up(busybox_rootfs, tmp_path, cgroup_parent) -> None:
    c = container(busybox_rootfs, tmp_path, cgroup_parent, ["sh", "-c", "echo run; exit 4"],
                  policy=parse_restart_policy("on-failure:2"))
    events = run(c)
    assert [a for a, _ in events] == ["start", "die", "restart", "start", "die", "restart", "start", "die"]
    assert all(attrs == {"exitCode": "4", "oomKilled": "false"} for a, attrs in events if a == "die")
    assert (c.status, c.exit_code, c.restart_count) == ("exited", 4, 2)
    # stdio went where we said: the json-file log, one entry per line of output
    assert [json.loads(line)["log"] for line in (tmp_path / "out.log").read_text().splitlines()] == ["run\n"] * 3


def test_stop_sends_sigkill_when_pid_1_ignores_sigterm(busybox_rootfs, tmp_path, cgroup_parent) -> None:
    # PID 1 of a namespace ignores signals it has no handler for: SIGTERM does nothing.
    c = container(busybox_rootfs, tmp_path, cgroup_parent, ["sleep", "100"], stop_timeout_s=0.5,
                  policy=parse_restart_policy("always"))
    events = run(c, stop_after_s=0.2)
    assert [a for a, _ in events] == ["start", "die", "stop"]
    assert c.exit_code == 128 + signal.SIGKILL and c.restart_count == 0


def test_stop_signal_handled_exits_cleanly(busybox_rootfs, tmp_path, cgroup_parent) -> None:
    c = container(busybox_rootfs, tmp_path, cgroup_parent,
                  ["sh", "-c", "trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"],
                  stop_timeout_s=10, policy=parse_restart_policy("always"))
    events = run(c, stop_after_s=0.3)
    assert [a for a, _ in events] == ["start", "die", "stop"]
    assert c.exit_code == 0 and json.loads((tmp_path / "out.log").read_text())["log"] == "bye\n"


def test_oom_kill_is_reported(busybox_rootfs, tmp_path, cgroup_parent) -> None:
    c = container(busybox_rootfs, tmp_path, cgroup_parent,
                  ["sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'],
                  resources=Resources(memory_max_bytes=32 << 20, swap_max_bytes=0))
    events = run(c)
    assert [a for a, _ in events] == ["start", "oom", "die"]
    assert events[-1][1] == {"exitCode": "137", "oomKilled": "true"}
    assert c.oom_killed


def test_missing_binary_fails_the_start(busybox_rootfs, tmp_path, cgroup_parent) -> None:
    from runtime.errors import SpawnError

    c = container(busybox_rootfs, tmp_path, cgroup_parent, ["nope"], policy=parse_restart_policy("always"))
    with pytest.raises(SpawnError, match="executable file not found"):
        try:
            run(c)
        except BaseExceptionGroup as group:          # the nursery wraps it
            raise group.exceptions[0] from None
    assert c.exit_code == 127
