"""One trio task per container: start it, wait on its pidfd, restart it by policy, stop it.

Rules:

1. The task owns the container's process; the Engine owns the record and
   reads it. Stopping a container means cancelling its task: the task then
   sends the stop signal, waits the grace period, sends SIGKILL, records the
   exit and publishes ``die`` and ``stop`` inside a shielded scope.
2. Every state change publishes one event before the next change happens.
3. A start that fails the first time fails ``nursery.start()`` (the caller
   sees the error); once the container has run, a failed restart is an exit
   like any other (127/126) and the restart policy decides.
4. Restart decisions come from ``restart.decide``; the task only sleeps the
   delay. A storm in one container sleeps in its own task, never in others.
5. Each run's stdout and stderr go through a ``logs.Capture`` (pipes and a
   copier thread); the run's exit is recorded only once the copier reached
   EOF, so everything the container wrote is in its log before ``die``.
   With ``-t`` they are one pty instead, with ``-i`` stdin is a pipe fed by
   attached clients (``attach.ContainerStreams``, set up per run).
6. Each run is handed to the keeper (``Keep``; keeper.py) once it exec'd and
   before ``start`` is journaled, and taken back after its exit is recorded:
   whenever a record says "running", the keeper holds that run's pidfd and
   output. A run can outlive its task: a daemon that leaves with
   --live-restore sets ``detaching`` and cancels; the task then stops
   copying output (the keeper goes on) and records nothing. The next daemon
   re-adopts it (``Adopted``): no spawn, no ``start`` event, the same wait.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from protocols.jsonlog import LogConfig
from runtime.cgroups import Resources
from runtime.errors import SpawnError
from runtime.spawn import Child, ExitStatus

from ._crashpoints import crash_point, fail_point
from ._host import Host
from .attach import ContainerStreams, streams_of
from .logs import DRAIN_GRACE_S, Capture
from .restart import JITTER, RestartPolicy, RestartState, decide, record_start

# (action, container, extra attributes) -> journaled and fanned out by the caller
Publish = Callable[[str, "Supervised", dict], Awaitable[None]]


class Keep(Protocol):
    """Where each run's pidfd and output are held across daemon restarts (rule 6; keeper.py)."""

    async def hold(self, c: Supervised, child: Child, fds: dict[str, int]) -> None:
        """Hand over ``fds`` (copies by name: "stdout", "stderr" or "tty", "stdin"; closed here)
        with the child's pidfd. Never raises: a run the keeper cannot hold still runs."""

    async def release(self, c: Supervised) -> None: ...


@dataclass
class Adopted:
    """A run an earlier daemon started and left running (--live-restore), re-adopted."""

    child: Child                        # adopted=True: its exit status comes from the pidfd
    capture: Capture | None


@dataclass
class Supervised:
    """A container as its task sees it: what to run, and how it is doing."""

    id: str
    name: str
    config: dict                       # the OCI runtime config for the init
    bundle: str
    cgroup: str
    resources: Resources = field(default_factory=Resources)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 10.0
    log_path: str | None = None        # the json-file log; None: output is discarded (driver "none")
    log_config: LogConfig = field(default_factory=LogConfig)
    # Live state, written by the task only.
    status: str = "created"            # created, running, restarting, exited
    pid: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    started_at_ns: int = 0
    finished_at_ns: int = 0
    stopped_by_user: bool = False      # set by the Engine before it cancels the task
    detaching: bool = False            # set by the Engine before it cancels: leave it running (rule 6)
    parked_reason: str = ""
    error: str = ""
    oom_kills_seen: int = 0
    child: Child | None = field(default=None, repr=False, compare=False)   # the running init, for kill
    # Attached clients, stdin and terminal across runs (attach.py); made on first use.
    streams: ContainerStreams | None = field(default=None, repr=False, compare=False)


async def supervise(c: Supervised, host: Host, publish: Publish, *,
                    task_status=trio.TASK_STATUS_IGNORED, rng: random.Random | None = None,
                    keep: Keep | None = None, adopted: Adopted | None = None) -> None:
    """Run ``c`` until its policy says stop, or until cancelled (a user's stop).

    ``task_status.started(pid)`` is called once the first init has exec'd
    (``adopted``: at once; that run is the first).

    Raises:
        SpawnError: the first start failed (through ``nursery.start``).
    """
    rng = rng or random.Random()
    # Restarts already made count against on-failure:N: a user's start sets
    # restart_count to 0 (moby), a daemon restart that resumes the policy keeps it.
    state = RestartState(restart_count=c.restart_count)
    first = True
    while True:
        state = record_start(state, trio.current_time())
        began = trio.current_time()
        try:
            status = await _run_once(c, host, publish, first=first, task_status=task_status, keep=keep,
                                     adopted=adopted)
        except SpawnError as exc:
            if first:
                c.status, c.error, c.exit_code = "exited", str(exc), exc.exit_code
                raise
            c.error = str(exc)
            status = ExitStatus(code=exc.exit_code)
        first, adopted = False, None
        await _record_exit(c, host, publish, status)
        decision = decide(c.policy, state, exit_code=status.exit_code, ran_s=trio.current_time() - began,
                          now=trio.current_time(), stopped_by_user=c.stopped_by_user, jitter=rng.uniform(*JITTER))
        if not decision.restart:
            c.status = "exited"
            if decision.reason.startswith("parked"):
                c.parked_reason = decision.reason
                await publish("parked", c, {"reason": decision.reason})
            return
        state = decision.state
        c.status = "restarting"
        c.restart_count += 1
        await publish("restart", c, {"restartCount": str(c.restart_count), "cause": _cause(c, status),
                                     "delay": f"{decision.delay_s:.3f}"})
        crash_point("restart:backoff")
        try:
            await trio.sleep(decision.delay_s)
        except trio.Cancelled:
            c.status = "exited"
            raise


