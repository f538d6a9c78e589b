"""The container task against a scripted fake host, on trio's autojump clock (no wall time)."""

from __future__ import annotations

import random
import signal
from collections import deque
from functools import partial

import pytest
import trio

from runtime.errors import SpawnError
from runtime.spawn import ExitStatus
from supervisor.restart import RestartPolicy, parse_restart_policy
from supervisor.task import Supervised, supervise

pytestmark = pytest.mark.anyio


class FakeChild:
    def __init__(self, pid: int, run_s: float, code: int, ignores: set[int]) -> None:
        self.pid, self.run_s, self.code, self.ignores = pid, run_s, code, ignores
        self.killed_by: int | None = None
        self.exited = trio.Event()
        self.pidfd = -1

    def close(self) -> None:
        pass


class FakeHost:
    """Each spawn pops a scripted run: (seconds it lasts, exit code) or a SpawnError."""

    def __init__(self, runs, *, ignores=(), oom_kills=()) -> None:
        self.runs = deque(runs)
        self.ignores = set(ignores)
        self.oom = deque(oom_kills)
        self.kills = 0
        self.calls: list[tuple] = []
        self.spawn_times: list[float] = []

    async def prepare_cgroup(self, path, resources) -> None:
        self.calls.append(("prepare_cgroup", path))

    async def spawn(self, config, *, bundle, cgroup, stdio) -> FakeChild:
        self.spawn_times.append(trio.current_time())
        run = self.runs.popleft()
        if isinstance(run, Exception):
            raise run
        return FakeChild(100 + len(self.spawn_times), *run, self.ignores)

    async def wait_exec(self, child) -> None:
        await trio.sleep(0)

    async def wait_exit(self, child) -> ExitStatus:
        with trio.move_on_after(child.run_s):
            await child.exited.wait()
        if child.killed_by is not None:
            return ExitStatus(signal=child.killed_by)
        child.exited.set()
        return ExitStatus(code=child.code)

    def send_signal(self, child, signum) -> None:
        self.calls.append(("signal", signum))
        if signum not in child.ignores and not child.exited.is_set():
            child.killed_by = signum
            child.exited.set()

    async def oom_kills(self, cgroup) -> int:
        if self.oom:
            self.kills = self.oom.popleft()
        return self.kills

    async def remove_cgroup(self, cgroup) -> None:
        self.calls.append(("remove_cgroup", cgroup))


def container(policy: str = "no", **kw) -> Supervised:
    return Supervised(id="c" * 64, name="web", config={}, bundle="/b", cgroup="corral/web",
                      policy=parse_restart_policy(policy), **kw)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    async def __call__(self, action, c, attributes) -> None:
        self.seen.append((action, attributes))

    def actions(self) -> list[str]:
        return [a for a, _ in self.seen]


async def test_no_policy_runs_once_and_reports_the_exit() -> None:
    host, events, c = FakeHost([(5.0, 3)]), Events(), container("no")
    async with trio.open_nursery() as nursery:
        pid = await nursery.start(supervise, c, host, events)
    assert pid == 101
    assert events.actions() == ["start", "die"]
    assert events.seen[1][1] == {"exitCode": "3", "oomKilled": "false"}
    assert (c.status, c.exit_code, c.restart_count) == ("exited", 3, 0)


async def test_on_failure_restarts_exactly_n_times_with_backoff() -> None:
    host, events, c = FakeHost([(0.5, 1)] * 4), Events(), container("on-failure:3")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, rng=random.Random(0)), c, host, events)
    assert events.actions().count("start") == 4 and events.actions().count("restart") == 3
    assert c.restart_count == 3 and c.status == "exited"
    gaps = [b - a - 0.5 for a, b in zip(host.spawn_times, host.spawn_times[1:])]
    for gap, base in zip(gaps, (0.1, 0.2, 0.4)):      # 100 ms doubling, with x0.8..1.2 jitter
        assert 0.8 * base <= gap <= 1.2 * base
    restart = [a for a in events.seen if a[0] == "restart"][0][1]
    assert restart["restartCount"] == "1" and restart["cause"] == "exit status 1"