async def _run_once(c: Supervised, host: Host, publish: Publish, *, first: bool, task_status,
                    keep: Keep | None = None, adopted: Adopted | None = None) -> ExitStatus:
    """Start one init (or take the adopted one) and wait for it; on cancellation stop it
    politely, then firmly, or leave it running when the daemon detaches (rule 6)."""
    streams = streams_of(c)
    if adopted is not None:
        child, capture = adopted.child, adopted.capture
    else:
        if first:
            await host.prepare_cgroup(c.cgroup, c.resources)
        try:
            capture, stdio, theirs = streams.open_run(c.log_path, c.log_config)
        except OSError as exc:                 # a start that fails like any other (rule 3)
            raise SpawnError(f"cannot set up the container's output (log {c.log_path}, "
                             f"terminal: {streams.tty}): {exc.strerror or exc}") from exc
        try:
            child = await _spawn(c, host, capture, stdio, theirs)
        except BaseException:
            with trio.CancelScope(shield=True):
                if capture is not None:
                    await capture.wait_drained()
                streams.run_ended()
            raise
    c.child = child
    held = adopted is not None             # the keeper holds an adopted run already
    try:
        if adopted is None:
            try:
                await host.wait_exec(child)
            except SpawnError as exc:          # execve failed: the init already exited
                c.error = str(exc)
                with trio.CancelScope(shield=True):
                    await _drain(capture)
                return ExitStatus(code=exc.exit_code)
            if keep is not None:
                await keep.hold(c, child, _keepable(capture, streams))
                held = True
            crash_point("start:before-event" if first else "restart:before-event")
            c.status, c.pid, c.started_at_ns, c.error = "running", child.pid, time.time_ns(), ""
            await publish("start", c, {})
        else:
            c.status, c.pid = "running", child.pid
        if first:
            if adopted is None:
                crash_point("start:after-event")
            task_status.started(child.pid)
        status = await host.wait_exit(child)
        with trio.CancelScope(shield=True):   # it exited: no stop to do, whatever happens now
            await _drain(capture)              # everything it wrote is on disk before "die"
        return status
    except BaseException:
        with trio.CancelScope(shield=True):
            if c.detaching:
                # The daemon leaves it running: stop copying (the keeper goes on from the pipe).
                held = False
                if capture is not None:
                    capture.stop()
                    await capture.wait_drained()
                raise
            status = await _stop(c, host, child)
            await _drain(capture)
            await _record_exit(c, host, publish, status)
            c.status = "exited"
            await publish("stop", c, {})
        raise
    finally:
        c.child = None
        child.close()
        streams.run_ended()                # after the drain: attached clients have all of it (attach.py rule 3)
        if capture is not None:
            for fd in capture.take_keep_fds().values():
                os.close(fd)
        if held and keep is not None:
            with trio.CancelScope(shield=True):
                await keep.release(c)


def _keepable(capture: Capture | None, streams) -> dict[str, int]:
    """Copies of the run's output read ends and stdin for the keeper (``Keep.hold`` closes them)."""
    fds = capture.take_keep_fds() if capture is not None else {}
    stdin = streams.input.keepable() if streams.input is not None else None
    if stdin is not None:
        fds["stdin"] = stdin
    return fds


async def _spawn(c: Supervised, host: Host, capture: Capture | None, stdio: tuple[int, int, int],
                 theirs: list[int]) -> Child:
    # stdio: the capture's pipes or a pty slave (attach.ContainerStreams.open_run), or /dev/null.
    try:
        return await host.spawn(c.config, bundle=c.bundle, cgroup=c.cgroup, stdio=stdio)
    finally:
        for fd in theirs:
            os.close(fd)
        if capture is not None:
            capture.close_write_ends()     # the init holds them now: EOF is when it (and its kin) are gone


async def _drain(capture: Capture | None) -> None:
    """Wait for the copier to reach EOF (bounded: something may still hold a write end)."""
    if capture is not None:
        await capture.wait_drained(grace_s=DRAIN_GRACE_S)


async def _stop(c: Supervised, host: Host, child: Child) -> ExitStatus:
    """The stop signal, ``stop_timeout_s`` to comply, then SIGKILL (docker stop)."""
    host.send_signal(child, c.stop_signal)
    with trio.move_on_after(c.stop_timeout_s):
        return await host.wait_exit(child)
    host.send_signal(child, signal.SIGKILL)
    return await host.wait_exit(child)


async def _record_exit(c: Supervised, host: Host, publish: Publish, status: ExitStatus) -> None:
    kills = await host.oom_kills(c.cgroup)
    c.oom_killed = kills > c.oom_kills_seen
    c.oom_kills_seen = kills
    c.exit_code, c.finished_at_ns, c.pid = status.exit_code, time.time_ns(), 0
    fail_point("exit:before-event")
    if c.oom_killed:
        await publish("oom", c, {})
    await publish("die", c, {"exitCode": str(status.exit_code), "oomKilled": str(c.oom_killed).lower()})


def _cause(c: Supervised, status: ExitStatus) -> str:
    if c.oom_killed:
        return "oom"
    if c.error:
        return f"start failed: {c.error}"
    return str(status)