async def test_always_restarts_after_success_and_a_crash_loop_is_parked() -> None:
    host, events, c = FakeHost([(0.01, 0)] * 50), Events(), container("always")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, rng=random.Random(1)), c, host, events)
    assert c.status == "exited"
    assert c.parked_reason.startswith("parked: started 10 times within 60 s")
    assert events.actions()[-1] == "parked"
    assert len(host.spawn_times) == 10


async def test_stop_is_polite_then_firm() -> None:
    host, events = FakeHost([(1000.0, 0)], ignores={signal.SIGTERM}), Events()
    c = container("always", stop_timeout_s=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, c, host, events)
        await trio.sleep(1)
        t0 = trio.current_time()
        c.stopped_by_user = True
        nursery.cancel_scope.cancel()
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert [x for x in host.calls if x[0] == "signal"] == [("signal", signal.SIGTERM), ("signal", signal.SIGKILL)]
    assert events.actions() == ["start", "die", "stop"]
    assert c.exit_code == 128 + signal.SIGKILL and c.status == "exited"


async def test_stop_signal_obeyed_needs_no_kill() -> None:
    host, events = FakeHost([(1000.0, 0)]), Events()
    c = container("always", stop_signal=signal.SIGQUIT)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, c, host, events)
        nursery.cancel_scope.cancel()
    assert [x for x in host.calls if x[0] == "signal"] == [("signal", signal.SIGQUIT)]
    assert c.exit_code == 128 + signal.SIGQUIT


async def test_first_start_failure_reaches_the_caller() -> None:
    host, events, c = FakeHost([SpawnError("exec: nope: not found", exit_code=127)]), Events(), container("always")
    async with trio.open_nursery() as nursery:
        with pytest.raises(SpawnError, match="not found"):
            await nursery.start(supervise, c, host, events)
    assert (c.status, c.exit_code) == ("exited", 127) and events.actions() == []


async def test_a_failed_restart_is_an_exit_the_policy_sees() -> None:
    runs = [(0.5, 1), SpawnError("rootfs gone", exit_code=1), (0.5, 0)]
    host, events, c = FakeHost(runs), Events(), container("on-failure")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, rng=random.Random(2)), c, host, events)
    assert events.actions() == ["start", "die", "restart", "die", "restart", "start", "die"]
    assert [a for a in events.seen if a[0] == "restart"][1][1]["cause"] == "start failed: rootfs gone"
    assert c.exit_code == 0


async def test_oom_kill_is_an_event_and_a_cause() -> None:
    host, events, c = FakeHost([(0.5, 137), (0.5, 0)], oom_kills=[1, 1]), Events(), container("on-failure")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, rng=random.Random(3)), c, host, events)
    assert events.actions()[:4] == ["start", "oom", "die", "restart"]
    assert events.seen[2][1]["oomKilled"] == "true"
    assert [a for a in events.seen if a[0] == "restart"][0][1]["cause"] == "oom"
    assert c.oom_killed is False           # the second run was not OOM-killed


async def test_a_restart_storm_never_delays_another_container() -> None:
    storm_host, calm_host = FakeHost([(0.001, 1)] * 50), FakeHost([(1000.0, 0)])
    calm_events = Events()
    calm = container("no")
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, container("always"), storm_host, Events())
        t0 = trio.current_time()
        await nursery.start(supervise, calm, calm_host, calm_events)
        assert trio.current_time() - t0 < 0.01
        calm.stopped_by_user = True
        nursery.cancel_scope.cancel()
    assert calm_events.actions()[0] == "start"


def test_policy_default_is_no() -> None:
    assert container().policy == RestartPolicy("no")
